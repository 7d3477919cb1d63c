//! The registry's HTTP side: `/health` and `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use tracing::warn;

use crate::metrics::FleetCounts;
use crate::state::Shared;
use crate::store::{NodeRow, NodeState, StoreError};
use corral_proto::v1::InstanceUsage;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// 200 while the database answers and writes succeed, 503 naming what is wrong
/// otherwise; within a second either way ([`crate::outage::CHECK_WITHIN`]). Both say how
/// many agent reports and events wait to be written.
async fn health(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let backend = shared.store().backend().name();
    let checked = crate::outage::check(&shared).await;
    let error = match checked {
        Ok(()) => shared.outage().error(),
        Err(err) => Some(err.to_string()),
    };
    let (statuses, events, dropped) = shared.actual().counts();
    let mut body = json!({
        "status": "ok",
        "database": backend,
        "sessions": shared.sessions().len(),
        "waiting": {"statuses": statuses, "events": events, "events_dropped": dropped},
    });
    match error {
        None => (StatusCode::OK, axum::Json(body)),
        Some(error) => {
            body["status"] = json!("unavailable");
            body["error"] = json!(error);
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
        }
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    // Fleet counts come from the database, so every replica reports the whole fleet. A
    // failed query leaves its family as the last scrape saw it; the scrape still answers,
    // at once while the database is unreachable.
    let store = shared.store();
    let counts = if shared.outage().reachable() {
        FleetCounts {
            nodes: logged(store.count_nodes_by_state().await),
            instances: logged(store.count_instances_by_state().await),
            restarts: logged(store.restarts_by_server().await),
            rollouts: logged(store.count_rollouts_by_state().await),
            usage: logged(store.list_nodes().await).map(up_nodes_usage),
        }
    } else {
        FleetCounts::default()
    };
    (
        [(header::CONTENT_TYPE, corral_common::metrics::CONTENT_TYPE)],
        shared.metrics().encode_fleet(&counts),
    )
}

/// What the instances of each up node use, as its agent last reported it (a down node's
/// figures are stale, so its instances have no series).
fn up_nodes_usage(nodes: Vec<NodeRow>) -> Vec<(String, Vec<InstanceUsage>)> {
    nodes
        .into_iter()
        .filter(|n| n.state == NodeState::Up)
        .filter_map(|n| {
            let usage = crate::usage::from_json(&n.load?.instance_usage);
            (!usage.is_empty()).then_some((n.name, usage))
        })
        .collect()
}

/// A fleet count, or `None` (with a warning) when the database did not answer.
fn logged<T>(result: Result<T, StoreError>) -> Option<T> {
    result
        .inspect_err(|err| warn!(cause = %err, "metrics: could not read fleet counts"))
        .ok()
}

/// The address of the peer of an HTTP request (plain or TLS), for the audit log: the HTTP
/// server is served with it as connect info (`axum::extract::ConnectInfo<ClientAddr>`).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::SocketAddr);

impl ClientAddr {
    /// The address of a request as text; "" when it was not served with connect info (a
    /// router driven directly, in a unit test).
    pub fn of(extensions: &axum::http::Extensions) -> String {
        extensions
            .get::<axum::extract::ConnectInfo<ClientAddr>>()
            .map_or_else(String::new, |c| c.0.0.to_string())
    }
}

/// The plain HTTP listener: a TCP listener whose connections have `TCP_NODELAY`, so the
/// small answers blocking queries and event streams write at any moment go out at once
/// (no Nagle delay behind the client's delayed ACK).
pub struct PlainListener(pub tokio::net::TcpListener);

impl axum::serve::Listener for PlainListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own TCP listener, which this wraps, retries failed accepts itself.
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.0).await;
        // Without it the connection still works, only slower to answer.
        let _ = tcp.set_nodelay(true);
        (tcp, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, PlainListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, PlainListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, crate::http_tls::TlsListener>,
    > for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::http_tls::TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}
