//! Server-sent events that keep pages current without reloading them.
//!
//! * `/live`: a `fleet` event whenever the fleet changed (anything published on the bus,
//!   and every [`TICK`] for load and last-seen), at most once per [`SETTLE`]: a crash
//!   storm costs each open page one re-fetch per [`SETTLE`], not one per report.
//! * `/live/events`: each new event as a rendered table row (`event`).
//! * `/live/rollouts/{id}`: the rollout's progress block on every change (`rollout`),
//!   then `done` when it ends.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use corral_proto::v1::{GetRolloutRequest, ListEventsRequest, RolloutState};
use corral_proto::wire::name_of;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::{Stream, StreamExt};

use super::{Access, Web, WebError, feeds};

/// The least time between two `fleet` events.
const SETTLE: Duration = Duration::from_millis(500);
/// A `fleet` event at least this often, for what changes without a bus message (load).
const TICK: Duration = Duration::from_secs(5);

type EventStream = Response;

fn sse(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> EventStream {
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

pub async fn fleet(State(web): State<Arc<Web>>, _access: Access) -> EventStream {
    let shared = web.shared.clone();
    let mut bus = shared.subscribe();
    let shutdown = shared.shutdown().clone();
    let stream = async_stream(&web.shared, move |tx| async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                got = bus.recv() => match got {
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                () = tokio::time::sleep(TICK) => {}
            }
            // Let the burst settle, then drop what else arrived meanwhile.
            tokio::time::sleep(SETTLE).await;
            while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
                bus.try_recv()
            {}
            if tx
                .send(Event::default().event("fleet").data("changed"))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    sse(stream)
}

/// A stream fed by a task; the task ends when the client goes away.
fn async_stream<F, Fut>(
    shared: &crate::state::Shared,
    f: F,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + use<F, Fut>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    shared.spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok)
}

#[derive(serde::Deserialize)]
pub struct After {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    server: String,
}

pub async fn events(
    State(web): State<Arc<Web>>,
    _access: Access,
    headers: axum::http::HeaderMap,
    Query(q): Query<After>,
) -> Result<EventStream, WebError> {
    // A browser that reconnects sends the id of the last event it got: it continues from
    // there, without repeating rows.
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let follow = crate::admin::events::follow(
        web.shared.clone(),
        ListEventsRequest {
            server: q.server,
            after_id: q.after.max(last_seen),
            limit: Some(1000),
            kind: None,
        },
    )
    .await?;
    let stream = follow.map_while(|e| e.ok()).map(|e| {
        Ok(Event::default()
            .event("event")
            .id(e.id.to_string())
            .data(feeds::event_row(&e).into_string()))
    });
    Ok(sse(stream))
}

pub async fn rollout(
    State(web): State<Arc<Web>>,
    _access: Access,
    Path(id): Path<i64>,
) -> Result<EventStream, WebError> {
    let mut watch = crate::rollout::watch(web.shared.clone(), GetRolloutRequest { id }).await?;
    let stream = async_stream(&web.shared, move |tx| async move {
        while let Some(Ok(r)) = watch.next().await {
            let html = feeds::rollout_progress(&r).into_string();
            if tx
                .send(Event::default().event("rollout").data(html))
                .await
                .is_err()
            {
                return;
            }
            let state = name_of::<RolloutState>(r.state);
            if crate::rollout::executor::is_final(&state) {
                let _ = tx.send(Event::default().event("done").data(state)).await;
                return;
            }
        }
    });
    Ok(sse(stream))
}
