//! Prometheus metrics of the registry: nodes, instances and rollouts by state, restarts by
//! server, what each instance uses (as the agents report it), open sessions, RPCs by method
//! with latency histograms. Served as text on `/metrics`.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use corral_common::metrics::{Exposition, ServerLabels, StateLabels, UsageFamilies, replace};
use corral_proto::v1::InstanceUsage;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

/// Node states, always reported (0 when none), so a dashboard sees 0 rather than nothing.
const NODE_STATES: &[&str] = &["up", "down"];
/// Instance states: `pending` until an agent reports, then the agent's states.
const INSTANCE_STATES: &[&str] = &[
    "pending",
    "starting",
    "running",
    "stopping",
    "stopped",
    "exited",
    "backoff",
    "crash-looping",
    "failed",
];
const ROLLOUT_STATES: &[&str] = &[
    "running",
    "rolling-back",
    "succeeded",
    "failed",
    "interrupted",
];

/// Fleet-wide counts read from the database at scrape time; `None` where the query
/// failed, which leaves that family as the last scrape saw it.
#[derive(Debug, Default)]
pub struct FleetCounts {
    pub nodes: Option<Vec<(String, i64)>>,
    pub instances: Option<Vec<(String, i64)>>,
    pub restarts: Option<Vec<(String, i64)>>,
    pub rollouts: Option<Vec<(String, i64)>>,
    /// What each instance of every up node uses, as its agent last reported it:
    /// `(node, usage)`.
    pub usage: Option<Vec<(String, Vec<InstanceUsage>)>>,
}

pub struct Metrics {
    exposition: Exposition,
    usage: UsageFamilies,
    pub nodes: Family<StateLabels, Gauge>,
    pub instances: Family<StateLabels, Gauge>,
    /// Restarts summed over each server's instances.
    pub restarts: Family<ServerLabels, Gauge>,
    pub rollouts: Family<StateLabels, Gauge>,
    pub sessions_open: Gauge,
    pub rpcs: Family<MethodLabels, Counter>,
    pub rpc_seconds: Family<MethodLabels, Histogram>,
    /// Package chunks sent to agents, and those of them read from the database (the rest
    /// were shared with another download running at the same time).
    pub chunks_sent: Counter,
    pub chunks_read: Counter,
    /// Package bytes sent to agents (the registry's egress for packages).
    pub package_bytes_sent: Counter,
    /// `Agent.Sources` answers and reports, by kind: "registry" and "peer" (the source
    /// given), "failed" and "corrupt" (peers reported by the node that asked).
    pub peer_sources: Family<KindLabels, Counter>,
    /// Desired states sent to agents: one when a session opens, one per change of its node.
    pub desired_sent: Counter,
    /// Recomputations of the discovery table from the database.
    pub discovery_recomputes: Counter,
    /// Instance events dropped because the database stayed unreachable longer than the
    /// queue of events waiting for it holds.
    pub events_dropped: Counter,
    /// Admin calls refused ([`crate::gate`]), by reason and call.
    pub admin_refused: Family<RefusedLabels, Counter>,
    /// Audit records dropped because the queue waiting for the database was full.
    pub audit_dropped: Counter,
    /// Instance statuses and events received from agents (each counted once, however
    /// they were batched).
    pub reports_received: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// "unauthenticated" (no valid token) or "permission_denied" (a role that may not).
    pub reason: String,
    /// The Admin method; "other" for a path that is not one.
    pub call: String,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut exposition = Exposition::new("corral_registry");
        let nodes = Family::<StateLabels, Gauge>::default();
        let instances = Family::<StateLabels, Gauge>::default();
        let restarts = Family::<ServerLabels, Gauge>::default();
        let rollouts = Family::<StateLabels, Gauge>::default();
        let sessions_open = Gauge::default();
        let rpcs = Family::<MethodLabels, Counter>::default();
        let rpc_seconds = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        exposition.register(
            "nodes",
            "Nodes known to the registry, by state",
            nodes.clone(),
        );
        exposition.register(
            "instances",
            "Instances of the whole fleet, by state",
            instances.clone(),
        );
        exposition.register(
            "instance_restarts",
            "Restarts of each server (app.server), summed over its instances",
            restarts.clone(),
        );
        exposition.register("rollouts", "Rollouts, by state", rollouts.clone());
        exposition.register(
            "sessions_open",
            "Agent sessions open on this replica",
            sessions_open.clone(),
        );
        exposition.register("rpcs", "gRPC calls received, by method", rpcs.clone());
        let chunks_sent = Counter::default();
        let chunks_read = Counter::default();
        exposition.register(
            "package_chunks_sent",
            "Package chunks sent to agents",
            chunks_sent.clone(),
        );
        exposition.register(
            "package_chunks_read",
            "Package chunks read from the database for downloads (the others sent were shared between downloads running at the same time)",
            chunks_read.clone(),
        );
        let package_bytes_sent = Counter::default();
        let peer_sources = Family::<KindLabels, Counter>::default();
        exposition.register(
            "package_bytes_sent",
            "Package bytes sent to agents",
            package_bytes_sent.clone(),
        );
        exposition.register(
            "package_sources",
            "Sources given for package downloads (registry, peer) and peers reported by nodes (failed, corrupt)",
            peer_sources.clone(),
        );
        let desired_sent = Counter::default();
        let discovery_recomputes = Counter::default();
        let events_dropped = Counter::default();
        exposition.register(
            "desired_states_sent",
            "Desired states sent to agents (one per session, then one per change of its node)",
            desired_sent.clone(),
        );
        exposition.register(
            "discovery_recomputes",
            "Recomputations of the discovery table from the database",
            discovery_recomputes.clone(),
        );
        exposition.register(
            "events_dropped",
            "Instance events dropped while the database was unreachable (the queue waiting for it was full)",
            events_dropped.clone(),
        );
        let admin_refused = Family::<RefusedLabels, Counter>::default();
        let audit_dropped = Counter::default();
        exposition.register(
            "admin_refused",
            "Admin calls refused, by reason (unauthenticated, permission_denied) and call",
            admin_refused.clone(),
        );
        exposition.register(
            "audit_dropped",
            "Audit records dropped while the database was unreachable (the queue waiting for it was full)",
            audit_dropped.clone(),
        );
        let reports_received = Counter::default();
        exposition.register(
            "reports_received",
            "Instance statuses and events received from agents",
            reports_received.clone(),
        );
        exposition.register(
            "rpc_duration_seconds",
            "Time to answer a gRPC call (to the response headers for streams), by method",
            rpc_seconds.clone(),
        );
        let usage = UsageFamilies::default();
        usage.register(&mut exposition);
        Arc::new(Metrics {
            exposition,
            usage,
            nodes,
            instances,
            restarts,
            rollouts,
            sessions_open,
            rpcs,
            rpc_seconds,
            chunks_sent,
            chunks_read,
            package_bytes_sent,
            peer_sources,
            desired_sent,
            discovery_recomputes,
            events_dropped,
            admin_refused,
            audit_dropped,
            reports_received,
        })
    }

    /// The counter of `Agent.Sources` answers and reports of `kind`.
    pub fn peer_reports(&self, kind: &str) -> Counter {
        self.peer_sources
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .clone()
    }

    /// Sets the fleet-wide gauges from `counts`, then encodes everything.
    pub fn encode_fleet(&self, counts: &FleetCounts) -> String {
        self.exposition.scrape(|| {
            if let Some(c) = &counts.nodes {
                replace(&self.nodes, NODE_STATES, c, |state| StateLabels { state });
            }
            if let Some(c) = &counts.instances {
                replace(&self.instances, INSTANCE_STATES, c, |state| StateLabels {
                    state,
                });
            }
            if let Some(c) = &counts.restarts {
                replace(&self.restarts, &[], c, |server| ServerLabels { server });
            }
            if let Some(c) = &counts.rollouts {
                replace(&self.rollouts, ROLLOUT_STATES, c, |state| StateLabels {
                    state,
                });
            }
            if let Some(usage) = &counts.usage {
                self.usage
                    .set(usage.iter().map(|(node, u)| (node.as_str(), u.as_slice())));
            }
        })
    }
}

/// A tower layer that counts and times every gRPC call by its method path.
#[derive(Clone)]
pub struct RpcMetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> tower::Service<http::Request<B>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // Only known services get a label of their own, so a client cannot grow the
        // metric families without bound by calling made-up paths.
        let path = req.uri().path();
        let method = if path.starts_with("/corral.v1.") || path.starts_with("/grpc.") {
            path.to_string()
        } else {
            "other".to_string()
        };
        let labels = MethodLabels { method };
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            metrics.rpcs.get_or_create(&labels).inc();
            metrics
                .rpc_seconds
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, i64)]) -> Option<Vec<(String, i64)>> {
        Some(pairs.iter().map(|(l, n)| (l.to_string(), *n)).collect())
    }

    #[test]
    fn fleet_families_are_encoded_and_replaced() {
        let metrics = Metrics::new();
        let text = metrics.encode_fleet(&FleetCounts {
            nodes: counts(&[("up", 2)]),
            instances: counts(&[("running", 3), ("backoff", 1)]),
            restarts: counts(&[("demo.echo", 4), ("demo.gone", 1)]),
            rollouts: counts(&[("succeeded", 1)]),
            usage: Some(vec![(
                "n1".into(),
                vec![InstanceUsage {
                    app: "demo".into(),
                    server: "echo".into(),
                    cpu_seconds: 1.5,
                    memory_bytes: Some(4096),
                    ..Default::default()
                }],
            )]),
        });
        for line in [
            "corral_registry_nodes{state=\"up\"} 2",
            "corral_registry_nodes{state=\"down\"} 0",
            "corral_registry_instances{state=\"running\"} 3",
            "corral_registry_instances{state=\"backoff\"} 1",
            "corral_registry_instances{state=\"failed\"} 0",
            "corral_registry_instance_restarts{server=\"demo.echo\"} 4",
            "corral_registry_rollouts{state=\"succeeded\"} 1",
            "corral_registry_rollouts{state=\"running\"} 0",
            "corral_registry_instance_cpu_seconds{app=\"demo\",server=\"echo\",node=\"n1\",instance=\"demo.echo@n1\"} 1.5",
            "corral_registry_instance_memory_bytes{app=\"demo\",server=\"echo\",node=\"n1\",instance=\"demo.echo@n1\"} 4096",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        // The next scrape replaces the values: an undeployed server's line goes, and a
        // family whose query failed keeps what it had.
        let text = metrics.encode_fleet(&FleetCounts {
            restarts: counts(&[("demo.echo", 5)]),
            ..FleetCounts::default()
        });
        assert!(text.contains("corral_registry_instance_restarts{server=\"demo.echo\"} 5"));
        assert!(!text.contains("demo.gone"), "{text}");
        assert!(text.contains("corral_registry_instances{state=\"running\"} 3"));
        assert!(text.contains("instance=\"demo.echo@n1\"} 1.5"), "{text}");
        // A node gone from the list (down) loses its instances' series.
        let text = metrics.encode_fleet(&FleetCounts {
            usage: Some(Vec::new()),
            ..FleetCounts::default()
        });
        assert!(!text.contains("demo.echo@n1"), "{text}");
    }
}
