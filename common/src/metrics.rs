//! Prometheus text for both daemons' `/metrics`: a registry of metrics encoded under one
//! scrape lock ([`Exposition`]), the label sets both use, and [`replace`] for gauge
//! families computed at scrape time (instances by state, restarts by server), and the
//! per-instance usage families ([`UsageFamilies`]).

use std::sync::Mutex;

use corral_proto::v1::InstanceUsage;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

/// The `Content-Type` of what [`Exposition::encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// `server` is `app.server`: servers are defined by operators, so their number is bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub server: String,
}

/// The metrics of one daemon, named with its prefix (`corral_agent_…`).
pub struct Exposition {
    registry: Registry,
    /// Held while gauges computed at scrape time are replaced and encoded, so two
    /// concurrent scrapes never see each other's half-replaced families.
    scrape: Mutex<()>,
}

impl Exposition {
    pub fn new(prefix: &str) -> Exposition {
        Exposition {
            registry: Registry::with_prefix(prefix),
            scrape: Mutex::new(()),
        }
    }

    pub fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.registry.register(name, help, metric);
    }

    /// Every metric as Prometheus (OpenMetrics) text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Runs `update`, which sets the gauges computed at scrape time, then encodes
    /// everything, both under the scrape lock.
    pub fn scrape(&self, update: impl FnOnce()) -> String {
        // The lock guards no data of its own, so a panic elsewhere cannot leave it torn.
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        update();
        self.encode()
    }
}

/// Replaces every value of a gauge family: the labels in `always` show 0 when `counts`
/// lacks them (a dashboard sees 0 rather than nothing), and labels gone from `counts`
/// (an undeployed server) disappear.
pub fn replace<L>(
    family: &Family<L, Gauge>,
    always: &[&str],
    counts: &[(String, i64)],
    labels: impl Fn(String) -> L,
) where
    L: Clone + std::hash::Hash + Eq,
{
    family.clear();
    for label in always {
        family.get_or_create(&labels((*label).to_string())).set(0);
    }
    for (label, n) in counts {
        family.get_or_create(&labels(label.clone())).set(*n);
    }
}

/// An instance's labels; `instance` is `app.server@node`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub app: String,
    pub server: String,
    pub node: String,
    pub instance: String,
}

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// What each instance uses, from its cgroup: read at scrape time by the agent, and as
/// the agents last reported it by the registry.
#[derive(Default)]
pub struct UsageFamilies {
    cpu_seconds: Family<InstanceLabels, F64Gauge>,
    throttled_seconds: Family<InstanceLabels, F64Gauge>,
    memory_bytes: Family<InstanceLabels, Gauge>,
    memory_peak_bytes: Family<InstanceLabels, Gauge>,
    pids: Family<InstanceLabels, Gauge>,
    oom_kills: Family<InstanceLabels, Gauge>,
}

impl UsageFamilies {
    pub fn register(&self, e: &mut Exposition) {
        e.register(
            "instance_cpu_seconds",
            "CPU time of the instance's cgroup",
            self.cpu_seconds.clone(),
        );
        e.register(
            "instance_cpu_throttled_seconds",
            "Time the instance's CPU limit held it back",
            self.throttled_seconds.clone(),
        );
        e.register(
            "instance_memory_bytes",
            "Memory the instance's cgroup uses",
            self.memory_bytes.clone(),
        );
        e.register(
            "instance_memory_peak_bytes",
            "The most memory the instance's cgroup has used",
            self.memory_peak_bytes.clone(),
        );
        e.register(
            "instance_pids",
            "Processes and threads in the instance's cgroup",
            self.pids.clone(),
        );
        e.register(
            "instance_oom_kills",
            "Processes of the instance the OOM killer killed",
            self.oom_kills.clone(),
        );
    }

    /// Replaces every series with the usage of each node's instances: `(node, usage)`
    /// pairs, one per node (an instance gone from every list loses its series).
    pub fn set<'a>(&self, nodes: impl IntoIterator<Item = (&'a str, &'a [InstanceUsage])>) {
        self.cpu_seconds.clear();
        self.throttled_seconds.clear();
        self.memory_bytes.clear();
        self.memory_peak_bytes.clear();
        self.pids.clear();
        self.oom_kills.clear();
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for (node, u) in nodes
            .into_iter()
            .flat_map(|(node, usage)| usage.iter().map(move |u| (node, u)))
        {
            let l = InstanceLabels {
                app: u.app.clone(),
                server: u.server.clone(),
                node: node.to_string(),
                instance: format!("{}.{}@{node}", u.app, u.server),
            };
            self.cpu_seconds.get_or_create(&l).set(u.cpu_seconds);
            self.throttled_seconds
                .get_or_create(&l)
                .set(u.cpu_throttled_seconds);
            // Not measured (no memory or pids cgroup): no sample rather than a zero.
            let gauges = [
                (&self.memory_bytes, u.memory_bytes),
                (&self.memory_peak_bytes, u.memory_peak_bytes),
                (&self.pids, u.pids),
            ];
            for (family, value) in gauges {
                if let Some(v) = value {
                    family.get_or_create(&l).set(int(v));
                }
            }
            self.oom_kills.get_or_create(&l).set(int(u.oom_kills));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_replaced_with_zeros_kept() {
        let mut exposition = Exposition::new("corral_test");
        let family = Family::<StateLabels, Gauge>::default();
        exposition.register("things", "Things, by state", family.clone());
        let states = |state| StateLabels { state };
        let text = exposition.scrape(|| {
            replace(
                &family,
                &["up", "down"],
                &[("up".into(), 2), ("odd".into(), 1)],
                states,
            );
        });
        for line in [
            "corral_test_things{state=\"up\"} 2",
            "corral_test_things{state=\"down\"} 0",
            "corral_test_things{state=\"odd\"} 1",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        let text = exposition.scrape(|| replace(&family, &["up"], &[], states));
        assert!(
            text.contains("corral_test_things{state=\"up\"} 0"),
            "{text}"
        );
        assert!(!text.contains("odd"), "{text}");
    }
}
