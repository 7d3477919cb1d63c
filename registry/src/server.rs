//! `registry serve`: the gRPC services, the HTTP side and the background loops, run until
//! the shutdown token is cancelled.

use std::sync::Arc;
use std::time::Duration;

use corral_proto::v1::admin_server::AdminServer;
use corral_proto::v1::agent_server::AgentServer;
use corral_proto::v1::query_server::QueryServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::admin::AdminService;
use crate::agent_service::AgentService;
use crate::auth::{AdminAuth, Tokens};
use crate::config::RegistryConfig;
use crate::metrics::{Metrics, RpcMetricsLayer};
use crate::query_service::QueryService;
use crate::sessions::Sessions;
use crate::store::{Store, StoreError, now_ms};

/// What every RPC handler and background loop of one registry process shares.
pub struct Shared {
    pub config: RegistryConfig,
    pub store: Store,
    pub sessions: Sessions,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    /// Names this process among replicas (rollout leases).
    pub replica_id: String,
    /// Rollouts this replica drives now.
    pub driven_rollouts: std::sync::Mutex<std::collections::HashSet<i64>>,
    pub discovery: crate::discovery::Discovery,
    /// Package chunks read for the downloads running now.
    pub chunks: crate::download::ChunkCache,
    /// Whether the database answers, as last checked.
    pub outage: crate::outage::Outage,
    /// Agents' last known reports, and what waits to be written.
    pub actual: crate::actual::Actual,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Runs a registry on the given listeners until `shutdown` is cancelled.
pub async fn run(
    config: RegistryConfig,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let store = Store::open(&config.db).await?;
    if config.admin_tokens.is_empty() {
        warn!(
            "no admin token: admin calls are open to whoever reaches {}",
            config.listen
        );
    }
    if config.join_token.is_none() {
        warn!(
            "no join token: any agent that reaches {} can join as a new node",
            config.listen
        );
    }
    info!(
        db = %crate::store::redact_url(&config.db),
        grpc = %grpc.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        http = %http.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        "registry serving"
    );
    let shared = Arc::new(Shared {
        config,
        store,
        sessions: Sessions::default(),
        metrics: Metrics::new(),
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
        replica_id: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
        driven_rollouts: Default::default(),
        discovery: Default::default(),
        chunks: Default::default(),
        outage: Default::default(),
        actual: Default::default(),
    });

    shared.tracker.spawn(crate::outage::watch(shared.clone()));
    shared.tracker.spawn(crate::actual::run(shared.clone()));
    shared.tracker.spawn(flush_heartbeats(shared.clone()));
    shared.tracker.spawn(sweep_stale_nodes(shared.clone()));
    shared.tracker.spawn(trim_events(shared.clone()));
    shared.tracker.spawn(resume_rollouts(shared.clone()));
    shared.tracker.spawn(crate::discovery::run(shared.clone()));
    shared.tracker.spawn(crate::feed::follow(shared.clone()));
    shared
        .tracker
        .spawn(crate::configs::renderer::run(shared.clone()));
    shared.discovery.poke();

    let http_shutdown = shutdown.clone();
    let router = crate::http::router(shared.clone()).merge(crate::discovery_http::routes(&shared));
    let http_task = match &shared.config.http_tls {
        None => tokio::spawn(
            axum::serve(http, router)
                .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
                .into_future(),
        ),
        Some((cert, key)) => {
            let config = crate::http_tls::server_config(cert, key)?;
            let listener = crate::http_tls::TlsListener::new(http, config, shutdown.clone())
                .map_err(RunError::Http)?;
            tokio::spawn(
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
                    .into_future(),
            )
        }
    };

    // The standard gRPC health service (grpc_health_probe, load balancers) and reflection
    // (grpcurl): both unauthenticated, since they reveal no fleet data.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AgentServer<AgentService>>().await;
    health.set_serving::<AdminServer<AdminService>>().await;
    health.set_serving::<QueryServer<QueryService>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(corral_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // The descriptors are compiled in, so this fails only on a broken build: serve
    // without reflection then rather than not at all.
    let reflection_v1 = reflection()
        .build_v1()
        .inspect_err(|err| warn!(cause = %err, "gRPC reflection (v1) disabled"))
        .ok();
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .inspect_err(|err| warn!(cause = %err, "gRPC reflection (v1alpha) disabled"))
        .ok();
    let incoming = TcpIncoming::from(grpc).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)));
    if let Some(tls) = &shared.config.tls {
        let config = crate::tls::server_config(&tls.cert, &tls.key, tls.client_ca.as_deref())?;
        builder = builder.tls_config(config)?;
    }
    let grpc_result = builder
        .layer(RpcMetricsLayer(shared.metrics.clone()))
        .layer(crate::error::CapStatusLayer)
        .add_service(AgentServer::new(AgentService {
            shared: shared.clone(),
        }))
        .add_service(AdminServer::with_interceptor(
            AdminService {
                shared: shared.clone(),
            },
            AdminAuth(Tokens::new(&shared.config.admin_tokens)),
        ))
        .add_service(QueryServer::with_interceptor(
            QueryService::new(shared.clone()),
            crate::query_auth::QueryAuth::new(
                &shared.config.admin_tokens,
                shared.config.public_discovery,
            ),
        ))
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, async {
            shutdown.cancelled().await;
            // Probes see the registry leave before its connections close.
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            health.set_not_serving::<AgentServer<AgentService>>().await;
            health.set_not_serving::<AdminServer<AdminService>>().await;
            health.set_not_serving::<QueryServer<QueryService>>().await;
        })
        .await;
    // Whatever ended the server, stop everything else too.
    shutdown.cancel();
    shared.tracker.close();
    shared.tracker.wait().await;
    let http_result = http_task.await;
    shared.store.close().await;
    grpc_result?;
    match http_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RunError::Http(e)),
        Err(e) => Err(RunError::Http(std::io::Error::other(e))),
    }
}

/// Writes the heartbeats of the last interval in one batch; once more at shutdown. While
/// the database is unreachable they wait (a heartbeat is pending until written), and are
/// written as soon as it is back.
async fn flush_heartbeats(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut availability = shared.outage.subscribe();
    loop {
        let stop = tokio::select! {
            () = shared.shutdown.cancelled() => true,
            _ = tick.tick() => false,
            Ok(()) = availability.changed() => false,
        };
        if shared.outage.reachable() {
            let rows = shared.sessions.pending_heartbeats();
            match shared.store.write_heartbeats(&rows).await {
                Ok(revived) => {
                    shared.sessions.written(&rows);
                    if !rows.is_empty() {
                        shared.outage.write_succeeded();
                    }
                    if !revived.is_empty() {
                        for node in &revived {
                            info!(%node, "node up again: its heartbeats reached the database");
                        }
                        shared.discovery_changed().await;
                    }
                }
                Err(err) => {
                    warn!(cause = %err, nodes = rows.len(), "could not write heartbeats; they wait");
                    shared.outage.write_failed(&err);
                }
            }
        }
        if stop {
            return;
        }
    }
}

/// Marks `down` the nodes whose sessions no replica has kept alive: their last-seen time
/// is older than the node timeout plus two flush intervals. Nodes with a session open here
/// are alive. While the database is unreachable, and for two flush intervals after it is
/// back, it waits: heartbeats could not be written meanwhile.
async fn sweep_stale_nodes(shared: Arc<Shared>) {
    let grace = shared.config.node_timeout + 2 * shared.config.flush_interval;
    let settle = 2 * shared.config.flush_interval;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if shared.outage.up_for().is_none_or(|up| up < settle) {
            continue;
        }
        let cutoff = now_ms() - grace.as_millis() as i64;
        let alive = shared.sessions.live_nodes();
        match shared.store.sweep_stale_nodes(cutoff, &alive).await {
            Ok(names) => {
                if !names.is_empty() {
                    shared.discovery_changed().await;
                }
                for node in names {
                    info!(%node, "node down: no heartbeat reached any registry");
                }
            }
            Err(err) => warn!(cause = %err, "could not sweep stale nodes"),
        }
    }
}

/// Keeps the event log bounded: the newest `event_retention` events stay.
async fn trim_events(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match shared
            .store
            .trim_events(shared.config.event_retention as i64)
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "trimmed old events"),
            Err(err) => warn!(cause = %err, "could not trim events"),
        }
    }
}

/// Takes over rollouts whose driver stopped renewing its lease (a registry that died or
/// restarted), so none is left half-done.
async fn resume_rollouts(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match shared.store.orphaned_rollouts(now_ms()).await {
            Ok(ids) => {
                for id in ids {
                    info!(rollout = id, "resuming a rollout whose driver stopped");
                    crate::rollout::executor::spawn(shared.clone(), id);
                }
            }
            Err(err) => warn!(cause = %err, "could not look for orphaned rollouts"),
        }
    }
}
