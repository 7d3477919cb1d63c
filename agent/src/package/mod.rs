//! Packages: `.tar.gz` releases of a server. What a package may contain is decided by
//! [`corral_common::archive`], the rules the registry also checks at upload; the agent
//! checks them again while it unpacks (a package is never trusted because of where it
//! came from).
//!
//! * [`unpack`] — checked unpacking into `releases/VERSION.partial/`.
//! * [`install`] — download (resumable, sha256-verified, from the registry or peers) into
//!   the cache, unpack, switch; serving packages to peers.
//! * [`serve`] — the listener peers fetch packages from.

pub mod install;
pub mod serve;
pub mod unpack;

/// The package rules' types, from [`corral_common::archive`].
pub use corral_common::archive::{Limits, PackageError};
