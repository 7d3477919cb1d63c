//! Prometheus metrics of the agent, served on `/metrics`: the registry session, and this
//! node's instances by state and restarts by server, computed from the status board at
//! scrape time.

use corral_proto::v1::InstanceState;
use corral_proto::wire::name_of;
use std::collections::BTreeMap;

use corral_common::metrics::{Exposition, ServerLabels, StateLabels, UsageFamilies, replace};
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
    usage: UsageFamilies,
    /// This node's instances, by state.
    pub instances: Family<StateLabels, Gauge>,
    /// Restarts of each server's instance on this node.
    pub restarts: Family<ServerLabels, Gauge>,
    /// 1 while a session with a registry is open.
    pub connected: Gauge,
    /// Sessions opened since start.
    pub sessions: Counter,
    pub heartbeats: Counter,
    /// Log streams the registry has open on this agent (`registry logs`).
    pub log_streams: Gauge,
    /// Log lines dropped because the session could not carry them.
    pub log_lines_skipped: Counter,
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
        let log_streams = Gauge::default();
        let log_lines_skipped = Counter::default();
        exposition.register(
            "log_streams",
            "Log streams (registry logs) open on this agent",
            log_streams.clone(),
        );
        exposition.register(
            "log_lines_skipped",
            "Log lines dropped because the registry session could not carry them",
            log_lines_skipped.clone(),
        );
        let usage = UsageFamilies::default();
        usage.register(&mut exposition);
        Metrics {
            exposition,
            usage,
            instances,
            restarts,
            connected,
            sessions,
            heartbeats,
            log_streams,
            log_lines_skipped,
        }
    }

    /// Registers the counters of peer-assisted distribution.
    pub fn register_peers(&mut self, c: &crate::package::install::PeerCounters) {
        let e = &mut self.exposition;
        e.register(
            "peer_bytes_served",
            "Package bytes sent to other nodes",
            c.served.clone(),
        );
        e.register(
            "peer_bytes_received",
            "Package bytes received from other nodes",
            c.received.clone(),
        );
        e.register(
            "peer_corrupt",
            "Peers caught sending bytes that do not match the registry's chunk hashes",
            c.corrupt.clone(),
        );
        e.register(
            "peer_failed",
            "Peers given up on during a download (unreachable, refused, died, stalled)",
            c.failed.clone(),
        );
    }

    /// Sets the instance gauges from the current statuses and the instances' usage (of
    /// node `node`), then encodes everything.
    pub fn encode_with(
        &self,
        statuses: &[InstanceStatus],
        node: &str,
        usage: &[corral_proto::v1::InstanceUsage],
    ) -> String {
        let mut states = BTreeMap::<String, i64>::new();
        let mut restarts = BTreeMap::<String, i64>::new();
        for s in statuses {
            *states.entry(name_of::<InstanceState>(s.state)).or_default() += 1;
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
            self.usage.set([(node, usage)]);
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
            state: corral_proto::wire::number::<InstanceState>(state),
            restarts,
            ..Default::default()
        }
    }

    #[test]
    fn instance_families_follow_the_statuses() {
        let metrics = Metrics::new();
        let usage = corral_proto::v1::InstanceUsage {
            app: "demo".into(),
            server: "echo".into(),
            cpu_seconds: 1.5,
            memory_bytes: Some(4096),
            oom_kills: 1,
            ..Default::default()
        };
        let text = metrics.encode_with(
            &[
                status("echo", "running", 2),
                status("gone", "backoff", 7),
                status("other", "running", 0),
            ],
            "node-a",
            &[usage],
        );
        let labels = "{app=\"demo\",server=\"echo\",node=\"node-a\",instance=\"demo.echo@node-a\"}";
        for line in [
            format!("corral_agent_instance_cpu_seconds{labels} 1.5"),
            format!("corral_agent_instance_memory_bytes{labels} 4096"),
            format!("corral_agent_instance_oom_kills{labels} 1"),
        ] {
            assert!(text.contains(&line), "{line:?} missing from:\n{text}");
        }
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
        let text = metrics.encode_with(&[status("echo", "running", 3)], "node-a", &[]);
        assert!(
            !text.contains("corral_agent_instance_cpu_seconds{"),
            "{text}"
        );
        assert!(!text.contains("demo.gone"), "{text}");
        assert!(text.contains("corral_agent_instances{state=\"backoff\"} 0"));
        assert!(text.contains("corral_agent_instance_restarts{server=\"demo.echo\"} 3"));
    }
}
