//! Prometheus metrics of the agent, served on `/metrics`: the registry session, and this
//! node's instances by state and restarts by server, computed from the status board at
//! scrape time.

use std::collections::BTreeMap;

use corral_common::metrics::{Exposition, ServerLabels, StateLabels, replace};
use corral_proto::v1::InstanceStatus;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::instance::state::State;

/// Every instance state, reported with 0 when no instance is in it, so a dashboard sees
/// 0 rather than nothing.
const STATES: [State; 8] = [
    State::Starting,
    State::Running,
    State::Stopping,
    State::Stopped,
    State::Exited,
    State::Backoff,
    State::CrashLooping,
    State::Failed,
];

pub struct Metrics {
    exposition: Exposition,
    /// This node's instances, by state.
    pub instances: Family<StateLabels, Gauge>,
    /// Restarts of each server's instance on this node.
    pub restarts: Family<ServerLabels, Gauge>,
    /// 1 while a session with a registry is open.
    pub connected: Gauge,
    /// Sessions opened since start.
    pub sessions: Counter,
    pub heartbeats: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut exposition = Exposition::new("corral_agent");
        let connected = Gauge::default();
        let sessions = Counter::default();
        let heartbeats = Counter::default();
        let instances = Family::<StateLabels, Gauge>::default();
        let restarts = Family::<ServerLabels, Gauge>::default();
        exposition.register(
            "connected",
            "1 while a registry session is open",
            connected.clone(),
        );
        exposition.register(
            "sessions",
            "Registry sessions opened since start",
            sessions.clone(),
        );
        exposition.register(
            "heartbeats",
            "Heartbeats sent since start",
            heartbeats.clone(),
        );
        exposition.register(
            "instances",
            "Instances on this node, by state",
            instances.clone(),
        );
        exposition.register(
            "instance_restarts",
            "Restarts of each server's (app.server) instance on this node",
            restarts.clone(),
        );
        Metrics {
            exposition,
            instances,
            restarts,
            connected,
            sessions,
            heartbeats,
        }
    }

    /// Sets the instance gauges from the current statuses, then encodes everything.
    pub fn encode_with(&self, statuses: &[InstanceStatus]) -> String {
        let mut states = BTreeMap::<String, i64>::new();
        let mut restarts = BTreeMap::<String, i64>::new();
        for s in statuses {
            *states.entry(s.state.clone()).or_default() += 1;
            let sum = restarts
                .entry(format!("{}.{}", s.app, s.server))
                .or_default();
            *sum = sum.saturating_add(i64::try_from(s.restarts).unwrap_or(i64::MAX));
        }
        let states: Vec<(String, i64)> = states.into_iter().collect();
        let restarts: Vec<(String, i64)> = restarts.into_iter().collect();
        self.exposition.scrape(|| {
            // Every known state is reported, 0 when no instance is in it; a removed
            // instance's server goes away.
            replace(
                &self.instances,
                &STATES.map(State::as_str),
                &states,
                |state| StateLabels { state },
            );
            replace(&self.restarts, &[], &restarts, |server| ServerLabels {
                server,
            });
        })
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(server: &str, state: &str, restarts: u64) -> InstanceStatus {
        InstanceStatus {
            app: "demo".into(),
            server: server.into(),
            state: state.into(),
            restarts,
            ..Default::default()
        }
    }

    #[test]
    fn instance_families_follow_the_statuses() {
        let metrics = Metrics::new();
        let text = metrics.encode_with(&[
            status("echo", "running", 2),
            status("gone", "backoff", 7),
            status("other", "running", 0),
        ]);
        for line in [
            "corral_agent_instances{state=\"running\"} 2",
            "corral_agent_instances{state=\"backoff\"} 1",
            "corral_agent_instances{state=\"crash-looping\"} 0",
            "corral_agent_instance_restarts{server=\"demo.echo\"} 2",
            "corral_agent_instance_restarts{server=\"demo.gone\"} 7",
            "corral_agent_connected 0",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        // A removed instance leaves the next scrape.
        let text = metrics.encode_with(&[status("echo", "running", 3)]);
        assert!(!text.contains("demo.gone"), "{text}");
        assert!(text.contains("corral_agent_instances{state=\"backoff\"} 0"));
        assert!(text.contains("corral_agent_instance_restarts{server=\"demo.echo\"} 3"));
    }
}
