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

use std::time::Duration;

use corral_proto::v1::{ConfigFile, HealthKind, InstanceSpec, PackageRef, ServerSpec, StopPolicy};
use nix::sys::signal::Signal;

/// What the registry wants of one instance, with the spec's typed parts read once (see
/// [`spec`]): a spec with a value this agent does not know never reaches a runner.
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
    pub policy: state::Policy,
    pub stop_signal: Signal,
    /// Each config file's `on_change`, in the order of `configs`.
    pub on_change: Vec<spec::OnChange>,
    pub health_kind: Option<HealthKind>,
    /// The spec's `[resources]`.
    pub limits: crate::cgroup::Limits,
}

impl Desired {
    /// Reads an instance of the desired state; an error names the field this agent
    /// cannot read (a value it does not know, or one left out).
    pub fn from_wire(inst: InstanceSpec) -> Result<Desired, String> {
        let spec = inst.spec.ok_or("InstanceSpec.spec is not set")?;
        for file in &inst.configs {
            spec::check_mode(file)?;
        }
        Ok(Desired {
            policy: spec::policy(&spec)?,
            stop_signal: spec::stop_signal(&spec)?,
            health_kind: spec::health_kind(&spec)?,
            limits: crate::cgroup::Limits::from_wire(spec.resources.as_ref()),
            on_change: inst
                .configs
                .iter()
                .map(spec::on_change)
                .collect::<Result<_, _>>()?,
            spec,
            running: inst.running,
            restart_counter: inst.restart_counter,
            prefetch: inst.prefetch,
            configs: inst.configs,
            ordinal: inst.ordinal,
        })
    }

    /// An instance a previous agent left running that is no longer assigned: stopped
    /// (never restarted) the way its spec said when it started, or with SIGTERM and
    /// 10 s when that spec is not known.
    pub fn leftover(memory: &memory::Memory) -> Desired {
        let mut spec = fallback::decode(&memory.spec).unwrap_or_default();
        if spec.stop.is_none() {
            spec.stop = Some(StopPolicy {
                signal: "SIGTERM".into(),
                timeout_ms: 10_000,
            });
        }
        Desired {
            stop_signal: spec::stop_signal(&spec).unwrap_or(Signal::SIGTERM),
            spec,
            running: false,
            restart_counter: memory.acted_counter,
            prefetch: None,
            configs: Vec::new(),
            ordinal: memory.ordinal,
            limits: crate::cgroup::Limits::default(),
            policy: state::Policy {
                kind: state::RestartKind::Never,
                min_uptime: Duration::ZERO,
                initial_delay: Duration::ZERO,
                max_delay: Duration::from_secs(1),
                max_quick_failures: 1,
            },
            on_change: Vec::new(),
            health_kind: None,
        }
    }
}

pub use corral_proto::spec_hash;
