//! Admin RPCs on instance events: list, and follow as they are recorded.

use std::time::Duration;

use corral_proto::v1::{Event, ListEventsRequest, ListEventsResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{EventStream, split_server};
use crate::state::Shared;
use crate::store::EventRow;

/// How often a follower looks for new events; the database is the only shared state,
/// so this sees events recorded through any replica.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 10_000;

fn to_proto(e: EventRow) -> Event {
    Event {
        id: e.id,
        at_ms: e.at_ms,
        server: format!("{}.{}", e.app, e.server),
        node: e.node,
        from: e.from,
        to: e.to,
        reason: e.reason,
        kind: e.kind,
    }
}

/// The kinds of events there are.
pub const KINDS: [&str; 3] = ["state", "health", "config"];

fn kind(req: &ListEventsRequest) -> Result<Option<&str>, Status> {
    match req.kind.as_str() {
        "" => Ok(None),
        k if KINDS.contains(&k) => Ok(Some(k)),
        other => Err(Status::invalid_argument(format!(
            "event kind {:?} is not one of {}",
            other.chars().take(64).collect::<String>(),
            KINDS.join(", ")
        ))),
    }
}

fn filter(req: &ListEventsRequest) -> Result<Option<(String, String)>, Status> {
    if req.server.is_empty() {
        return Ok(None);
    }
    let (app, server) = split_server(&req.server)?;
    Ok(Some((app.to_string(), server.to_string())))
}

/// How many past events: unset means the default; 0 is honoured (none); more than one
/// call returns is refused rather than cut silently.
fn limit(req: &ListEventsRequest) -> Result<u32, Status> {
    match req.limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if n > MAX_LIMIT => Err(Status::invalid_argument(format!(
            "limit {n} is more than {}, the most events one call returns",
            corral_proto::text::count(MAX_LIMIT as usize)
        ))),
        Some(n) => Ok(n),
    }
}

pub async fn list(shared: &Shared, req: ListEventsRequest) -> Result<ListEventsResponse, Status> {
    let server = filter(&req)?;
    let server = server.as_ref().map(|(a, s)| (a.as_str(), s.as_str()));
    let limit = limit(&req)?;
    if limit == 0 {
        return Ok(ListEventsResponse { events: Vec::new() });
    }
    let events = shared
        .store()
        .list_events(server, kind(&req)?, req.after_id, limit)
        .await?;
    Ok(ListEventsResponse {
        events: events.into_iter().map(to_proto).collect(),
    })
}

pub async fn follow(
    shared: std::sync::Arc<Shared>,
    req: ListEventsRequest,
) -> Result<EventStream, Status> {
    let server = filter(&req)?;
    let kind = kind(&req)?.map(str::to_string);
    let limit = limit(&req)?;
    let (first, newest) = {
        let s = server.as_ref().map(|(a, s)| (a.as_str(), s.as_str()));
        let first = if limit == 0 {
            Vec::new()
        } else {
            shared
                .store()
                .list_events(s, kind.as_deref(), req.after_id, limit)
                .await?
        };
        // With no past events wanted, following starts after the newest one.
        let newest = if limit == 0 {
            shared
                .store()
                .list_events(s, kind.as_deref(), req.after_id, 1)
                .await?
                .last()
                .map_or(req.after_id, |e| e.id)
        } else {
            req.after_id
        };
        (first, newest)
    };
    let (tx, rx) = mpsc::channel(64);
    let task_shared = shared.clone();
    shared.spawn(async move {
        let shared = task_shared;
        let mut last = newest;
        let mut batch = first;
        loop {
            for e in batch {
                last = last.max(e.id);
                if tx.send(Ok(to_proto(e))).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                () = shared.shutdown().cancelled() => return,
                () = tx.closed() => return,
                () = tokio::time::sleep(FOLLOW_POLL) => {}
            }
            let s = server.as_ref().map(|(a, s)| (a.as_str(), s.as_str()));
            batch = match shared
                .store()
                .list_events(s, kind.as_deref(), last, MAX_LIMIT)
                .await
            {
                Ok(b) => b,
                Err(err) => {
                    let _ = tx.send(Err(err.into())).await;
                    return;
                }
            };
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}
