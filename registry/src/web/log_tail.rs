//! The live log tail of one instance, on its page: `/servers/{app.server}/{node}/log` is a
//! server-sent events stream over [`crate::logs::logs`] (both streams, the last [`TAIL`]
//! lines first, then new ones as they are written), and [`section`] is the pane that
//! shows it.
//!
//! Events: `lines` (JSON: `stream`, `skipped`, `lines`), `failed` (one instance's stream
//! ended with an error; text) and `end` (the stream is over, with why; the page stops
//! there instead of reconnecting). When the browser leaves, the response body is dropped,
//! which drops the logs stream, which cancels the read at the agent.
//!
//! The page keeps the last [`KEEP`] lines; lines are put in with `textContent`, never as
//! HTML.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use corral_proto::v1::{LogLines, LogStream, LogsRequest};
use maud::{Markup, PreEscaped, html};
use tokio_stream::{Stream, StreamExt};

use super::{Access, Web, WebError};

/// Lines of each stream sent first.
pub const TAIL: u32 = 200;
/// Lines the page keeps; older ones are removed as new ones come.
pub const KEEP: u32 = 1000;

pub async fn stream(
    State(web): State<Arc<Web>>,
    access: Access,
    Path((server, node)): Path<(String, String)>,
) -> Result<Response, WebError> {
    crate::access::may(&access.caller, "Logs")?;
    let mut request = tonic::Request::new(LogsRequest {
        server,
        node,
        ordinal: None,
        stream: LogStream::Unspecified as i32,
        tail: TAIL,
        since_age_ms: 0,
        follow: true,
    });
    // A node connected to another replica is read through it, with the caller's token.
    if let Some(value) = access.bearer.as_deref().and_then(|b| b.parse().ok()) {
        request.metadata_mut().insert("authorization", value);
    }
    let events: std::pin::Pin<Box<dyn Stream<Item = Event> + Send>> =
        match crate::logs::logs(web.shared.clone(), request).await {
            Ok(lines) => {
                let ended = tokio_stream::once(end("the log stream ended"));
                Box::pin(
                    lines
                        .map(|item| match item {
                            Ok(batch) => batch_event(&batch),
                            Err(status) => Event::default()
                                .event("failed")
                                .data(one_line(status.message())),
                        })
                        .chain(ended),
                )
            }
            Err(status) => Box::pin(tokio_stream::once(end(status.message()))),
        };
    Ok(Sse::new(events.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn end(why: &str) -> Event {
    Event::default().event("end").data(one_line(why))
}

/// Text for an event's data: one line, without the carriage returns SSE cannot carry.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

fn batch_event(b: &LogLines) -> Event {
    if !b.error.is_empty() {
        let who = if b.node.is_empty() {
            String::new()
        } else {
            format!("{}: ", b.node)
        };
        return Event::default()
            .event("failed")
            .data(one_line(&format!("{who}{}", b.error)));
    }
    let data = serde_json::json!({
        "stream": if b.stream == LogStream::Stderr as i32 { "stderr" } else { "stdout" },
        "skipped": b.skipped,
        "lines": b.lines,
    });
    Event::default().event("lines").data(data.to_string())
}

/// The log pane of an instance page, following `url` (the stream above).
pub fn section(url: &str) -> Markup {
    html! {
        div.log-head {
            h2 { "Log tail" }
            span.muted #log-state { "connecting…" }
            span.muted { "last " (KEEP) " lines; stderr marked " code { "err" } }
        }
        div.log #log-lines data-src=(url) data-keep=(KEEP) role="log" aria-live="polite" {}
        script { (PreEscaped(SCRIPT)) }
    }
}

/// Follows the stream into the pane: textContent only, at most `data-keep` lines, scrolled
/// to the end unless the reader scrolled up; closed when the page goes away.
const SCRIPT: &str = r#"
(() => {
  const pane = document.getElementById('log-lines');
  const state = document.getElementById('log-state');
  const keep = Number(pane.dataset.keep);
  let opened = false;
  const es = new EventSource(pane.dataset.src);
  const add = (text, kind) => {
    const d = document.createElement('div');
    d.className = 'l ' + kind;
    d.textContent = text;
    pane.appendChild(d);
  };
  const batch = (fill) => {
    const stick = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 8;
    fill();
    while (pane.childElementCount > keep) pane.firstElementChild.remove();
    if (stick) pane.scrollTop = pane.scrollHeight;
  };
  es.addEventListener('open', () => {
    // A reconnect starts over with the tail.
    if (opened) pane.textContent = '';
    opened = true;
    state.textContent = 'following';
  });
  es.addEventListener('lines', (e) => batch(() => {
    const b = JSON.parse(e.data);
    if (b.skipped > 0) add('\u2026 ' + b.skipped + ' lines skipped', 'skip');
    for (const line of b.lines) add(line, b.stream);
  }));
  es.addEventListener('failed', (e) => batch(() => add(e.data, 'error')));
  es.addEventListener('end', (e) => {
    batch(() => add(e.data, 'error'));
    state.textContent = 'ended';
    es.close();
  });
  window.addEventListener('pagehide', () => es.close());
})();
"#;
