//! `agent`: parses flags, sets up tracing and signals, and calls [`corral_agent::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use corral_agent::config::{AgentConfig, Overrides};
use corral_common::logging::LogArgs;
use corral_common::signal::cancel_on_shutdown_signal;
use corral_common::tls::ClientTls;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "agent",
    version,
    about = "The Corral agent: joins the registry and runs this host's services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Join the registry and serve this host until stopped.
    Run(Box<RunArgs>),
    /// For cron or a systemd timer: exit 0 if the local agent answers on its /health;
    /// otherwise start it again (as it was started) and exit 1.
    Check(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// The agent's data dir, where `agent run` records how to reach and restart it.
    #[arg(long, env = "CORRAL_DATA_DIR", default_value = corral_agent::config::defaults::DATA_DIR)]
    data_dir: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    /// Config file [default: /etc/corral/agent.toml, if present].
    #[arg(long, env = "CORRAL_CONFIG")]
    config: Option<PathBuf>,
    /// Registry addresses, comma-separated, tried in turn.
    #[arg(long, env = "CORRAL_LOCATOR")]
    locator: Option<String>,
    /// Node name [default: the host name].
    #[arg(long, env = "CORRAL_NODE")]
    node: Option<String>,
    /// The IP other hosts reach this node's services on [default: the IP that routes to the registry].
    #[arg(long, env = "CORRAL_ADVERTISE_IP")]
    advertise_ip: Option<String>,
    /// Where the agent keeps its identity, packages and instances [default: /var/lib/corral].
    #[arg(long, env = "CORRAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address for /health and /metrics [default: 127.0.0.1:17892].
    #[arg(long, env = "CORRAL_HTTP")]
    http: Option<String>,
    /// Stop every service when the agent exits (default: leave them running for the next agent to adopt).
    #[arg(long, env = "CORRAL_STOP_SERVICES_ON_EXIT")]
    stop_services_on_exit: bool,
    /// The registry's join token, needed for this node's first join.
    #[arg(long, env = "CORRAL_JOIN_TOKEN")]
    join_token: Option<String>,
    /// Let services run as root (by default a service needs `user = "..."` when the agent is root).
    #[arg(long, env = "CORRAL_ALLOW_ROOT")]
    allow_root: bool,
    /// CA (PEM) that signed the registry's certificate, for https:// locators.
    #[arg(long, env = "CORRAL_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// This agent's client certificate (PEM), for registries that require mutual TLS.
    #[arg(long, env = "CORRAL_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// This agent's client key (PEM).
    #[arg(long, env = "CORRAL_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Where to serve DNS for the `corral.` zone, UDP and TCP, or "off" [default: 127.0.0.1:8600].
    #[arg(long, env = "CORRAL_DNS")]
    dns: Option<String>,
    /// The TTL of DNS answers, whole seconds [default: 5s].
    #[arg(long, env = "CORRAL_DNS_TTL", value_parser = humantime::parse_duration)]
    dns_ttl: Option<std::time::Duration>,
    /// Stop watching a name no client asked this agent for in this long [default: 10m].
    #[arg(long, env = "CORRAL_DISCOVERY_IDLE", value_parser = humantime::parse_duration)]
    discovery_idle: Option<std::time::Duration>,
    /// The name of the agent's cgroup subtree (instances run in OWN/NAME/NODE/APP.SERVER/ORDINAL), or "off" [default: corral].
    #[arg(long, env = "CORRAL_CGROUP")]
    cgroup: Option<String>,
    /// The port other nodes fetch packages from, on the advertise IP (0: any free one), or "off" [default: 0].
    #[arg(long, env = "CORRAL_PEER_PORT")]
    peer_port: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.log.init();
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Check(args) => check(args),
    }
}

/// `agent check`: 0 when the agent answered, 1 when it did not (whether or not it
/// answers again now), 2 when there is no run record to go by.
fn check(args: CheckArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agent check: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(corral_agent::check::check(&args.data_dir)) {
        Ok(verdict @ corral_agent::check::Verdict::Healthy { .. }) => {
            println!("agent check: {verdict}");
            ExitCode::from(verdict.exit_code())
        }
        Ok(verdict) => {
            eprintln!("agent check: {verdict}");
            ExitCode::from(verdict.exit_code())
        }
        Err(e) => {
            eprintln!("agent check: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `agent run`: resolves the config, binds the HTTP side and runs the agent.
fn run(args: RunArgs) -> ExitCode {
    let config = match AgentConfig::resolve(Overrides {
        config: args.config,
        locator: args.locator,
        node: args.node,
        advertise_ip: args.advertise_ip,
        data_dir: args.data_dir,
        http: args.http,
        stop_services_on_exit: args.stop_services_on_exit,
        join_token: args.join_token,
        allow_root: args.allow_root,
        cgroup: args.cgroup,
        peer_port: args.peer_port,
        tls: ClientTls {
            ca: args.tls_ca,
            cert: args.tls_cert,
            key: args.tls_key,
        },
        dns: args.dns,
        dns_ttl: args.dns_ttl,
        discovery_idle: args.discovery_idle,
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let http = match tokio::net::TcpListener::bind(config.http).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("agent: cannot listen on {} for HTTP: {e}", config.http);
                return ExitCode::from(2);
            }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_shutdown_signal(shutdown.clone()));
        match corral_agent::run(config, http, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(cause = %e, "agent stopped");
                eprintln!("agent: {e}");
                ExitCode::from(e.exit_code())
            }
        }
    })
}
