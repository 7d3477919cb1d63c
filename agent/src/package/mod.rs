//! Packages: `.tar.gz` releases of a server. What a package may contain is decided by
//! [`corral_common::archive`], the rules the registry also checks at upload; the agent
//! checks them again while it unpacks (a package is never trusted because of where it
//! came from).
//!
//! * [`unpack`] — checked unpacking into `releases/VERSION.partial/`.
//! * [`install`] — download (resumable, sha256-verified) into the cache, unpack, switch.

pub mod install;
pub mod unpack;

/// The package rules' types, from [`corral_common::archive`].
pub use corral_common::archive::{Limits, PackageError};
