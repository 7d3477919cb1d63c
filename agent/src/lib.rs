//! The Corral agent: joins the registry and runs this host's services.
//!
//! Layout:
//! * [`run`] — the daemon: data dir, pid file, HTTP side, the registry session.
//! * [`session`] + [`backoff`] — dialing the locator's registries, joining, heartbeats,
//!   receiving the desired state and sending instance status.
//! * [`reconcile`] — makes the host match the desired state, one runner per instance.
//! * [`instance`] — one runner task per instance: the lifecycle and install state
//!   machines (pure, table-tested), the runner's event loop and the code that performs
//!   their actions (a file per concern: desired state, lifecycle, release, launch,
//!   configs, health checker, reports), processes, health checks.
//! * [`package`] — installing a release: download, unpack with checked entries, switch.
//! * [`status`] — the latest instance statuses and pending events, for the session.
//! * [`logs`] — size-based rotation of service logs.
//! * [`identity`] — the node's secret identity in the data dir.
//! * [`facts`] — host facts and load reports from sysinfo.
//! * [`cgroup`] — one cgroup per instance: limits, kill, OOM, usage.
//! * [`config`] — defaults, config file, environment and flags.
//! * [`http`] + [`metrics`] — `/health` and Prometheus `/metrics`.
//! * [`discovery`] — discovery for the host's clients: the watch cache, HTTP and DNS.
//! * [`check`] — `agent check`: the run record it reads, restarting an agent that does
//!   not answer.
//! * [`datadir`] — the data dir, its lock and pid file, writes by rename.
//! * [`package`] — unpacking and installing releases.
//!
//! What the registry binary uses too (tracing set-up, sd_notify, client TLS, the package
//! rules, signals, time, the GET of `/health`) is in `corral_common`.

pub mod backoff;
pub mod cgroup;
pub mod check;
pub mod config;
pub mod datadir;
pub mod discovery;
pub mod facts;
pub mod http;
pub mod identity;
pub mod instance;
pub mod logs;
pub mod metrics;
pub mod pace;
pub mod package;
pub mod reconcile;
pub mod session;
pub mod status;

use axum::serve::ListenerExt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use corral_proto::v1::DesiredState;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::AgentConfig;

/// What the agent's tasks share.
pub struct Context {
    pub config: AgentConfig,
    pub metrics: metrics::Metrics,
    /// Whether a registry session is open right now.
    pub connected: AtomicBool,
    pub board: Arc<status::Board>,
    /// The latest desired state from the registry, for the reconciler.
    pub desired: watch::Sender<Option<DesiredState>>,
    /// The channel of the open registry session, for package downloads.
    pub channel: watch::Sender<Option<tonic::transport::Channel>>,
    /// The lists the host's clients asked for, for HTTP and DNS discovery.
    pub discovery: Arc<discovery::cache::Cache>,
    /// Where DNS is served (None: off).
    pub dns: Option<std::net::SocketAddr>,
    /// The agent's cgroups; None: not usable, for the reason in `cgroups_error`.
    pub cgroups: Option<Arc<cgroup::Cgroups>>,
    pub cgroups_error: String,
    /// What the log streams the registry opens need.
    pub logs: logs::streams::LogContext,
}

/// The clock of every `*_ms` field the agent reports (its modules take it from here).
pub use corral_common::time::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    DataDir(#[from] datadir::DataDirError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("registry {registry} refused this agent: {message}")]
    Refused { registry: String, message: String },
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr} for DNS (--dns; \"off\" turns it off): {source}")]
    Dns {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl AgentError {
    /// Exit code for `main`: 2 when the agent was refused or its input is bad.
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Refused { .. }
            | AgentError::Dns { .. }
            | AgentError::DataDir(datadir::DataDirError::Locked { .. }) => 2,
            _ => 1,
        }
    }
}

/// Runs the agent until `shutdown` is cancelled or the registry refuses it.
pub async fn run(
    config: AgentConfig,
    http: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let data_dir = datadir::DataDir::open(&config.data_dir)?;
    let dns = match config.dns {
        Some(addr) => Some(
            discovery::dns::bind(addr)
                .await
                .map_err(|source| AgentError::Dns { addr, source })?,
        ),
        None => None,
    };
    // Written once the data dir is ours: how `agent check` reaches and restarts us.
    check::RunRecord::current(http.local_addr().unwrap_or(config.http)).write(&config.data_dir)?;
    info!(
        node = %config.node,
        advertise_ip = %config.advertise_ip,
        data_dir = %config.data_dir.display(),
        http = %http.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        "agent starting"
    );
    if nix::unistd::geteuid().is_root() && !config.allow_root {
        warn!(
            "the agent runs as root without --allow-root: services whose spec has no `user` \
             will be refused (their last error says so)"
        );
    }
    let (cgroups, cgroups_error) = match cgroup::Cgroups::detect(&config.cgroup, &config.node) {
        Ok(cg) => {
            info!(cgroups = %cg.summary, "each instance runs in a cgroup of its own");
            (Some(Arc::new(cg)), String::new())
        }
        Err(e) => {
            warn!(cause = %e, "cgroups are not usable: instances run in process groups only, and a spec with [resources] is refused");
            (None, e)
        }
    };
    let instances_dir = config.data_dir.join("instances");
    let board = Arc::new(status::Board::default());
    // Start from the last desired state kept on disk: services stay as they were told
    // even when no registry answers.
    let (desired_tx, desired_rx) = watch::channel(reconcile::load_desired(&config.data_dir));
    let (channel_tx, channel_rx) = watch::channel(None);
    let (peer_listener, peers) = package::serve::bind(&config).await;
    let runner_shared = Arc::new(instance::runner::Shared {
        node: config.node.clone(),
        node_ip: config.advertise_ip.to_string(),
        instances_dir: instances_dir.clone(),
        board: board.clone(),
        allow_root: config.allow_root,
        installer: package::install::Installer {
            data_dir: config.data_dir.clone(),
            node: config.node.clone(),
            limits: package::Limits {
                max_unpacked_bytes: config.max_unpacked_size,
                max_entries: config.max_package_entries,
            },
            keep_releases: config.keep_releases,
            channel: channel_rx,
            locks: Default::default(),
            peers: peers.clone(),
        },
        cgroups: cgroups.clone(),
        cgroups_error: cgroups_error.clone(),
    });
    let reconciler = tokio::spawn(
        reconcile::Reconciler::new(runner_shared, config.data_dir.clone()).run(
            desired_rx,
            shutdown.clone(),
            config.stop_services_on_exit,
        ),
    );
    let log_index = Arc::new(logs::index::SizeIndex::default());
    let sampler = tokio::spawn(logs::index::sample_forever(
        log_index.clone(),
        instances_dir.clone(),
        shutdown.clone(),
    ));
    let rotation = tokio::spawn(logs::rotate_forever(
        instances_dir.clone(),
        config.log_max_size,
        config.log_keep,
        shutdown.clone(),
    ));
    let cache = Arc::new(discovery::cache::Cache::new(
        channel_tx.subscribe(),
        config.node.clone(),
        config.data_dir.clone(),
        config.discovery_idle,
    ));
    let sweeper = tokio::spawn(cache.clone().run(shutdown.clone()));
    let dns_addr = dns.as_ref().and_then(|(udp, _)| udp.local_addr().ok());
    let dns_task = dns.map(|sockets| {
        tokio::spawn(discovery::dns::serve(
            cache.clone(),
            sockets,
            config.dns_ttl,
            shutdown.clone(),
        ))
    });
    let mut metrics = metrics::Metrics::new();
    metrics.register_peers(&peers.counters);
    let peer_task = peer_listener.map(|listener| {
        tokio::spawn(package::serve::serve(
            listener,
            config.data_dir.clone(),
            peers.clone(),
            shutdown.clone(),
        ))
    });
    let logs = logs::streams::LogContext {
        node: config.node.clone(),
        instances_dir,
        index: log_index,
        open: metrics.log_streams.clone(),
        skipped: metrics.log_lines_skipped.clone(),
    };
    let ctx = Arc::new(Context {
        config,
        metrics,
        connected: AtomicBool::new(false),
        board,
        desired: desired_tx,
        channel: channel_tx,
        discovery: cache,
        dns: dns_addr,
        cgroups,
        cgroups_error,
        logs,
    });
    let http_shutdown = shutdown.clone();
    let http_task = tokio::spawn(
        // Answers go out at once (no Nagle delay behind the client's delayed ACK): blocking
        // queries, event streams and gRPC watches write small answers at any moment.
        axum::serve(
            http.tap_io(|tcp| drop(tcp.set_nodelay(true))),
            http::router(ctx.clone()),
        )
        .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
        .into_future(),
    );
    // The HTTP side is bound and the run loop starts: tell systemd (READY=1, watchdog
    // pings, STOPPING=1 once `shutdown` is cancelled).
    let notifier = tokio::spawn(
        corral_common::notify::Notifier::from_env().run(std::future::ready(()), shutdown.clone()),
    );
    let result = session::run(ctx.clone(), shutdown.clone()).await;
    shutdown.cancel();
    let _ = reconciler.await;
    let _ = rotation.await;
    let _ = sampler.await;
    let _ = notifier.await;
    let _ = sweeper.await;
    if let Some(task) = dns_task {
        let _ = task.await;
    }
    if let Some(task) = peer_task {
        let _ = task.await;
    }
    let http_result = http_task.await;
    data_dir.release();
    result?;
    match http_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(AgentError::Http(e)),
        Err(e) => Err(AgentError::Http(std::io::Error::other(e))),
    }
}
