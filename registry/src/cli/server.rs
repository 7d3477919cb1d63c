//! `registry server ...` and `registry endpoints`.

use clap::{Args, Subcommand};
use corral_proto::v1::{
    ExpandRequest, ExportServerRequest, FindRequest, InstanceInfo, ListServersRequest,
    ServerStatusRequest,
};
use corral_proto::v1::{
    HealthStatus, InstallState, InstanceState, NodeState, RunState, ServerAction,
};
use corral_proto::wire::name_of;
use serde_json::{Value, json};

use super::control::{Control, WaitArgs, control};
pub use super::output::usage_cells;
use super::output::{ago_ms, print_table, time_ms};
use super::{CliError, ClientArgs, Format, connect};
use crate::store::now_ms;

#[derive(Subcommand, Debug)]
pub enum ServerCommand {
    /// List servers with their instances' states.
    List,
    /// The instances of a server with their actual state.
    Status { server: String },
    /// Start the instances (of one node with --node).
    Start(Control),
    /// Stop the instances: stop signal, then SIGKILL to the group after the timeout.
    Stop(Control),
    /// Restart the instances, exactly once each.
    Restart(Control),
    /// Stop and remove the instances (the server itself with its last instance).
    Undeploy(Target),
    /// Add instances on more nodes: ports allocated, configs rendered, in one
    /// transaction; --preview only shows what would happen.
    Expand(ExpandArgs),
    /// Print the live spec as TOML that `apply -f` accepts and that changes nothing
    /// (with what changed since the last apply, as comments).
    Export { server: String },
    #[command(flatten)]
    History(super::history::HistoryCommand),
}

#[derive(Args, Debug)]
pub struct ExpandArgs {
    /// APP.SERVER
    pub server: String,
    /// The nodes to add (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub to: Vec<String>,
    /// Copy this node's instance settings (release, running or stopped) instead of the spec's.
    #[arg(long, value_parser = super::args::non_empty)]
    pub from: Option<String>,
    /// Show the plan and change nothing.
    #[arg(long)]
    pub preview: bool,
}

#[derive(Args, Debug)]
pub struct Target {
    /// APP.SERVER
    pub server: String,
    /// Only this node's instance.
    #[arg(long, value_parser = super::args::non_empty)]
    pub node: Option<String>,
}

pub fn instance_json(i: &InstanceInfo) -> Value {
    json!({
        "server": i.server,
        "node": i.node,
        "node_state": node_state(i),
        "desired": name_of::<RunState>(i.desired),
        "state": name_of::<InstanceState>(i.state),
        "pid": if i.pid == 0 { Value::Null } else { json!(i.pid) },
        "restarts": i.restarts,
        "started_at": time_ms(i.started_at_ms),
        "started_at_ms": i.started_at_ms,
        "last_exit": i.last_exit,
        "last_error": i.last_error,
        "version": i.version,
        "healthy": match HealthStatus::try_from(i.health) {
            Ok(HealthStatus::Healthy) => json!(true),
            Ok(HealthStatus::Unhealthy) => json!(false),
            _ => Value::Null,
        },
        "health": name_of::<HealthStatus>(i.health),
        "health_error": i.health_error,
        "install": i.install.as_ref().map(|x| json!({
            "version": x.version,
            "state": name_of::<InstallState>(x.state),
            "percent": x.percent,
            "error": x.error,
        })),
        "reported_at_ms": i.reported_at_ms,
        "ordinal": i.ordinal,
        "config_hold": i.config_hold,
        "usage": i.usage.as_ref().map(|u| json!({
            "cpu_seconds": u.cpu_seconds,
            "cpu_throttled_seconds": u.cpu_throttled_seconds,
            "memory_bytes": u.memory_bytes,
            "memory_peak_bytes": u.memory_peak_bytes,
            "pids": u.pids,
            "oom_kills": u.oom_kills,
        })),
    })
}

/// The STATE cell of an instance: its state, and its node's when that is not up.
pub fn state_cell(i: &InstanceInfo) -> String {
    let state = name_of::<InstanceState>(i.state);
    if i.node_state == i32::from(NodeState::Up) {
        state
    } else {
        format!("{state} (node {})", node_state(i))
    }
}

/// The state of an instance's node; "not joined" for a node that never joined.
fn node_state(i: &InstanceInfo) -> String {
    if i.node_state == 0 {
        "not joined".into()
    } else {
        name_of::<NodeState>(i.node_state)
    }
}

/// The LAST ERROR cell: the instance's error, else why its health check fails.
pub fn error_cell(i: &InstanceInfo) -> String {
    if !i.last_error.is_empty() {
        i.last_error.clone()
    } else if !i.health_error.is_empty() {
        format!("health check: {}", i.health_error)
    } else if !i.config_hold.is_empty() {
        format!(
            "config {} held: it restarted the instance too often (config_flapping)",
            i.config_hold
        )
    } else {
        String::new()
    }
}

pub fn pid_cell(pid: u32) -> String {
    if pid == 0 {
        String::new()
    } else {
        pid.to_string()
    }
}

pub async fn run(cmd: ServerCommand, args: &ClientArgs) -> Result<(), CliError> {
    let mut client = connect(args).await?;
    let (action, target, wait) = match cmd {
        ServerCommand::List => {
            let servers = client
                .list_servers(ListServersRequest {})
                .await?
                .into_inner()
                .servers;
            if args.output == Format::Json {
                let all: Vec<Value> = servers
                    .iter()
                    .map(|s| json!({"server": format!("{}.{}", s.app, s.server), "app": s.app, "name": s.server,
                                    "nodes": s.nodes, "states": s.states, "updated_at": time_ms(s.updated_at_ms)}))
                    .collect();
                println!("{}", Value::Array(all));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = servers
                .iter()
                .map(|s| {
                    let mut states: Vec<String> =
                        s.states.iter().map(|(k, v)| format!("{v} {k}")).collect();
                    states.sort();
                    vec![
                        format!("{}.{}", s.app, s.server),
                        s.nodes.len().to_string(),
                        states.join(", "),
                        time_ms(s.updated_at_ms),
                    ]
                })
                .collect();
            print_table(&["SERVER", "INSTANCES", "STATES", "UPDATED"], &rows);
            return Ok(());
        }
        ServerCommand::Status { server } => {
            let resp = client
                .server_status(ServerStatusRequest { server })
                .await?
                .into_inner();
            if args.output == Format::Json {
                println!(
                    "{}",
                    Value::Array(resp.instances.iter().map(instance_json).collect())
                );
                return Ok(());
            }
            let now = now_ms();
            let rows: Vec<Vec<String>> = resp
                .instances
                .iter()
                .map(|i| {
                    let [cpu, memory, pids] = usage_cells(i);
                    vec![
                        i.node.clone(),
                        i.ordinal.to_string(),
                        state_cell(i),
                        name_of::<RunState>(i.desired),
                        pid_cell(i.pid),
                        i.restarts.to_string(),
                        if i.started_at_ms > 0 {
                            ago_ms(i.started_at_ms, now)
                        } else {
                            String::new()
                        },
                        i.version.clone(),
                        name_of::<HealthStatus>(i.health),
                        cpu,
                        memory,
                        pids,
                        i.last_exit.clone(),
                        error_cell(i),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NODE",
                    "ORDINAL",
                    "STATE",
                    "DESIRED",
                    "PID",
                    "RESTARTS",
                    "STARTED",
                    "VERSION",
                    "HEALTH",
                    "CPU",
                    "MEMORY",
                    "PIDS",
                    "LAST EXIT",
                    "LAST ERROR",
                ],
                &rows,
            );
            return Ok(());
        }
        ServerCommand::Expand(a) => return expand(&mut client, a, args).await,
        ServerCommand::Export { server } => {
            let resp = client
                .export_server(ExportServerRequest { server })
                .await?
                .into_inner();
            if args.output == Format::Json {
                println!(
                    "{}",
                    json!({"spec_toml": resp.spec_toml, "drift": resp.drift})
                );
            } else {
                for line in &resp.drift {
                    println!("# since the last apply: {line}");
                }
                print!("{}", resp.spec_toml);
            }
            return Ok(());
        }
        ServerCommand::History(c) => return super::history::run(&mut client, c, args).await,
        ServerCommand::Start(c) => (ServerAction::Start, c.target, c.wait),
        ServerCommand::Stop(c) => (ServerAction::Stop, c.target, c.wait),
        ServerCommand::Restart(c) => (ServerAction::Restart, c.target, c.wait),
        ServerCommand::Undeploy(t) => (ServerAction::Undeploy, t, WaitArgs::default()),
    };
    control(&mut client, action, target, wait, args).await
}

async fn expand(
    client: &mut super::Client,
    a: ExpandArgs,
    args: &ClientArgs,
) -> Result<(), CliError> {
    let resp = client
        .expand(ExpandRequest {
            server: a.server.clone(),
            nodes: a.to,
            from: a.from.unwrap_or_default(),
            preview: a.preview,
        })
        .await?
        .into_inner();
    if args.output == Format::Json {
        let rows: Vec<Value> = resp
            .rows
            .iter()
            .map(|r| json!({"node": r.node, "adapter": r.adapter, "bind": r.bind, "port": r.port, "exists": r.exists}))
            .collect();
        println!(
            "{}",
            json!({"server": a.server, "preview": a.preview, "rows": rows, "added": resp.added})
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = resp
        .rows
        .iter()
        .map(|r| {
            vec![
                r.node.clone(),
                r.adapter.clone(),
                r.bind.clone(),
                if r.port == 0 {
                    "-".into()
                } else {
                    r.port.to_string()
                },
                if r.exists { "yes".into() } else { "no".into() },
            ]
        })
        .collect();
    print_table(&["NODE", "ADAPTER", "BIND", "PORT", "ALREADY THERE"], &rows);
    if a.preview {
        println!("preview: nothing changed");
    } else if resp.added.is_empty() {
        println!("{}: no change (already on every node named)", a.server);
    } else {
        println!("expanded {} to {}", a.server, resp.added.join(", "));
    }
    Ok(())
}

/// `registry endpoints APP.SERVER.ADAPTER`
pub async fn endpoints(name: String, args: &ClientArgs) -> Result<(), CliError> {
    let mut query = super::connect_query(args).await?;
    let resp = query
        .find(FindRequest {
            name,
            ..Default::default()
        })
        .await?
        .into_inner();
    if args.output == Format::Json {
        let all: Vec<Value> = resp
            .endpoints
            .iter()
            .map(corral_agent::discovery::http::endpoint_json)
            .collect();
        println!("{}", Value::Array(all));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = resp
        .endpoints
        .iter()
        .map(|e| {
            let meta: Vec<String> = e.meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                e.node.clone(),
                e.host.clone(),
                e.port.to_string(),
                e.weight.to_string(),
                e.tags.join(","),
                meta.join(","),
            ]
        })
        .collect();
    print_table(&["NODE", "HOST", "PORT", "WEIGHT", "TAGS", "META"], &rows);
    Ok(())
}
