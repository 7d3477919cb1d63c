//! Discovery over HTTP/JSON, for clients in any language:
//!
//! * `GET /v1/endpoints/APP.SERVER.ADAPTER` — the list as JSON (`node`, `host`, `port`,
//!   `weight`, `tags`, `meta`), with its index in `X-Corral-Index`. With `?index=N`
//!   it is a blocking query, as Consul's: it answers at once when the list's index is no
//!   longer N, else when it moves or `wait` (default 5m, at most 10m) has passed.
//! * `GET /v1/watch/APP.SERVER.ADAPTER` — server-sent events: an `endpoints` event with
//!   the list now (its `id` the index), then one on every change; an `error` event ends
//!   the stream if the name goes away. A client that reconnects with `Last-Event-ID`
//!   set to the index it has gets no repeat of it.
//!
//! Errors are JSON `{"error": "..."}`: 400 for a bad name or parameter (naming it), 401
//! without a valid token where one is needed, 404 for a name no server has, 503 when no
//! registry has answered for the name yet.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use corral_proto::v1::Endpoint;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::{LookupError, Snapshot, Source, State as ListState};

/// How long a blocking query waits when it names no `wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// The longest a blocking query waits; a longer `wait` is cut to this.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// The header that carries a list's index.
pub const INDEX_HEADER: &str = "x-corral-index";

/// Decides whether a request may read discovery from its headers and extensions (where
/// the server's connect info, the caller's address, is): Err(why not) is a 401.
pub type Auth = Arc<dyn Fn(&HeaderMap, &Extensions) -> Result<(), String> + Send + Sync>;

struct Api<S> {
    source: Arc<S>,
    auth: Option<Auth>,
}

/// The discovery routes over `source`; `auth` (when given) checks every request.
pub fn routes<S: Source>(source: Arc<S>, auth: Option<Auth>) -> Router {
    Router::new()
        .route("/v1/endpoints/{name}", get(endpoints::<S>))
        .route("/v1/watch/{name}", get(watch_events::<S>))
        .with_state(Arc::new(Api { source, auth }))
}

/// A JSON error answer.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

fn lookup_error(e: &LookupError) -> Response {
    let status = match e {
        LookupError::BadName(_) => StatusCode::BAD_REQUEST,
        LookupError::NotFound(_) => StatusCode::NOT_FOUND,
        LookupError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e)
}

/// An endpoint as JSON.
pub fn endpoint_json(e: &Endpoint) -> serde_json::Value {
    json!({
        "node": e.node,
        "host": e.host,
        "port": e.port,
        "weight": e.weight,
        "tags": e.tags,
        "meta": e.meta,
    })
}

/// The parameters of `/v1/endpoints`: `index` and `wait`.
#[derive(Debug, PartialEq, Eq)]
pub struct Blocking {
    pub index: Option<u64>,
    pub wait: Duration,
}

/// Parses a query string; every problem names its parameter.
pub fn parse_query(raw: Option<&str>) -> Result<Blocking, String> {
    let mut out = Blocking {
        index: None,
        wait: DEFAULT_WAIT,
    };
    let mut seen: Vec<&str> = Vec::new();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if seen.contains(&key) {
            return Err(format!("parameter {key:?} is given twice"));
        }
        seen.push(key);
        let shown = corral_proto::text::quoted(value);
        match key {
            "index" => {
                let n = value.parse::<u64>().map_err(|_| {
                    format!("index: {shown} is not an index (a whole number from X-Corral-Index)")
                })?;
                out.index = Some(n);
            }
            "wait" => {
                let d = humantime::parse_duration(value).map_err(|_| {
                    format!("wait: {shown} is not a duration (e.g. 30s, 500ms, 5m)")
                })?;
                out.wait = d.min(MAX_WAIT);
            }
            other => {
                return Err(format!(
                    "unknown parameter {}; expected index and wait",
                    corral_proto::text::quoted(other)
                ));
            }
        }
    }
    Ok(out)
}

/// None when the request may read discovery, else the 401 answer.
fn denied<S>(api: &Api<S>, headers: &HeaderMap, extensions: &Extensions) -> Option<Response> {
    let check = api.auth.as_ref()?;
    check(headers, extensions)
        .err()
        .map(|why| error(StatusCode::UNAUTHORIZED, why))
}

/// `GET /v1/endpoints/NAME`. The request is read (token, parameters) and dropped before
/// anything is awaited, so a parked query holds only its name and parameters, and the
/// wake-up of a thousand of them frees nothing but what their answers used.
fn endpoints<S: Source>(
    State(api): State<Arc<Api<S>>>,
    Path(name): Path<String>,
    request: Request,
) -> impl Future<Output = Response> + Send {
    let admitted = match denied(&api, request.headers(), request.extensions()) {
        Some(answer) => Err(answer),
        None => parse_query(request.uri().query()).map_err(|e| error(StatusCode::BAD_REQUEST, e)),
    };
    drop(request);
    async move {
        let params = match admitted {
            Ok(params) => params,
            Err(answer) => return answer,
        };
        let mut rx = match api.source.subscribe(&name).await {
            Ok(rx) => rx,
            Err(e) => return lookup_error(&e),
        };
        let mut now = rx.borrow_and_update().clone();
        if params.index == Some(now.index) {
            now = wait_for_change(&mut rx, now, params.wait).await;
        }
        answer(&name, &now)
    }
}

/// Waits until the list's index moves or `wait` passes; the snapshot then.
async fn wait_for_change(
    rx: &mut watch::Receiver<Snapshot>,
    mut now: Snapshot,
    wait: Duration,
) -> Snapshot {
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return now,
            changed = rx.changed() => {
                if changed.is_err() {
                    // The source is shutting down: answer with what there is.
                    return now;
                }
                let next = rx.borrow_and_update().clone();
                let moved = next.index != now.index;
                now = next;
                if moved {
                    return now;
                }
            }
        }
    }
}

fn answer(name: &str, snap: &Snapshot) -> Response {
    match &snap.state {
        ListState::Known(_) => {}
        ListState::Unknown => return lookup_error(&LookupError::NotFound(name.to_string())),
        ListState::Pending => {
            return lookup_error(&LookupError::Unavailable(format!(
                "no registry has answered for {name} yet"
            )));
        }
    };
    // From the parts the snapshot made once for every client it answers.
    let made = snap.answer();
    let mut response = Response::new(Body::from(made.json.clone()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(HeaderName::from_static(INDEX_HEADER), made.index.clone());
    response
}

async fn watch_events<S: Source>(
    State(api): State<Arc<Api<S>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    extensions: Extensions,
) -> Response {
    if let Some(answer) = denied(&api, &headers, &extensions) {
        return answer;
    }
    let mut rx = match api.source.subscribe(&name).await {
        Ok(rx) => rx,
        Err(e) => return lookup_error(&e),
    };
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (tx, events) = mpsc::channel::<Event>(4);
    tokio::spawn(async move {
        let mut sent = last_seen;
        loop {
            let snap = rx.borrow_and_update().clone();
            if sent != Some(snap.index) {
                sent = Some(snap.index);
                let (event, last) = match &snap.state {
                    ListState::Known(_) => (
                        Event::default()
                            .event("endpoints")
                            .id(snap.index.to_string())
                            .data(String::from_utf8_lossy(&snap.json())),
                        false,
                    ),
                    _ => (
                        Event::default().event("error").data(
                            json!({"error": LookupError::NotFound(name.clone()).to_string()})
                                .to_string(),
                        ),
                        true,
                    ),
                };
                if tx.send(event).await.is_err() || last {
                    return;
                }
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    Sse::new(ReceiverStream::new(events).map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked_by_name() {
        assert_eq!(
            parse_query(None),
            Ok(Blocking {
                index: None,
                wait: DEFAULT_WAIT
            })
        );
        assert_eq!(
            parse_query(Some("index=42&wait=30s")),
            Ok(Blocking {
                index: Some(42),
                wait: Duration::from_secs(30)
            })
        );
        assert_eq!(
            parse_query(Some("wait=1h")).map(|b| b.wait),
            Ok(MAX_WAIT),
            "capped"
        );
        for (query, needle) in [
            ("index=-1", "index: \"-1\""),
            ("index=x", "index: \"x\""),
            ("wait=soon", "wait: \"soon\""),
            ("wait=10", "wait: \"10\""),
            ("index=1&index=2", "\"index\" is given twice"),
            ("colour=red", "unknown parameter \"colour\""),
        ] {
            let err = parse_query(Some(query)).expect_err(query);
            assert!(err.contains(needle), "{query}: {err}");
        }
    }
}
