//! `registry dev`: a registry on an SQLite file and an agent for this host, in one
//! process, for trying Corral out on one machine.
//!
//! The only module of the registry that uses the agent crate. It runs the agent as a
//! library (`corral_agent::run`) rather than starting the `agent` binary as a child: one
//! process is what `registry dev` promises (one binary to try Corral, Ctrl-C stops both,
//! one log on the terminal), it needs no `agent` binary found beside this one, and the
//! agent's settings are built here as a typed `AgentConfig` instead of a command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use corral_agent::AgentConfig;
use corral_agent::config::{defaults as agent_defaults, parse_locator};
use corral_common::archive::Limits;
use corral_common::fs::absolute;
use corral_common::tls::ClientTls;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{RegistryConfig, defaults};

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(
        "cannot listen on {addr} ({what}): {source}; is another registry running? pass --{flag} to choose another address"
    )]
    Listen {
        what: &'static str,
        flag: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Agent(#[from] corral_agent::config::ConfigError),
    #[error("registry: {0}")]
    Registry(#[from] crate::server::RunError),
    #[error("agent: {0}")]
    AgentRun(#[from] corral_agent::AgentError),
}

impl DevError {
    pub fn exit_code(&self) -> u8 {
        match self {
            DevError::Listen { .. } | DevError::Agent(_) => 2,
            DevError::AgentRun(e) => e.exit_code(),
            DevError::Registry(_) => 1,
        }
    }
}

pub struct DevOptions {
    pub db: String,
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub agent_http: SocketAddr,
    pub data_dir: PathBuf,
    pub node: Option<String>,
    /// The agent's cgroup subtree name, or "off".
    pub cgroup: String,
}

async fn bind(
    what: &'static str,
    flag: &'static str,
    addr: SocketAddr,
) -> Result<TcpListener, DevError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DevError::Listen {
            what,
            flag,
            addr,
            source,
        })
}

/// `sqlite://PATH` with PATH made absolute, so messages show where the file really is.
fn absolute_sqlite(url: &str) -> String {
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.starts_with('/') && !path.starts_with(':') => {
            let (file, query) = path
                .split_once('?')
                .map_or((path, None), |(f, q)| (f, Some(q)));
            let abs = absolute(PathBuf::from(file));
            match query {
                Some(q) => format!("sqlite://{}?{q}", abs.display()),
                None => format!("sqlite://{}", abs.display()),
            }
        }
        _ => url.to_string(),
    }
}

/// What `registry dev` prints: where everything is, and commands that work as printed
/// (the registry binary by its full path, with `--addr` when it is not the default).
fn banner(
    node: &str,
    listen: SocketAddr,
    http: SocketAddr,
    agent_http: SocketAddr,
    db: &str,
    data_dir: &std::path::Path,
) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "registry".into());
    let dir = std::path::Path::new(&exe)
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let addr = if listen.to_string() == defaults::LISTEN {
        String::new()
    } else {
        format!(" --addr http://{listen}")
    };
    format!(
        "Corral dev: a registry and an agent for this host (node {node:?}).\n\
         \n  registry gRPC   http://{listen}   (the CLI's --addr)\
         \n  dashboard       http://{http}/\
         \n  registry HTTP   http://{http}/health  http://{http}/metrics\
         \n  agent HTTP      http://{agent_http}/health\
         \n  database        {db}\
         \n  agent data dir  {data}\n\
         \nRuns without admin tokens, services as the user running it: for one machine only.\
         \nTry next, in another terminal:\
         \n  {exe} node list{addr}\
         \n  {exe} node show {node}{addr}\
         \n(or put the binaries on your PATH: export PATH=\"{dir}:$PATH\", then `registry node list`)\n\
         \nCtrl-C stops both.",
        db = crate::store::redact_url(db),
        data = data_dir.display(),
    )
}

pub async fn run(opts: DevOptions, shutdown: CancellationToken) -> Result<(), DevError> {
    let grpc = bind("gRPC", "listen", opts.listen).await?;
    let http = bind("HTTP", "http", opts.http).await?;
    let agent_http = bind("agent HTTP", "agent-http", opts.agent_http).await?;
    let listen = grpc.local_addr().unwrap_or(opts.listen);
    let node = match opts.node {
        Some(node) => {
            corral_proto::names::check_node_name(&node)
                .map_err(corral_agent::config::ConfigError::NodeName)?;
            node
        }
        None => corral_agent::facts::default_node_name()
            .map_err(corral_agent::config::ConfigError::NodeName)?,
    };
    let data_dir = absolute(opts.data_dir.clone());
    let db = absolute_sqlite(&opts.db);
    let agent_config = AgentConfig {
        locators: parse_locator(&format!("http://{listen}"))?,
        node: node.clone(),
        advertise_ip: listen.ip(),
        data_dir: data_dir.clone(),
        http: opts.agent_http,
        reconnect_initial: agent_defaults::RECONNECT_INITIAL,
        reconnect_max: agent_defaults::RECONNECT_MAX,
        connect_timeout: agent_defaults::CONNECT_TIMEOUT,
        // Dev mode is one command for one terminal: Ctrl-C stops everything it started.
        stop_services_on_exit: true,
        log_max_size: agent_defaults::LOG_MAX_SIZE,
        log_keep: agent_defaults::LOG_KEEP,
        keep_releases: agent_defaults::KEEP_RELEASES,
        max_unpacked_size: agent_defaults::MAX_UNPACKED_SIZE,
        max_package_entries: agent_defaults::MAX_PACKAGE_ENTRIES,
        join_token: None,
        // Trying Corral out on one's own machine: services run as whoever runs `dev`.
        allow_root: true,
        tls: ClientTls::default(),
        // Off: port 8600 may be taken on a developer's machine (Consul's default too).
        dns: None,
        dns_ttl: agent_defaults::DNS_TTL,
        discovery_idle: agent_defaults::DISCOVERY_IDLE,
        cgroup: opts.cgroup.clone(),
        // One node: nobody to serve packages to.
        peer_port: None,
    };
    let registry_config = RegistryConfig {
        listen,
        http: opts.http,
        db: db.clone(),
        heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
        node_timeout: defaults::NODE_TIMEOUT,
        flush_interval: defaults::FLUSH_INTERVAL,
        event_retention: defaults::EVENT_RETENTION,
        max_package_size: defaults::MAX_PACKAGE_SIZE,
        package_limits: Limits::default(),
        download_rate: None,
        // One machine, loopback only: no tokens, and the banner says so.
        admin_tokens: Vec::new(),
        join_token: None,
        public_discovery: true,
        no_auth: false,
        tls: None,
        http_tls: None,
        secret_key_file: None,
        secret_key: None,
        advertise: None,
    };
    println!(
        "{}",
        banner(&node, listen, opts.http, opts.agent_http, &db, &data_dir)
    );
    let registry = tokio::spawn(crate::server::run(
        registry_config,
        grpc,
        http,
        shutdown.clone(),
    ));
    // The agent retries until the registry has opened its database and answers.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let agent_result = corral_agent::run(agent_config, agent_http, shutdown.clone()).await;
    shutdown.cancel();
    let registry_result = registry
        .await
        .unwrap_or_else(|e| Err(crate::server::RunError::Http(std::io::Error::other(e))));
    agent_result?;
    registry_result?;
    Ok(())
}
