//! `registry patch`, `registry rollback` and `registry rollout list|status`: rolling a
//! release out (or back) in batches, with progress bars while it runs.

use std::time::Duration;

use clap::{Args, Subcommand};
use corral_proto::v1::{GetRolloutRequest, ListRolloutsRequest, Rollout, StartRolloutRequest};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::output::{print_table, time_ms};
use super::{CliError, ClientArgs, Format, connect};

#[derive(Args, Debug)]
pub struct PatchArgs {
    /// APP.SERVER
    pub server: String,
    #[arg(long)]
    pub version: String,
    /// Only these nodes (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = super::args::non_empty)]
    pub node: Vec<String>,
    /// Instances switched at once, at least 1 [default: 1].
    #[arg(long)]
    pub batch: Option<u32>,
    /// How long each instance must run on the new release; 0s: running is enough [default: 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub min_healthy: Option<Duration>,
    /// How long an instance may take to get there before the rollout fails [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub deadline: Option<Duration>,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// APP.SERVER
    pub server: String,
    /// The version to go back to [default: the previous one].
    #[arg(long, value_parser = super::args::non_empty)]
    pub to: Option<String>,
    /// Instances switched at once, at least 1 [default: 1].
    #[arg(long)]
    pub batch: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Recent rollouts, newest first.
    List {
        /// Only this server's (APP.SERVER).
        #[arg(long, value_parser = super::args::non_empty)]
        server: Option<String>,
    },
    /// One rollout with its instances.
    Status { id: i64 },
}

fn rollout_json(r: &Rollout) -> Value {
    json!({"id": r.id, "server": r.server, "to_version": r.to_version, "state": r.state, "error": r.error,
           "batch": r.batch, "min_healthy_ms": r.min_healthy_ms, "deadline_ms": r.deadline_ms, "created_at": time_ms(r.created_at_ms), "updated_at": time_ms(r.updated_at_ms),
           "instances": r.instances.iter().map(|i| json!({"node": i.node, "batch": i.batch, "from_version": i.from_version,
               "phase": i.phase, "percent": i.percent, "error": i.error})).collect::<Vec<_>>()})
}

/// Follows a rollout to its end with a progress bar per instance; Err when it failed.
async fn follow(client: &mut super::Client, id: i64, args: &ClientArgs) -> Result<(), CliError> {
    let mut stream = client
        .watch_rollout(GetRolloutRequest { id })
        .await?
        .into_inner();
    let multi = MultiProgress::new();
    if args.output == Format::Json {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{prefix:>24} [{bar:25}] {pos:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut bars: Vec<(String, ProgressBar)> = Vec::new();
    let mut last = None;
    while let Some(r) = stream.message().await? {
        for i in &r.instances {
            let bar = match bars.iter().find(|(n, _)| n == &i.node) {
                Some((_, b)) => b.clone(),
                None => {
                    let b = multi.add(
                        ProgressBar::new(100)
                            .with_style(style.clone())
                            .with_prefix(format!("{} (batch {})", i.node, i.batch)),
                    );
                    bars.push((i.node.clone(), b.clone()));
                    b
                }
            };
            bar.set_position(u64::from(i.percent));
            bar.set_message(if i.error.is_empty() {
                i.phase.clone()
            } else {
                format!("{}: {}", i.phase, i.error)
            });
        }
        let done = matches!(r.state.as_str(), "succeeded" | "failed" | "interrupted");
        last = Some(r);
        if done {
            break;
        }
    }
    for (_, b) in &bars {
        b.finish();
    }
    let Some(r) =
        last.filter(|r| matches!(r.state.as_str(), "succeeded" | "failed" | "interrupted"))
    else {
        // The registry ends a watch early only when it shuts down; the rollout itself
        // lives in the database and goes on.
        return Err(CliError::Unreachable {
            addr: args.addr.clone(),
            reason: format!(
                "it ended the stream of rollout {id} before the rollout ended (it is shutting \
                 down); see `registry rollout status {id}` once a registry answers"
            ),
        });
    };
    if args.output == Format::Json {
        println!("{}", rollout_json(&r));
    } else {
        println!(
            "rollout {} of {} to {}: {}",
            r.id, r.server, r.to_version, r.state
        );
    }
    match r.state.as_str() {
        "succeeded" => Ok(()),
        _ => Err(CliError::Failed(format!(
            "rollout {} {}: {}",
            r.id, r.state, r.error
        ))),
    }
}

pub async fn patch(a: PatchArgs, args: &ClientArgs) -> Result<(), CliError> {
    let mut client = connect(args).await?;
    // Only what was given is sent: the registry applies its defaults to the rest and
    // takes (or refuses) an explicit 0 as what it is.
    let r = client
        .start_rollout(StartRolloutRequest {
            server: a.server,
            version: a.version,
            nodes: a.node,
            batch: a.batch,
            min_healthy_ms: a.min_healthy.map(super::args::millis),
            deadline_ms: a.deadline.map(super::args::millis),
            rollback: false,
        })
        .await?
        .into_inner();
    if args.output == Format::Table {
        println!(
            "rollout {}: {} to {} in batches of {}",
            r.id, r.server, r.to_version, r.batch
        );
    }
    follow(&mut client, r.id, args).await
}

pub async fn rollback(a: RollbackArgs, args: &ClientArgs) -> Result<(), CliError> {
    let mut client = connect(args).await?;
    let r = client
        .start_rollout(StartRolloutRequest {
            server: a.server,
            version: a.to.unwrap_or_default(),
            nodes: Vec::new(),
            batch: a.batch,
            min_healthy_ms: None,
            deadline_ms: None,
            rollback: true,
        })
        .await?
        .into_inner();
    if args.output == Format::Table {
        println!(
            "rollout {}: rolling {} back to {}",
            r.id, r.server, r.to_version
        );
    }
    follow(&mut client, r.id, args).await
}

pub async fn rollouts(cmd: RolloutCommand, args: &ClientArgs) -> Result<(), CliError> {
    let mut client = connect(args).await?;
    match cmd {
        RolloutCommand::List { server } => {
            let list = client
                .list_rollouts(ListRolloutsRequest {
                    server: server.unwrap_or_default(),
                })
                .await?
                .into_inner()
                .rollouts;
            if args.output == Format::Json {
                println!("{}", Value::Array(list.iter().map(rollout_json).collect()));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.server.clone(),
                        r.to_version.clone(),
                        r.state.clone(),
                        time_ms(r.created_at_ms),
                        r.error.clone(),
                    ]
                })
                .collect();
            print_table(
                &["ID", "SERVER", "VERSION", "STATE", "STARTED", "ERROR"],
                &rows,
            );
        }
        RolloutCommand::Status { id } => {
            let r = client
                .get_rollout(GetRolloutRequest { id })
                .await?
                .into_inner();
            if args.output == Format::Json {
                println!("{}", rollout_json(&r));
                return Ok(());
            }
            println!(
                "rollout {} of {} to {}: {}{}",
                r.id,
                r.server,
                r.to_version,
                r.state,
                if r.error.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", r.error)
                }
            );
            let rows: Vec<Vec<String>> = r
                .instances
                .iter()
                .map(|i| {
                    vec![
                        i.node.clone(),
                        i.batch.to_string(),
                        i.from_version.clone(),
                        i.phase.clone(),
                        format!("{}%", i.percent),
                        i.error.clone(),
                    ]
                })
                .collect();
            print_table(
                &["NODE", "BATCH", "FROM", "PHASE", "PROGRESS", "ERROR"],
                &rows,
            );
        }
    }
    Ok(())
}
