//! The dashboard: server-rendered HTML on the registry's HTTP port, at `/`.
//!
//! Layout: [`session`] (login, sessions, who may act, the one guard every POST passes),
//! [`layout`] (the page shell, CSS, formatting), one module per page ([`fleet`]: nodes
//! and servers; [`server`]; [`instance`], with its [`log_tail`]; [`feeds`]: events, rollouts, packages;
//! [`audit`]),
//! [`live`] (server-sent events that keep pages current), [`actions`] (every change an
//! operator makes goes through [`actions::perform`]). Pages call the admin service's
//! functions ([`crate::admin`], [`crate::rollout`]) directly: the dashboard shows what the
//! CLI shows. htmx and its SSE extension are vendored in `registry/assets/` and served
//! from the binary; nothing is fetched at run time.

pub mod actions;
mod audit;
mod feeds;
mod fleet;
pub mod guard;
mod instance;
pub mod layout;
mod live;
mod log_tail;
mod server;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::html;

use crate::state::Shared;

pub use guard::Actor;
pub use session::{Access, Sessions};

/// What the dashboard's handlers share.
pub struct Web {
    pub shared: Arc<Shared>,
    pub sessions: Sessions,
}

/// The dashboard's routes, to merge into the HTTP router.
pub fn routes(shared: Arc<Shared>) -> Router {
    let web = Arc::new(Web {
        sessions: Sessions::new(&shared),
        shared,
    });
    Router::new()
        .route("/", get(fleet::nodes_page))
        .route("/servers", get(fleet::servers_page))
        .route("/servers/{server}", get(server::page))
        .route("/servers/{server}/{node}", get(instance::page))
        .route("/servers/{server}/{node}/log", get(log_tail::stream))
        .route("/events", get(feeds::events_page))
        .route("/rollouts", get(feeds::rollouts_page))
        .route("/rollouts/{id}", get(feeds::rollout_page))
        .route("/packages", get(feeds::packages_page))
        .route("/audit", get(audit::page))
        .route("/live", get(live::fleet))
        .route("/live/events", get(live::events))
        .route("/live/rollouts/{id}", get(live::rollout))
        .route("/act/control", post(actions::control))
        .route("/act/patch", post(actions::patch))
        .route("/act/rollback", post(actions::rollback))
        .route("/act/expand", post(actions::expand))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .layer(axum::middleware::map_response(no_store))
        .route("/assets/{name}", get(asset))
        .with_state(web)
}

/// Pages, fragments and streams are never stored: they carry a session's CSRF token and
/// what only a logged-in caller may read, and a page kept in the browser's back/forward
/// cache would keep its event streams (and, per host, one of the browser's few HTTP/1.1
/// connections) open after it is left.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

const HTMX: &[u8] = include_bytes!("../../assets/htmx.min.js");
const HTMX_SSE: &[u8] = include_bytes!("../../assets/htmx-ext-sse.min.js");
const CSS: &[u8] = include_bytes!("../../assets/dashboard.css");

/// The vendored scripts and the stylesheet. Their names carry the version, so they are
/// cached for a year.
async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        layout::HTMX_NAME => (HTMX, "text/javascript"),
        layout::HTMX_SSE_NAME => (HTMX_SSE, "text/javascript"),
        layout::CSS_NAME => (CSS, "text/css"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        body,
    )
        .into_response()
}

/// Why a dashboard request failed; shown on the page, naming what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// What the admin functions refused, with their message.
    #[error("{}", .0.message())]
    Admin(#[from] tonic::Status),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        use tonic::Code;
        let code = match &self {
            WebError::Admin(s) => match s.code() {
                Code::InvalidArgument => StatusCode::BAD_REQUEST,
                Code::NotFound => StatusCode::NOT_FOUND,
                Code::FailedPrecondition | Code::AlreadyExists => StatusCode::CONFLICT,
                Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                Code::PermissionDenied | Code::Unauthenticated => StatusCode::FORBIDDEN,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            WebError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::BadInput(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
        };
        let body = html! { div.flash.err role="alert" { (self.to_string()) } };
        (code, body).into_response()
    }
}
