//! The agent's HTTP side: `/health` (used by `agent check`), `/metrics`, and discovery
//! from the watch cache, over HTTP/JSON ([`crate::discovery::http`]) and gRPC `Query`
//! (HTTP/2 on the same port, [`crate::discovery::grpc`]); no token: it serves its host.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::Context;

pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(ctx.clone())
        .merge(crate::discovery::http::routes(ctx.discovery.clone(), None))
        // Only the Query methods: any other path stays a plain HTTP 404.
        .route_service(
            "/corral.v1.Query/{*method}",
            crate::discovery::grpc::service(ctx.discovery.clone()),
        )
}

/// 200 while the agent runs, whether or not a registry is reachable: the agent keeps
/// its services running through registry outages, so it is healthy then too.
async fn health(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    axum::Json(json!({
        "status": "ok",
        "node": ctx.config.node,
        "pid": std::process::id(),
        "registry": if ctx.connected.load(Ordering::Relaxed) { "connected" } else { "disconnected" },
        "dns": ctx.dns.map(|a| a.to_string()),
        "discovery_names": ctx.discovery.len(),
    }))
}

async fn metrics(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, corral_common::metrics::CONTENT_TYPE)],
        ctx.metrics.encode_with(
            &ctx.board.all(),
            &ctx.config.node,
            &ctx.cgroups
                .as_ref()
                .map_or_else(Vec::new, crate::facts::instance_usage),
        ),
    )
}
