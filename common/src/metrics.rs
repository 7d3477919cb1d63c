//! Prometheus text for both daemons' `/metrics`: a registry of metrics encoded under one
//! scrape lock ([`Exposition`]), the label sets both use, and [`replace`] for gauge
//! families computed at scrape time (instances by state, restarts by server).

use std::sync::Mutex;

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
