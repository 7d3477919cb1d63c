//! `registry audit`: who changed what, and every refused call, newest last.

use std::time::Duration;

use clap::Args;
use corral_proto::v1::{AuditOutcome, AuditRecord, ListAuditRequest};
use corral_proto::wire::name_of;
use serde_json::{Value, json};

use super::output::{cell, time_ms};
use super::{CliError, ClientArgs, Format, connect};

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only records of this recent past, e.g. 1h, 30m, 2days.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// Only calls made with this token (its name).
    #[arg(long, value_parser = super::args::non_empty)]
    pub caller: Option<String>,
    /// How many records, at most (the newest); at most 10000.
    #[arg(short = 'n', long = "limit", default_value_t = 100)]
    pub limit: u32,
}

fn record_json(r: &AuditRecord) -> Value {
    json!({"id": r.id, "time": time_ms(r.at_ms), "at_ms": r.at_ms, "caller": r.caller,
           "role": r.role, "source": r.source, "call": r.call, "target": r.target,
           "outcome": name_of::<AuditOutcome>(r.outcome), "error": r.error})
}

fn record_line(r: &AuditRecord) -> String {
    format!(
        "{}  {:<8} {:<16} {:<7} {:<21} {:<14} {}  {}",
        time_ms(r.at_ms),
        name_of::<AuditOutcome>(r.outcome),
        cell(&r.caller),
        cell(&r.role),
        cell(&r.source),
        r.call,
        cell(&r.target),
        cell(&r.error)
    )
}

pub async fn audit(a: AuditArgs, args: &ClientArgs) -> Result<(), CliError> {
    let since_ms = match a.since {
        None => 0,
        Some(d) => {
            let d = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            corral_common::time::now_ms().saturating_sub(d).max(1)
        }
    };
    let mut client = connect(args).await?;
    let records = client
        .list_audit(ListAuditRequest {
            since_ms,
            caller: a.caller.unwrap_or_default(),
            limit: Some(a.limit),
        })
        .await?
        .into_inner()
        .records;
    if args.output == Format::Json {
        println!(
            "{}",
            Value::Array(records.iter().map(record_json).collect())
        );
    } else {
        println!(
            "{:<24}  {:<8} {:<16} {:<7} {:<21} {:<14} TARGET  ERROR",
            "TIME", "OUTCOME", "CALLER", "ROLE", "SOURCE", "CALL"
        );
        for r in &records {
            println!("{}", record_line(r));
        }
    }
    Ok(())
}
