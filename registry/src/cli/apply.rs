//! `registry apply -f FILE`: a spec from a file, applied (or with `--dry-run`, what it
//! would do).

use std::path::PathBuf;

use clap::Args;
use corral_proto::v1::ApplyRequest;
use serde_json::json;

use super::{CliError, ClientArgs, Format, connect};

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The spec file (TOML, one server).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Print what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Apply even though it undoes an expand, patch, rollback or undeploy made since the
    /// server's last apply.
    #[arg(long)]
    pub force: bool,
}

pub async fn apply(args: ApplyArgs, client_args: &ClientArgs) -> Result<(), CliError> {
    let text = std::fs::read_to_string(&args.file).map_err(|source| CliError::File {
        path: args.file.clone(),
        source,
    })?;
    let mut client = connect(client_args).await?;
    let resp = client
        .apply(ApplyRequest {
            spec_toml: text,
            dry_run: args.dry_run,
            source: args.file.display().to_string(),
            force: args.force,
        })
        .await?
        .into_inner();
    if client_args.output == Format::Json {
        println!(
            "{}",
            json!({"server": resp.server, "dry_run": resp.dry_run, "changes": resp.changes,
                   "version": (resp.version > 0).then_some(resp.version)})
        );
        return Ok(());
    }
    let prefix = if resp.dry_run { "would " } else { "" };
    if resp.changes.is_empty() {
        println!("{}: no change (no new spec version stored)", resp.server);
    } else {
        println!(
            "{}{}:",
            if resp.dry_run {
                "dry run, nothing changed; "
            } else {
                ""
            },
            resp.server
        );
        for c in &resp.changes {
            if c.starts_with("note:") {
                println!("  {c}");
            } else {
                println!("  {prefix}{c}");
            }
        }
        if resp.version > 0 {
            println!(
                "stored as spec version {} (`registry server history {}`)",
                resp.version, resp.server
            );
        }
    }
    Ok(())
}
