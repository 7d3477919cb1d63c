//! `registry server history|diff|revert`: the numbered versions of a server's spec, a
//! unified diff between two of them, and a version applied again.

use clap::Subcommand;
use corral_proto::v1::{RevertServerRequest, ServerDiffRequest, ServerHistoryRequest};
use serde_json::{Value, json};

use super::output::{print_table, time_ms};
use super::{CliError, Client, ClientArgs, Format};

/// Flattened into `registry server`.
#[derive(Subcommand, Debug)]
pub enum HistoryCommand {
    /// The versions of a server's spec, oldest first: one for every apply, expand, patch,
    /// rollback, undeploy and revert that changed it (the newest 50 are kept).
    History {
        /// APP.SERVER
        server: String,
    },
    /// A unified diff of two versions of a server's spec (V2: the current version).
    Diff {
        /// APP.SERVER
        server: String,
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        v1: u64,
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        v2: Option<u64>,
    },
    /// Apply version V of a server's spec again, exactly as `apply` would (checks, rolling
    /// config restarts); it is stored as a new version. --dry-run prints the diff from the
    /// current spec and changes nothing.
    Revert {
        /// APP.SERVER
        server: String,
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        version: u64,
        /// Print the diff and what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(
    client: &mut Client,
    cmd: HistoryCommand,
    args: &ClientArgs,
) -> Result<(), CliError> {
    match cmd {
        HistoryCommand::History { server } => history(client, server, args).await,
        HistoryCommand::Diff { server, v1, v2 } => {
            let resp = client
                .server_diff(ServerDiffRequest {
                    server,
                    from: v1,
                    to: v2,
                })
                .await?
                .into_inner();
            if args.output == Format::Json {
                println!(
                    "{}",
                    json!({"server": resp.server, "from": resp.from, "to": resp.to,
                           "identical": resp.identical, "diff": resp.diff})
                );
            } else if resp.identical {
                println!(
                    "{}: versions {} and {} are identical",
                    resp.server, resp.from, resp.to
                );
            } else {
                print!("{}", resp.diff);
            }
            Ok(())
        }
        HistoryCommand::Revert {
            server,
            version,
            dry_run,
        } => {
            let resp = client
                .revert_server(RevertServerRequest {
                    server,
                    version,
                    dry_run,
                })
                .await?
                .into_inner();
            if args.output == Format::Json {
                println!(
                    "{}",
                    json!({"server": resp.server, "reverted_to": version, "dry_run": resp.dry_run,
                           "changes": resp.changes, "diff": resp.diff,
                           "version": (resp.version > 0).then_some(resp.version)})
                );
                return Ok(());
            }
            if resp.dry_run {
                println!(
                    "dry run, nothing changed; reverting {} to version {version} would change the spec:",
                    resp.server
                );
                print!("{}", resp.diff);
            }
            if resp.changes.is_empty() {
                println!(
                    "{}: no change (the spec already is version {version}; no new version stored)",
                    resp.server
                );
                return Ok(());
            }
            if resp.dry_run {
                println!("and would:");
            } else {
                println!("reverted {} to version {version}:", resp.server);
            }
            for c in &resp.changes {
                println!("  {c}");
            }
            if resp.version > 0 {
                println!("stored as version {}", resp.version);
            }
            Ok(())
        }
    }
}

async fn history(client: &mut Client, server: String, args: &ClientArgs) -> Result<(), CliError> {
    let resp = client
        .server_history(ServerHistoryRequest { server })
        .await?
        .into_inner();
    if args.output == Format::Json {
        let versions: Vec<Value> = resp
            .versions
            .iter()
            .map(|v| {
                json!({"version": v.version, "at": time_ms(v.at_ms), "at_ms": v.at_ms,
                       "action": v.action, "summary": v.summary})
            })
            .collect();
        println!(
            "{}",
            json!({"server": resp.server, "deployed": resp.deployed, "versions": versions})
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = resp
        .versions
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                time_ms(v.at_ms),
                v.action.clone(),
                v.summary.clone(),
            ]
        })
        .collect();
    print_table(&["VERSION", "TIME", "ACTION", "SUMMARY"], &rows);
    match (resp.versions.last(), resp.deployed) {
        (None, _) => println!(
            "{}: no versions yet (the next apply that changes it stores one)",
            resp.server
        ),
        (Some(last), true) => println!("{}: current version {}", resp.server, last.version),
        (Some(last), false) => println!(
            "{} is not deployed now (removed after version {n}); `registry server revert {} {n}` creates it again",
            resp.server,
            resp.server,
            n = last.version
        ),
    }
    Ok(())
}
