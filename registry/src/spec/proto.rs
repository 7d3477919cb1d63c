//! A spec in the wire form the agent runs it from.

use corral_proto::v1::{
    Adapter, HealthCheck, HealthKind, OnChange, RestartKind, RestartPolicy, ServerSpec, StopPolicy,
};
use corral_proto::wire::number;

use super::{ConfigTemplate, Spec};

impl ConfigTemplate {
    /// `on_change` as the wire carries it: the mode, and the signal's name for a signal.
    pub fn wire_on_change(&self) -> (i32, String) {
        match self.on_change.strip_prefix("signal:") {
            Some(signal) => (OnChange::Signal.into(), signal.to_string()),
            None => (number::<OnChange>(&self.on_change), String::new()),
        }
    }
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Spec {
    pub fn to_proto(&self) -> ServerSpec {
        ServerSpec {
            command: self.command.clone(),
            env: self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            user: self.user.clone().unwrap_or_default(),
            adapters: self
                .adapters
                .iter()
                .map(|a| Adapter {
                    name: a.name.clone(),
                    port: u32::from(a.port),
                })
                .collect(),
            restart: Some(RestartPolicy {
                policy: number::<RestartKind>(&self.restart.policy),
                min_uptime_ms: ms(self.restart.min_uptime),
                initial_delay_ms: ms(self.restart.initial_delay),
                max_delay_ms: ms(self.restart.max_delay),
                max_quick_failures: self.restart.max_quick_failures,
            }),
            // Filled in with the package's sha256 and size when the desired state is built.
            package: None,
            health: self.health.as_ref().map(|h| HealthCheck {
                kind: number::<HealthKind>(&h.kind),
                adapter: h
                    .adapter
                    .clone()
                    .or_else(|| self.adapters.first().map(|a| a.name.clone()))
                    .unwrap_or_default(),
                path: h.path.clone(),
                command: h.command.clone(),
                interval_ms: ms(h.interval),
                timeout_ms: ms(h.timeout),
                start_period_ms: ms(h.start_period),
                healthy_after: h.healthy_after,
                unhealthy_after: h.unhealthy_after,
                restart_after: h.restart_after,
            }),
            external_address: self
                .external
                .as_ref()
                .map(|(h, p)| format!("{h}:{p}"))
                .unwrap_or_default(),
            stop: Some(StopPolicy {
                signal: self.stop.signal.clone(),
                timeout_ms: ms(self.stop.timeout),
            }),
            resources: self.resources.as_ref().map(|r| r.to_proto()),
        }
    }
}
