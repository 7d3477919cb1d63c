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
use crate::server::Shared;
use crate::store::StoreError;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn health(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let backend = shared.store.backend().name();
    match shared.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(
                json!({"status": "ok", "database": backend, "sessions": shared.sessions.len()}),
            ),
        ),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"status": "unavailable", "database": backend, "error": err.to_string()}),
            ),
        ),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    // Fleet counts come from the database, so every replica reports the whole fleet. A
    // failed query leaves its family as the last scrape saw it; the scrape still answers.
    let store = &shared.store;
    let counts = FleetCounts {
        nodes: logged(store.count_nodes_by_state().await),
        instances: logged(store.count_instances_by_state().await),
        restarts: logged(store.restarts_by_server().await),
        rollouts: logged(store.count_rollouts_by_state().await),
    };
    (
        [(header::CONTENT_TYPE, corral_common::metrics::CONTENT_TYPE)],
        shared.metrics.encode_fleet(&counts),
    )
}

/// A fleet count, or `None` (with a warning) when the database did not answer.
fn logged<T>(result: Result<T, StoreError>) -> Option<T> {
    result
        .inspect_err(|err| warn!(cause = %err, "metrics: could not read fleet counts"))
        .ok()
}
