//! `registry serve`: the gRPC services, the HTTP side and the background loops, run until
//! the shutdown token is cancelled.

use std::time::Duration;

use corral_proto::v1::admin_server::AdminServer;
use corral_proto::v1::agent_server::AgentServer;
use corral_proto::v1::query_server::QueryServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::admin::AdminService;
use crate::agent_service::AgentService;
use crate::config::RegistryConfig;
use crate::gate::AdminGate;
use crate::metrics::RpcMetricsLayer;
use crate::query_service::QueryService;
use crate::state::Shared;
use crate::store::{Store, StoreError};

/// A connection that sent nothing for this long is pinged (a joined agent heartbeats
/// more often, so this reaches joins still waiting for their Welcome, and other calls).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may go unanswered before the connection is closed. Longer than the
/// default node timeout, so that a busy peer (or a busy registry: hyper looks at the
/// ping's timer before it reads the socket, where the answer may wait) never loses a
/// connection the heartbeats would keep (at 5 s, the likely cause of the joins cut with
/// "broken pipe" while 10,000 agents joined over MySQL at load 20+: docs/benchmarks.md).
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

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
    #[error(transparent)]
    Secrets(#[from] crate::secrets::startup::StartupError),
}

/// Runs a registry on the given listeners until `shutdown` is cancelled.
pub async fn run(
    config: RegistryConfig,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let store = Store::open(&config.db).await?;
    let store = crate::secrets::startup::with_key(&config, store).await?;
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
    let shared = Shared::new(config, store, shutdown.clone());

    shared.spawn(crate::outage::watch(shared.clone()));
    shared.spawn(crate::actual::run(shared.clone()));
    shared.spawn(crate::liveness::run(shared.clone()));
    shared.spawn(crate::actual::trim_events(shared.clone()));
    shared.spawn(crate::rollout::resume_orphans(shared.clone()));
    shared.spawn(crate::discovery::run(shared.clone()));
    shared.spawn(crate::state::dispatch(shared.clone()));
    shared.spawn(crate::feed::follow(shared.clone()));
    shared.spawn(crate::feed::record(shared.clone()));
    let advertise = crate::logs::replicas::advertise(&shared, grpc.local_addr().ok());
    shared.spawn(crate::logs::replicas::run(shared.clone(), advertise));
    shared.spawn(crate::configs::renderer::run(shared.clone()));
    shared.spawn(crate::audit::run(shared.clone()));
    shared.discovery().poke();

    let http_shutdown = shutdown.clone();
    let router = crate::http::router(shared.clone())
        .merge(crate::discovery_http::routes(&shared))
        .merge(crate::web::routes(shared.clone()))
        .into_make_service_with_connect_info::<crate::http::ClientAddr>();
    let http_task = match &shared.config().http_tls {
        None => tokio::spawn(
            axum::serve(crate::http::PlainListener(http), router)
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
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    if let Some(tls) = &shared.config().tls {
        let config = crate::tls::server_config(&tls.cert, &tls.key, tls.client_ca.as_deref())?;
        builder = builder.tls_config(config)?;
    }
    let grpc_result = builder
        .layer(RpcMetricsLayer(shared.metrics().clone()))
        .layer(crate::error::CapStatusLayer)
        .add_service(AgentServer::new(AgentService {
            shared: shared.clone(),
        }))
        .add_service(AdminGate::new(
            AdminServer::new(AdminService {
                shared: shared.clone(),
            }),
            shared.clone(),
        ))
        .add_service(QueryServer::with_interceptor(
            QueryService::new(shared.clone()),
            crate::query_auth::QueryAuth::new(shared.clone()),
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
    shared.wait_tasks().await;
    let http_result = http_task.await;
    shared.store().close().await;
    grpc_result?;
    match http_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RunError::Http(e)),
        Err(e) => Err(RunError::Http(std::io::Error::other(e))),
    }
}
