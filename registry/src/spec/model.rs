//! The checked spec: what `apply` stores (as JSON in the `servers` table) and every
//! other part of the registry reads.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigRestart, ConfigTemplate, Health};

/// A checked spec, as stored (JSON) in the `servers` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub app: String,
    pub server: String,
    pub nodes: Vec<String>,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
    pub state: RunState,
    pub adapters: Vec<Adapter>,
    pub restart: Restart,
    pub stop: Stop,
    /// The package version to run; None: the command runs from the instance directory.
    #[serde(default)]
    pub package: Option<String>,
    #[serde(default)]
    pub health: Option<Health>,
    #[serde(default)]
    pub configs: Vec<ConfigTemplate>,
    /// For `kind = "external"`: the service's address, which agents health-check but
    /// do not run.
    #[serde(default)]
    pub external: Option<(String, u16)>,
    /// How config changes that restart instances roll out.
    #[serde(default)]
    pub config_restart: ConfigRestart,
    /// Adapters' weights, tags and meta, and the `[metrics]` adapter ([`super::meta`]).
    #[serde(default, skip_serializing_if = "super::meta::SpecMeta::is_empty")]
    pub metadata: super::meta::SpecMeta,
    /// `[resources]`: the limits of each instance's cgroup; None: no limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<super::resources::Resources>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Stopped,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Stopped => "stopped",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adapter {
    pub name: String,
    /// 0: `"auto"`, a port the registry allocates per node.
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restart {
    pub policy: String,
    #[serde(with = "humantime_serde")]
    pub min_uptime: Duration,
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    pub max_quick_failures: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub signal: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// Spec defaults, in one place.
pub mod defaults {
    use std::time::Duration;

    pub const POLICY: &str = "always";
    pub const MIN_UPTIME: Duration = Duration::from_secs(5);
    pub const INITIAL_DELAY: Duration = Duration::from_millis(100);
    pub const MAX_DELAY: Duration = Duration::from_secs(30);
    pub const MAX_QUICK_FAILURES: u32 = 10;
    pub const STOP_SIGNAL: &str = "SIGTERM";
    pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Spec {
    /// `app.server`
    pub fn name(&self) -> String {
        format!("{}.{}", self.app, self.server)
    }
}
