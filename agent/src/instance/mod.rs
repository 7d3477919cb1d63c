//! Instances: one runner task per server on this node.
//!
//! * [`runner`] — the task of one instance: its event loop, and the code that performs
//!   the machines' actions, a file per concern (see its docs).
//! * [`state`] — the lifecycle as data: states, events, actions, a pure `step`.
//! * [`install`] — the releases as data: the install under way, whether a start waits
//!   for it, a switch to the spec's release pending; a pure `step`.
//! * [`fallback`] — what starts when the spec's release is not on disk (the previous
//!   release, or wait for the install): the install machine's decision tables.
//! * [`spec`] — the spec's text fields the runner reads (restart policy, stop signal,
//!   `on_change`), each parsed in one place.
//! * [`process`] — processes: spawn, adopt, watch, signal their group.
//! * [`health`] — runs the checks and says why one fails.
//! * [`reason`] — files an event's reason under the transition it explains.
//! * [`memory`] — what a runner keeps across agent restarts.

pub mod fallback;
pub mod health;
pub mod install;
pub mod memory;
pub mod process;
pub mod reason;
pub mod runner;
pub mod spec;
pub mod state;

use corral_proto::v1::{ConfigFile, PackageRef, ServerSpec};

/// What the registry wants of one instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub spec: ServerSpec,
    pub running: bool,
    pub restart_counter: u64,
    /// A release to download ahead of time (a rollout is coming).
    pub prefetch: Option<PackageRef>,
    /// Rendered config files for conf/.
    pub configs: Vec<ConfigFile>,
    /// 0-based within the server, stable: `CORRAL_ORDINAL`.
    pub ordinal: u32,
}

pub use corral_proto::spec_hash;
