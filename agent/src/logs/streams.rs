//! The log streams the registry opens over the session: one task per `LogOpen`, which
//! sends the last lines asked for, then (following) new lines until cancelled, through
//! the session's bounded log queue.
//!
//! The queue is drained only when no heartbeat, status or event waits (see
//! [`crate::session`]), so logs never delay those. While following, a batch that does not
//! fit is dropped and counted; the next batch that fits says how many lines were skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use corral_proto::v1::agent_message::Body;
use corral_proto::v1::{AgentMessage, LogBatch, LogEnd, LogOpen, LogStream};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::follow::{Follower, POLL};
use super::index::SizeIndex;
use super::read::last_lines;

/// Lines per batch at most.
const BATCH_LINES: usize = 1000;
/// The most lines `tail` may ask for.
pub const MAX_TAIL: u32 = 100_000;

/// What a log stream needs from the agent.
#[derive(Clone)]
pub struct LogContext {
    pub node: String,
    pub instances_dir: PathBuf,
    pub index: Arc<SizeIndex>,
    /// Log streams open now (`corral_agent_log_streams`).
    pub open: Gauge,
    /// Lines dropped because the session could not carry them.
    pub skipped: Counter,
}

/// The log streams of one session; dropping it cancels them all.
pub struct Streams {
    ctx: LogContext,
    out: mpsc::Sender<AgentMessage>,
    running: HashMap<u64, CancellationToken>,
    all: CancellationToken,
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.all.cancel();
    }
}

impl Streams {
    pub fn new(ctx: LogContext, out: mpsc::Sender<AgentMessage>) -> Streams {
        Streams {
            ctx,
            out,
            running: HashMap::new(),
            all: CancellationToken::new(),
        }
    }

    pub fn open(&mut self, open: LogOpen) {
        self.running.retain(|_, t| !t.is_cancelled());
        let cancel = self.all.child_token();
        if let Some(old) = self.running.insert(open.id, cancel.clone()) {
            old.cancel();
        }
        let (ctx, out) = (self.ctx.clone(), self.out.clone());
        tokio::spawn(async move {
            ctx.open.inc();
            let id = open.id;
            let result = run(&ctx, open, &out, &cancel).await;
            cancel.cancel();
            ctx.open.dec();
            let end = LogEnd {
                id,
                error: result.err().unwrap_or_default(),
            };
            let _ = out
                .send(AgentMessage {
                    body: Some(Body::LogEnd(end)),
                })
                .await;
        });
    }

    pub fn cancel(&mut self, id: u64) {
        if let Some(t) = self.running.remove(&id) {
            t.cancel();
        }
    }
}

fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the session sends: heartbeats, statuses and events first; a log batch only
/// when none of those waits.
pub struct Outbound {
    control: mpsc::Receiver<AgentMessage>,
    logs: mpsc::Receiver<AgentMessage>,
}

impl Outbound {
    pub fn new(
        control: mpsc::Receiver<AgentMessage>,
        logs: mpsc::Receiver<AgentMessage>,
    ) -> Outbound {
        Outbound { control, logs }
    }
}

impl tokio_stream::Stream for Outbound {
    type Item = AgentMessage;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<AgentMessage>> {
        use std::task::Poll;
        match self.control.poll_recv(cx) {
            Poll::Ready(m) => return Poll::Ready(m),
            Poll::Pending => {}
        }
        match self.logs.poll_recv(cx) {
            Poll::Ready(Some(m)) => Poll::Ready(Some(m)),
            // No log stream may send any more; the session goes on.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

/// A name that can be a directory under `instances/`.
fn plain(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\0'])
}

fn files(dir: &Path, stream: LogStream) -> Vec<(LogStream, PathBuf)> {
    let both = [LogStream::Stdout, LogStream::Stderr];
    both.into_iter()
        .filter(|s| stream == LogStream::Unspecified || *s == stream)
        .map(|s| {
            let name = if s == LogStream::Stdout {
                "stdout.log"
            } else {
                "stderr.log"
            };
            (s, dir.join("logs").join(name))
        })
        .collect()
}

/// The last lines of one stream, from `.1` and the current file, and where following
/// goes on in the current file.
fn history(
    path: &Path,
    index: &SizeIndex,
    tail: usize,
    since_ms: Option<i64>,
    partial: bool,
) -> Result<(Vec<String>, u64), String> {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let written_since = |p: &Path, at: i64| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| unix_ms(t) >= at)
    };
    let from = match since_ms {
        None => 0,
        Some(at) => index
            .offset_since(path, at)
            .unwrap_or(if written_since(path, at) { 0 } else { len }),
    };
    if tail == 0 {
        return Ok((Vec::new(), len));
    }
    let (mut lines, end) = match last_lines(path, from, tail, partial) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), 0),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut older = path.as_os_str().to_owned();
    older.push(".1");
    let older = PathBuf::from(older);
    let older_wanted = from == 0 && since_ms.is_none_or(|at| written_since(&older, at));
    if lines.len() < tail && older_wanted && older.exists() {
        let (mut before, _) = last_lines(&older, 0, tail - lines.len(), true)
            .map_err(|e| format!("cannot read {}: {e}", older.display()))?;
        before.append(&mut lines);
        lines = before;
    }
    Ok((lines, end))
}

fn batch(open: &LogOpen, stream: LogStream, skipped: u64, lines: Vec<String>) -> AgentMessage {
    AgentMessage {
        body: Some(Body::LogBatch(LogBatch {
            id: open.id,
            app: open.app.clone(),
            server: open.server.clone(),
            stream: stream as i32,
            read_at_ms: corral_common::time::now_ms(),
            skipped,
            lines,
        })),
    }
}

async fn run(
    ctx: &LogContext,
    open: LogOpen,
    out: &mpsc::Sender<AgentMessage>,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let name = format!("{}.{}", open.app, open.server);
    let dir = ctx.instances_dir.join(&name);
    if !plain(&open.app) || !plain(&open.server) || !dir.is_dir() {
        return Err(format!("{name} has no instance on node {}", ctx.node));
    }
    let stream = LogStream::try_from(open.stream).unwrap_or(LogStream::Unspecified);
    let since_ms =
        (open.since_age_ms > 0).then(|| corral_common::time::now_ms() - open.since_age_ms as i64);
    let tail = open.tail.min(MAX_TAIL) as usize;
    let mut followers = Vec::new();
    for (s, path) in files(&dir, stream) {
        let (p, idx) = (path.clone(), ctx.index.clone());
        let follow = open.follow;
        let (lines, end) =
            tokio::task::spawn_blocking(move || history(&p, &idx, tail, since_ms, !follow))
                .await
                .map_err(|e| format!("reading {}: {e}", path.display()))??;
        for chunk in lines.chunks(BATCH_LINES) {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                sent = out.send(batch(&open, s, 0, chunk.to_vec())) => {
                    if sent.is_err() { return Ok(()); }
                }
            }
        }
        followers.push((s, Follower::new(path, end), 0u64));
    }
    if !open.follow {
        return Ok(());
    }
    // Following from now on: an empty batch says so (the registry waits for a first
    // answer, which an agent that does not know log streams never sends).
    let first = followers.first().map_or(LogStream::Stdout, |f| f.0);
    if out.send(batch(&open, first, 0, Vec::new())).await.is_err() {
        return Ok(());
    }
    loop {
        let (mut more, mut dropped) = (false, false);
        for (s, follower, skipped) in &mut followers {
            let mut lines = Vec::new();
            more |= follower
                .poll(&mut lines)
                .map_err(|e| format!("cannot read {}: {e}", follower.path.display()))?;
            if lines.is_empty() && *skipped == 0 {
                continue;
            }
            let mut chunks: Vec<Vec<String>> =
                lines.chunks(BATCH_LINES).map(<[_]>::to_vec).collect();
            if chunks.is_empty() {
                chunks.push(Vec::new());
            }
            for chunk in chunks {
                let n = chunk.len() as u64;
                match out.try_send(batch(&open, *s, *skipped, chunk)) {
                    Ok(()) => *skipped = 0,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        *skipped += n;
                        dropped = true;
                        ctx.skipped.inc_by(n);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                }
            }
        }
        // Behind and the session keeps up: read on at once; dropping: no hurry.
        let pause = if more && !dropped {
            Duration::ZERO
        } else {
            POLL
        };
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_proto::v1::Heartbeat;
    use tokio_stream::StreamExt;

    fn beat() -> AgentMessage {
        AgentMessage {
            body: Some(Body::Heartbeat(Heartbeat::default())),
        }
    }

    fn end(id: u64) -> AgentMessage {
        AgentMessage {
            body: Some(Body::LogEnd(LogEnd {
                id,
                error: String::new(),
            })),
        }
    }

    #[tokio::test]
    async fn control_messages_go_before_logs() {
        let (control, control_rx) = mpsc::channel(4);
        let (logs, logs_rx) = mpsc::channel(4);
        let mut out = Outbound::new(control_rx, logs_rx);
        logs.send(end(1)).await.expect("log");
        logs.send(end(2)).await.expect("log");
        control.send(beat()).await.expect("beat");
        let first = out.next().await.expect("first");
        assert!(matches!(first.body, Some(Body::Heartbeat(_))));
        assert!(
            matches!(out.next().await.and_then(|m| m.body), Some(Body::LogEnd(e)) if e.id == 1)
        );
        control.send(beat()).await.expect("beat");
        assert!(matches!(
            out.next().await.and_then(|m| m.body),
            Some(Body::Heartbeat(_))
        ));
        // No log stream left: the session goes on; it ends with the control queue.
        drop(logs);
        assert!(
            matches!(out.next().await.and_then(|m| m.body), Some(Body::LogEnd(e)) if e.id == 2)
        );
        drop(control);
        assert!(out.next().await.is_none());
    }

    #[tokio::test]
    async fn an_unknown_instance_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = LogContext {
            node: "node-a".into(),
            instances_dir: dir.path().to_path_buf(),
            index: Arc::default(),
            open: Gauge::default(),
            skipped: Counter::default(),
        };
        let (out, _rx) = mpsc::channel(4);
        for (app, server) in [("demo", "none"), ("..", "x"), ("demo", "a/b")] {
            let open = LogOpen {
                app: app.into(),
                server: server.into(),
                ..Default::default()
            };
            let err = run(&ctx, open, &out, &CancellationToken::new())
                .await
                .expect_err("unknown");
            assert!(err.contains("has no instance on node node-a"), "{err}");
        }
    }
}
