//! `registry events`: instance events, past ones and (with `--follow`) new ones as they
//! happen.

use clap::Args;
use corral_proto::v1::{Event, ListEventsRequest};
use serde_json::{Value, json};

use super::output::time_ms;
use super::{CliError, ClientArgs, Format, connect};

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only this server's events (APP.SERVER).
    #[arg(long, value_parser = super::args::non_empty)]
    pub server: Option<String>,
    /// Keep printing new events as they happen.
    #[arg(short, long)]
    pub follow: bool,
    /// How many past events to show, at most 10000; 0 with --follow: only new ones.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Only events of this kind: state (state changes), health (health verdicts),
    /// config (config changes that keep restarting an instance).
    #[arg(long, value_parser = ["state", "health", "config"])]
    pub kind: Option<String>,
}

fn event_json(e: &Event) -> Value {
    json!({"id": e.id, "time": time_ms(e.at_ms), "at_ms": e.at_ms, "kind": e.kind, "server": e.server,
           "node": e.node, "from": e.from, "to": e.to, "reason": e.reason})
}

/// One line per event, whatever its reason holds.
fn event_line(e: &Event) -> String {
    format!(
        "{}  {:<6}  {}@{}  {} -> {}  {}",
        time_ms(e.at_ms),
        e.kind,
        e.server,
        e.node,
        e.from,
        e.to,
        super::output::cell(&e.reason)
    )
}

pub async fn events(a: EventsArgs, args: &ClientArgs) -> Result<(), CliError> {
    let mut client = connect(args).await?;
    let req = ListEventsRequest {
        server: a.server.unwrap_or_default(),
        after_id: 0,
        limit: Some(a.limit),
        kind: a.kind.unwrap_or_default(),
    };
    let print = |e: &Event| {
        if args.output == Format::Json {
            println!("{}", event_json(e));
        } else {
            println!("{}", event_line(e));
        }
    };
    if a.follow {
        let mut stream = client.follow_events(req).await?.into_inner();
        while let Some(e) = stream.message().await? {
            print(&e);
        }
        // A follow ends only when the registry ends it: at its shutdown.
        return Err(CliError::Unreachable {
            addr: args.addr.clone(),
            reason: "it ended the event stream (it is shutting down)".into(),
        });
    }
    let events = client.list_events(req).await?.into_inner().events;
    if args.output == Format::Json {
        println!("{}", Value::Array(events.iter().map(event_json).collect()));
    } else {
        events.iter().for_each(print);
    }
    Ok(())
}
