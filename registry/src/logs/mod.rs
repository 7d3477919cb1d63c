//! `Admin.Logs`: lines of instances' captured logs, read by their agents and carried over
//! their sessions ([`routes`]); a node connected to another replica is read through that
//! replica ([`replicas`]).

pub mod replicas;
pub mod routes;

use std::pin::Pin;
use std::sync::Arc;

use corral_proto::v1::{LogLines, LogOpen, LogStream, LogsRequest};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Status};

use crate::admin::split_server;
use crate::state::Shared;
use crate::store::now_ms;
use routes::Routed;

pub type LogsStream = Pin<Box<dyn Stream<Item = Result<LogLines, Status>> + Send>>;

/// The most lines `tail` may ask for (the agent's limit too).
const MAX_TAIL: u32 = 100_000;
/// How long an agent has to answer a LogOpen.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// Batches waiting for the caller; then the streams wait (and the sessions skip lines).
const OUT_QUEUE: usize = 64;

/// One instance to read, and how.
struct Target {
    node: String,
    ordinal: u32,
    /// None: the session is here; Some: the replica's address it is open on.
    via: Option<String>,
}

fn which(req: &LogsRequest) -> Result<LogStream, Status> {
    LogStream::try_from(req.stream).map_err(|_| {
        Status::invalid_argument(format!(
            "LogsRequest.stream: {} is not a stream this registry knows",
            req.stream
        ))
    })
}

async fn targets(
    shared: &Shared,
    req: &LogsRequest,
    forwarded: bool,
) -> Result<Vec<Result<Target, String>>, Status> {
    let (app, server) = split_server(&req.server)?;
    let instances = shared.store().instances_of(app, server).await?;
    if instances.is_empty() {
        return Err(Status::not_found(format!(
            "server {} has no instances (is it applied?)",
            req.server
        )));
    }
    let list = |f: &dyn Fn(&crate::store::InstanceRow) -> String| {
        instances.iter().map(f).collect::<Vec<_>>().join(", ")
    };
    let chosen: Vec<_> = instances
        .iter()
        .filter(|i| req.node.is_empty() || i.node == req.node)
        .filter(|i| req.ordinal.is_none_or(|o| i64::from(o) == i.ordinal))
        .collect();
    if chosen.is_empty() {
        let why = match (req.node.is_empty(), req.ordinal) {
            (false, Some(o)) => format!("no instance with ordinal {o} on node {}", req.node),
            (false, None) => format!("no instance on node {}", req.node),
            (true, Some(o)) => format!("no instance with ordinal {o}"),
            (true, None) => "no instances".into(),
        };
        return Err(Status::not_found(format!(
            "server {} has {why} (its instances: {})",
            req.server,
            list(&|i| format!("{}/{}", i.node, i.ordinal))
        )));
    }
    let seen_after = now_ms() - replicas::GONE_AFTER.as_millis() as i64;
    let mut out = Vec::new();
    for i in chosen {
        let ordinal = u32::try_from(i.ordinal).unwrap_or_default();
        let target = |via| Target {
            node: i.node.clone(),
            ordinal,
            via,
        };
        if shared.logs().has(&i.node) {
            out.push(Ok(target(None)));
            continue;
        }
        let place = if forwarded {
            None
        } else {
            shared.store().session_place(&i.node, seen_after).await?
        };
        out.push(match place {
            Some(p) if p.replica != shared.replica_id() => Ok(target(Some(p.address))),
            _ => Err(format!(
                "node {} is not connected to the registry: its logs cannot be read now",
                i.node
            )),
        });
    }
    Ok(out)
}

pub async fn logs(
    shared: Arc<Shared>,
    request: Request<LogsRequest>,
) -> Result<LogsStream, Status> {
    let forwarded = request.metadata().contains_key(replicas::FORWARDED);
    let token = request.metadata().get("authorization").cloned();
    let req = request.into_inner();
    let stream = which(&req)?;
    if req.tail > MAX_TAIL {
        return Err(Status::invalid_argument(format!(
            "tail {} is more than {MAX_TAIL}, the most lines one call shows",
            req.tail
        )));
    }
    let targets = targets(&shared, &req, forwarded).await?;
    if let [Err(why)] = &targets[..] {
        return Err(Status::failed_precondition(why.clone()));
    }
    let (tx, rx) = mpsc::channel(OUT_QUEUE);
    for target in targets {
        let target = match target {
            Ok(t) => t,
            Err(why) => {
                let _ = tx.try_send(Ok(LogLines {
                    error: why,
                    ..Default::default()
                }));
                continue;
            }
        };
        let open = LogOpen {
            id: 0,
            app: String::new(),
            server: String::new(),
            stream: stream as i32,
            tail: req.tail,
            since_age_ms: req.since_age_ms,
            follow: req.follow,
        };
        let (task_shared, tx, req, token) =
            (shared.clone(), tx.clone(), req.clone(), token.clone());
        shared.spawn(async move {
            let shared = task_shared;
            let done = shared.shutdown().clone();
            tokio::select! {
                () = done.cancelled() => {}
                () = tx.closed() => {}
                () = read(&shared, target, open, &req, token, &tx) => {}
            }
        });
    }
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Reads one instance's stream into `tx` until it ends.
async fn read(
    shared: &Arc<Shared>,
    target: Target,
    mut open: LogOpen,
    req: &LogsRequest,
    token: Option<MetadataValue<Ascii>>,
    tx: &mpsc::Sender<Result<LogLines, Status>>,
) {
    let fail = |error: String| LogLines {
        node: target.node.clone(),
        ordinal: target.ordinal,
        error,
        ..Default::default()
    };
    if let Some(address) = &target.via {
        let one = LogsRequest {
            node: target.node.clone(),
            ordinal: Some(target.ordinal),
            ..req.clone()
        };
        let mut lines = match replicas::forward(shared, address, token, one).await {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Ok(fail(e))).await;
                return;
            }
        };
        loop {
            match lines.message().await {
                Ok(Some(l)) => {
                    if tx.send(Ok(l)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(s) => {
                    let _ = tx.send(Ok(fail(s.message().to_string()))).await;
                    return;
                }
            }
        }
    }
    let Ok((app, server)) = split_server(&req.server) else {
        return;
    };
    (open.app, open.server) = (app.to_string(), server.to_string());
    let Some(mut opened) = shared.logs().open(&target.node, open).await else {
        let _ = tx
            .send(Ok(fail(format!(
                "node {} is not connected to this registry any more",
                target.node
            ))))
            .await;
        return;
    };
    // The agent answers every LogOpen at once (lines, an end, or an empty batch when
    // following); one that does not knows no log streams.
    let first = match tokio::time::timeout(ANSWER_TIMEOUT, opened.rx.recv()).await {
        Ok(r) => r,
        Err(_) => {
            let why = format!(
                "the agent of node {} did not answer within {}s (an agent older than this \
                 registry cannot send logs: upgrade it)",
                target.node,
                ANSWER_TIMEOUT.as_secs()
            );
            let _ = tx.send(Ok(fail(why))).await;
            return;
        }
    };
    let mut next = first;
    while let Some(routed) = next {
        let lines = match routed {
            Routed::Batch(b) => LogLines {
                node: target.node.clone(),
                ordinal: target.ordinal,
                stream: b.stream,
                read_at_ms: b.read_at_ms,
                skipped: b.skipped,
                lines: b.lines,
                error: String::new(),
            },
            Routed::End(e) if e.is_empty() => return,
            Routed::End(e) => fail(e),
        };
        if tx.send(Ok(lines)).await.is_err() {
            return;
        }
        next = opened.rx.recv().await;
    }
}
