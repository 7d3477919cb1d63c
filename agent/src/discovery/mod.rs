//! Discovery for any client: HTTP/JSON (with Consul-style blocking queries and
//! server-sent events) and DNS, answered from a list that follows the registry.
//!
//! * [`cache`] — the agent's watch cache: it follows `Query.Watch` on the registry for
//!   the names its host's clients ask for, over the session's connection, keeps the last
//!   list when no registry answers, and forgets a name nobody asked for in a while.
//! * [`http`] — `GET /v1/endpoints/NAME` and `GET /v1/watch/NAME`, over any [`Source`]:
//!   the agent's cache, or the registry's own discovery table.
//! * [`grpc`] — `Query.Find` and `Query.Watch` from the cache, for gRPC clients.
//! * [`dns`] + [`dns_udp`] + [`answer`] — the `corral.` DNS zone, served from the cache.
//!
//! Every list carries an index ([`Snapshot::index`]) that moves whenever the list does:
//! what a blocking query compares, and the `X-Corral-Index` header.

pub mod answer;
pub mod cache;
pub mod dns;
pub mod dns_udp;
pub mod grpc;
pub mod http;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use corral_proto::v1::Endpoint;
use tokio::sync::watch;

/// One name's list as a source holds it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Moves (upwards) on every change of `state`; a clock in milliseconds where it can
    /// be, so an index stays ahead of those a previous run of the process handed out.
    pub index: u64,
    pub state: State,
    /// The list as JSON and the index as a header value, made once per change for every
    /// client that asks (a thousand blocking queries woken by one change share them).
    answer: Arc<OnceLock<Answer>>,
}

/// A list's answer over HTTP, made once: the body and the `X-Corral-Index` value.
#[derive(Debug, Clone)]
pub struct Answer {
    pub json: bytes::Bytes,
    pub index: axum::http::HeaderValue,
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index && self.state == other.state
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// No registry has answered for the name yet.
    Pending,
    /// No server has this adapter.
    Unknown,
    /// The endpoints (possibly none).
    Known(Arc<Vec<Endpoint>>),
}

impl Snapshot {
    pub fn new(state: State) -> Snapshot {
        Snapshot {
            index: next_index(),
            state,
            answer: Arc::default(),
        }
    }

    /// Takes `state`, moving the index when it differs; whether it did.
    pub fn update(&mut self, state: State) -> bool {
        if self.state == state {
            return false;
        }
        self.state = state;
        self.index = next_index().max(self.index + 1);
        self.answer = Arc::default();
        true
    }

    /// The endpoints as a JSON list (empty unless known), made on first use.
    pub fn json(&self) -> bytes::Bytes {
        self.answer().json.clone()
    }

    /// The HTTP answer's parts, made on first use.
    pub fn answer(&self) -> &Answer {
        self.answer.get_or_init(|| {
            let text = match &self.state {
                State::Known(eps) => {
                    serde_json::Value::Array(eps.iter().map(http::endpoint_json).collect())
                        .to_string()
                }
                _ => "[]".to_string(),
            };
            Answer {
                json: bytes::Bytes::from(text),
                index: axum::http::HeaderValue::from(self.index),
            }
        })
    }
}

/// Why a name has no list to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("{0}")]
    BadName(String),
    #[error("no service {} (no server has that adapter)", corral_proto::text::quoted(.0))]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
}

/// Where answers come from: the agent's watch cache or the registry's table.
pub trait Source: Send + Sync + 'static {
    /// A receiver of `name`'s snapshots, its current one known (not pending, not
    /// unknown); later ones may be anything but pending.
    fn subscribe(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<watch::Receiver<Snapshot>, LookupError>> + Send;
}

static LAST_INDEX: AtomicU64 = AtomicU64::new(0);

/// A new index: the clock in milliseconds, or one more than the last one handed out.
pub fn next_index() -> u64 {
    let now = u64::try_from(crate::now_ms()).unwrap_or(0);
    let mut last = LAST_INDEX.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST_INDEX.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// A discovery name must be `APP.SERVER.ADAPTER`, each part non-empty and at most 63
/// bytes (the longest app, server or adapter name).
pub fn check_name(name: &str) -> Result<(), LookupError> {
    let parts = corral_proto::names::split_service(name);
    if parts.is_none_or(|(a, s, d)| [a, s, d].iter().any(|p| p.len() > 63)) {
        return Err(LookupError::BadName(format!(
            "service name {} must be APP.SERVER.ADAPTER, e.g. demo.echo.Main",
            corral_proto::text::quoted(name)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_only_move_up_and_only_on_a_change() {
        let mut s = Snapshot::new(State::Unknown);
        let first = s.index;
        assert!(!s.update(State::Unknown));
        assert_eq!(s.index, first);
        assert!(s.update(State::Known(Arc::new(Vec::new()))));
        assert!(s.index > first);
        let a = next_index();
        assert!(next_index() > a);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("a.b.C").is_ok());
        for bad in ["a.b", "a..c", "a.b.c.d", ""] {
            assert!(
                matches!(check_name(bad), Err(LookupError::BadName(_))),
                "{bad}"
            );
        }
    }
}
