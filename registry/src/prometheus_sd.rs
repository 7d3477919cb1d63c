//! `GET /v1/prometheus/targets`: every instance's metrics adapter (the spec's
//! `[metrics] adapter`) in Prometheus' `http_sd` format, a JSON list of
//! `{"targets": ["HOST:PORT"], "labels": {...}}`, one per instance, labelled `app`,
//! `server`, `node` and `ordinal` (and `__metrics_path__` when the spec names a `path`).
//!
//! An instance is listed while the operator has not stopped it, healthy or not, as
//! `instances()` lists it: Prometheus should see a target go down, not vanish.
//!
//! ```yaml
//! scrape_configs:
//!   - job_name: corral
//!     http_sd_configs:
//!       - url: http://10.0.0.1:17891/v1/prometheus/targets
//!         authorization: { credentials: TOKEN }   # unless --public-discovery
//! ```

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use corral_agent::discovery::http::{Auth, error};
use serde_json::{Value, json};

use crate::spec::Spec;
use crate::spec::render::InstanceTable;
use crate::state::Shared;

pub fn routes(shared: Arc<Shared>, auth: Auth) -> Router {
    Router::new()
        .route("/v1/prometheus/targets", get(targets))
        .with_state((shared, auth))
}

async fn targets(
    State((shared, auth)): State<(Arc<Shared>, Auth)>,
    headers: HeaderMap,
    extensions: Extensions,
) -> Response {
    if let Err(why) = auth(&headers, &extensions) {
        return error(StatusCode::UNAUTHORIZED, why);
    }
    let servers = match shared.store().list_servers().await {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the servers: {e}"),
            );
        }
    };
    let specs: Vec<Spec> = servers.into_iter().map(|s| s.spec).collect();
    axum::Json(document(&specs, &shared.discovery().instances())).into_response()
}

/// `HOST:PORT`, with an IPv6 host in brackets.
fn target(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The `http_sd` document for these specs and instances.
pub fn document(specs: &[Spec], instances: &InstanceTable) -> Value {
    let mut groups = Vec::new();
    for spec in specs {
        let Some(metrics) = &spec.metadata.metrics else {
            continue;
        };
        let name = format!("{}.{}.{}", spec.app, spec.server, metrics.adapter);
        let mut seen = HashSet::new();
        for i in instances.get(&name).into_iter().flatten() {
            if i.port == 0 || i.host.is_empty() {
                continue;
            }
            let address = target(&i.host, i.port);
            // An external service is checked by several nodes but is one target.
            if !seen.insert(address.clone()) {
                continue;
            }
            let mut labels = BTreeMap::from([
                ("app", spec.app.clone()),
                ("server", spec.server.clone()),
                ("node", i.node.clone()),
                ("ordinal", i.ordinal.to_string()),
            ]);
            if let Some(path) = &metrics.path {
                labels.insert("__metrics_path__", path.clone());
            }
            groups.push(json!({ "targets": [address], "labels": labels }));
        }
    }
    Value::Array(groups)
}
