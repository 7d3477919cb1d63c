//! `registry`: the registry daemon (`serve`, `dev`) and its admin CLI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use corral_common::logging::LogArgs;
use corral_common::signal::cancel_on_shutdown_signal;
use corral_registry::cli::apply::ApplyArgs;
use corral_registry::cli::audit::AuditArgs;
use corral_registry::cli::events::EventsArgs;
use corral_registry::cli::node::NodeCommand;
use corral_registry::cli::package::PackageCommand;
use corral_registry::cli::rollout::{PatchArgs, RollbackArgs, RolloutCommand};
use corral_registry::cli::secret::SecretCommand;
use corral_registry::cli::server::ServerCommand;
use corral_registry::cli::{CliError, ClientArgs};
use corral_registry::config::{RegistryConfig, ServeArgs, defaults};
use corral_registry::dev::{self, DevOptions};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "registry",
    version,
    about = "The Corral registry and its admin CLI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogArgs,
    /// The admin commands' options (--addr, --token, -o ...), accepted before or after
    /// the subcommand.
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a registry.
    Serve(Box<ServeArgs>),
    /// Try Corral on this machine: a registry on ./.corral/dev.db and an agent for this host.
    Dev(DevArgs),
    /// Nodes: the hosts that joined.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Create or update a server from a spec file.
    Apply {
        #[command(flatten)]
        args: ApplyArgs,
    },
    /// Servers and their instances.
    Server {
        #[command(subcommand)]
        command: ServerCommand,
    },
    /// Packages: the releases of servers.
    Package {
        #[command(subcommand)]
        command: PackageCommand,
    },
    /// Roll a server out to a new release, batch by batch, rolling back on failure.
    Patch {
        #[command(flatten)]
        args: PatchArgs,
    },
    /// Roll a server back to its previous (or a given) release.
    Rollback {
        #[command(flatten)]
        args: RollbackArgs,
    },
    /// Rollouts: patches and rollbacks, past and running.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Per-instance secrets: values delivered as files, never shown.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// TLS: `registry tls init DIR` writes a CA and registry, agent and admin certificates.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Print a shell completion script: `source <(registry completions bash)`.
    Completions { shell: CompletionShell },
    /// The active endpoints of a service name (APP.SERVER.ADAPTER).
    Endpoints { name: String },
    /// Instance state changes, newest last.
    Events {
        #[command(flatten)]
        args: EventsArgs,
    },
    /// Lines of a server's logs (its instances' stdout and stderr), read by their agents.
    Logs {
        #[command(flatten)]
        args: corral_registry::cli::logs::LogsArgs,
    },
    /// The audit log: who changed what, and every refused call, newest last.
    Audit {
        #[command(flatten)]
        args: AuditArgs,
    },
}

/// The shells `registry completions` writes scripts for.
#[derive(Clone, Copy, clap::ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Write a CA and certificates for the registry, agents and admin clients.
    Init(TlsInitArgs),
}

#[derive(Args)]
struct TlsInitArgs {
    /// Where to write ca.pem, registry.pem, agent.pem, admin.pem and their keys.
    dir: PathBuf,
    /// A name or IP clients use to reach the registry (repeatable; localhost and 127.0.0.1 are always in).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Replace certificates already in DIR.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct DevArgs {
    #[arg(long, default_value = defaults::DEV_DB)]
    db: String,
    #[arg(long, default_value = defaults::LISTEN)]
    listen: SocketAddr,
    #[arg(long, default_value = defaults::HTTP)]
    http: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:17892")]
    agent_http: SocketAddr,
    #[arg(long, default_value = "./.corral/agent")]
    data_dir: PathBuf,
    /// Node name of the dev agent [default: the host name].
    #[arg(long)]
    node: Option<String>,
    /// The dev agent's cgroup subtree name, or "off" (as `agent run --cgroup`).
    #[arg(long, env = "CORRAL_CGROUP", default_value = "corral")]
    cgroup: String,
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("registry: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Parses the command line. The admin options are global (so that they may come before
/// the subcommand), which also lets clap accept them after `serve`, `dev` or `tls`: given
/// there on the command line, they are refused rather than silently ignored.
fn parse_cli() -> Cli {
    let mut matches = Cli::command().get_matches();
    let local = matches!(
        matches.subcommand_name(),
        Some("serve" | "dev" | "tls" | "completions")
    );
    if local {
        for (id, flag) in corral_registry::cli::CLIENT_OPTIONS {
            if matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
                let sub = matches.subcommand_name().unwrap_or_default();
                Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!(
                            "{flag} is an option of the admin commands (node, server, apply, ...); \
                             `registry {sub}` does not take it"
                        ),
                    )
                    .exit();
            }
        }
    }
    Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    let cli = parse_cli();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let client = &cli.client;
    let admin = |result| cli_result(corral_registry::cli::finish(result, client));
    match cli.command {
        Command::Serve(args) => {
            cli.log.init();
            let config = match corral_registry::config::load(*args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("registry: {e}");
                    return ExitCode::from(2);
                }
            };
            rt.block_on(serve(config))
        }
        Command::Dev(args) => {
            cli.log.init();
            let opts = DevOptions {
                db: args.db,
                listen: args.listen,
                http: args.http,
                agent_http: args.agent_http,
                data_dir: args.data_dir,
                node: args.node,
                cgroup: args.cgroup,
            };
            rt.block_on(async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(cancel_on_shutdown_signal(shutdown.clone()));
                match dev::run(opts, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("registry dev: {e}");
                        ExitCode::from(e.exit_code())
                    }
                }
            })
        }
        Command::Node { command } => {
            admin(rt.block_on(corral_registry::cli::node::run(command, client)))
        }
        Command::Apply { args } => {
            admin(rt.block_on(corral_registry::cli::apply::apply(args, client)))
        }
        Command::Server { command } => {
            admin(rt.block_on(corral_registry::cli::server::run(command, client)))
        }
        Command::Package { command } => {
            admin(rt.block_on(corral_registry::cli::package::run(command, client)))
        }
        Command::Patch { args } => {
            admin(rt.block_on(corral_registry::cli::rollout::patch(args, client)))
        }
        Command::Rollback { args } => {
            admin(rt.block_on(corral_registry::cli::rollout::rollback(args, client)))
        }
        Command::Rollout { command } => {
            admin(rt.block_on(corral_registry::cli::rollout::rollouts(command, client)))
        }
        Command::Tls {
            command: TlsCommand::Init(a),
        } => match corral_registry::tls::init(&a.dir, &a.hosts, a.force) {
            Ok(files) => {
                for f in files {
                    println!("wrote {}", f.display());
                }
                println!(
                    "\nregistry: --tls-cert {d}/registry.pem --tls-key {d}/registry.key --tls-client-ca {d}/ca.pem\n\
                     agents:   --locator https://HOST:17890 --tls-ca {d}/ca.pem --tls-cert {d}/agent.pem --tls-key {d}/agent.key\n\
                     admin:    --addr https://HOST:17890 --ca {d}/ca.pem --token TOKEN",
                    d = a.dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("registry tls init: {e}");
                ExitCode::from(2)
            }
        },
        Command::Completions { shell } => {
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            // Written whole, so that a closed pipe (`| head`) is an error to report, not a
            // panic inside the generator.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "registry", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("registry completions: cannot write the script: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Endpoints { name } => {
            admin(rt.block_on(corral_registry::cli::server::endpoints(name, client)))
        }
        Command::Secret { command } => {
            admin(rt.block_on(corral_registry::cli::secret::run(command, client)))
        }
        Command::Events { args } => {
            admin(rt.block_on(corral_registry::cli::events::events(args, client)))
        }
        Command::Audit { args } => {
            admin(rt.block_on(corral_registry::cli::audit::audit(args, client)))
        }
        // Ctrl-C (or SIGTERM) ends `logs -f` cleanly: exit 0, and the closed call stops
        // the stream on the registry and the agent.
        Command::Logs { args } => admin(rt.block_on(async {
            let stop = CancellationToken::new();
            tokio::spawn(cancel_on_shutdown_signal(stop.clone()));
            tokio::select! {
                () = stop.cancelled() => Ok(()),
                r = corral_registry::cli::logs::logs(args, client) => r,
            }
        })),
    }
}

fn cli_result(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("registry: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn serve(config: RegistryConfig) -> ExitCode {
    let grpc = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "registry: cannot listen on {} (--listen): {e}",
                config.listen
            );
            return ExitCode::from(2);
        }
    };
    let http = match tokio::net::TcpListener::bind(config.http).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("registry: cannot listen on {} (--http): {e}", config.http);
            return ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_shutdown_signal(shutdown.clone()));
    // systemd (Type=notify): READY=1 once /health answers (the database is open),
    // watchdog pings, STOPPING=1 on shutdown. A no-op without NOTIFY_SOCKET.
    let http_addr = http.local_addr().unwrap_or(config.http);
    let notifier = tokio::spawn(corral_common::notify::Notifier::from_env().run(
        corral_common::health::wait_healthy(http_addr),
        shutdown.clone(),
    ));
    let result = corral_registry::run(config, grpc, http, shutdown.clone()).await;
    shutdown.cancel();
    let _ = notifier.await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(cause = %e, "registry stopped");
            eprintln!("registry: {e}");
            // A database that cannot be opened is bad input: name it and exit 2.
            match e {
                corral_registry::server::RunError::Store(_)
                | corral_registry::server::RunError::Tls(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
