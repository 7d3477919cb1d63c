//! `registry logs APP.SERVER`: lines of the instances' captured logs, through the agents'
//! sessions.

use std::time::Duration;

use clap::Args;
use corral_proto::v1::{LogLines, LogStream, LogsRequest, ServerStatusRequest};
use serde_json::json;

use super::output::time_ms;
use super::{CliError, ClientArgs, Format, connect};

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The server (APP.SERVER).
    #[arg(value_parser = super::args::non_empty)]
    pub server: String,
    /// Only the instance on this node.
    #[arg(long, value_parser = super::args::non_empty)]
    pub node: Option<String>,
    /// Only the instance with this ordinal.
    #[arg(long)]
    pub ordinal: Option<u32>,
    /// Keep printing new lines, across restarts and rotations, until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// How many of the last lines of each stream to show first, at most 100000
    /// [default: 10; with --since: every line since then, up to 100000].
    #[arg(short = 'n', long = "lines")]
    pub lines: Option<u32>,
    /// Only lines written in this last while, e.g. 10m, 1h30m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// Only this stream [default: both].
    #[arg(long, value_parser = ["stdout", "stderr"])]
    pub stream: Option<String>,
}

fn stream_name(s: i32) -> &'static str {
    match LogStream::try_from(s) {
        Ok(LogStream::Stdout) => "stdout",
        Ok(LogStream::Stderr) => "stderr",
        _ => "",
    }
}

/// How lines are shown.
struct Show {
    json: bool,
    /// Prefix each line with NODE/ORDINAL.
    instance: bool,
    /// Prefix each line with its stream.
    stream: bool,
}

impl Show {
    fn prefix(&self, l: &LogLines) -> String {
        let mut parts = Vec::new();
        if self.instance {
            parts.push(format!("{}/{}", l.node, l.ordinal));
        }
        if self.stream {
            parts.push(stream_name(l.stream).to_string());
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("[{}] ", parts.join(" "))
        }
    }

    fn line(&self, out: &mut impl std::io::Write, l: &LogLines, text: &str, skipped: u64) {
        let _ = if self.json {
            let mut v = json!({"node": l.node, "ordinal": l.ordinal, "stream": stream_name(l.stream),
                               "time": time_ms(l.read_at_ms), "line": text});
            if skipped > 0 {
                v["skipped"] = json!(skipped);
            }
            writeln!(out, "{v}")
        } else {
            writeln!(out, "{}{text}", self.prefix(l))
        };
    }

    /// Prints one batch; false when it was an instance's error.
    fn batch(&self, l: &LogLines) -> bool {
        if !l.error.is_empty() {
            if l.node.is_empty() {
                eprintln!("registry: {}", l.error);
            } else {
                eprintln!("registry: {}/{}: {}", l.node, l.ordinal, l.error);
            }
            return false;
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        if l.skipped > 0 {
            self.line(
                &mut out,
                l,
                &format!("… {} lines skipped", l.skipped),
                l.skipped,
            );
        }
        for text in &l.lines {
            self.line(&mut out, l, text, 0);
        }
        let _ = std::io::Write::flush(&mut out);
        true
    }
}

pub async fn logs(a: LogsArgs, args: &ClientArgs) -> Result<(), CliError> {
    let mut client = connect(args).await?;
    let tail = match (a.lines, a.since) {
        (Some(n), _) => n,
        (None, Some(_)) => 100_000,
        (None, None) => 10,
    };
    let stream = match a.stream.as_deref() {
        Some("stdout") => LogStream::Stdout,
        Some("stderr") => LogStream::Stderr,
        _ => LogStream::Unspecified,
    };
    let many = a.node.is_none()
        && a.ordinal.is_none()
        && client
            .server_status(ServerStatusRequest {
                server: a.server.clone(),
            })
            .await?
            .into_inner()
            .instances
            .len()
            > 1;
    let show = Show {
        json: args.output == Format::Json,
        instance: many,
        stream: stream == LogStream::Unspecified,
    };
    let req = LogsRequest {
        server: a.server,
        node: a.node.unwrap_or_default(),
        ordinal: a.ordinal,
        stream: stream as i32,
        tail,
        since_age_ms: a.since.map_or(0, super::args::millis),
        follow: a.follow,
    };
    let mut lines = client.logs(req).await?.into_inner();
    let mut failed = false;
    while let Some(l) = lines.message().await? {
        failed |= !show.batch(&l);
        // Lines may always be ready: let Ctrl-C (in `main`) be seen between batches.
        tokio::task::yield_now().await;
    }
    if failed {
        return Err(CliError::Failed(
            "some instances' logs could not be read (see above)".into(),
        ));
    }
    Ok(())
}
