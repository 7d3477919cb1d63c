//! Who is looking, and whether they may act.
//!
//! With admin tokens, the operator logs in by pasting one; the registry answers with a
//! session cookie (a random id: HttpOnly, SameSite=Strict, Secure when the HTTP port
//! serves TLS, Path=/, expiring after [`SESSION_TTL`]). Sessions live in this replica's
//! memory: another replica, or this one after a restart, asks for the token again.
//! Without admin tokens (dev, loopback) there is no login.
//!
//! A session holds the [`Caller`] its token resolved to (name and role). Every page gets
//! its [`Access`] from [`Sessions::access`]; whether it may act (`can_act`: action buttons
//! are shown) comes from the caller's role, decided in [`crate::access::may_change`].
//! Every POST goes through the one guard in [`super::guard`]. A wrong token at the login
//! is a refused call ("Login"): audited and counted like the gRPC side's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Web, layout};
use crate::auth::{Caller, Tokens};
use crate::gate;
use crate::state::Shared;

/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The most sessions one replica keeps; the oldest go first.
const MAX_SESSIONS: usize = 10_000;
const COOKIE: &str = "corral_session";

struct Session {
    csrf: String,
    caller: Caller,
    /// The `authorization` header of the token, for calls this replica forwards to
    /// another for the caller (the log tail of a node connected there).
    bearer: String,
    expires: Instant,
}

/// The logged-in sessions of this replica.
pub struct Sessions {
    tokens: Tokens,
    /// The cookie gets `Secure`: the HTTP port serves TLS.
    secure: bool,
    /// The CSRF token of pages when there is no login (no admin tokens).
    open_csrf: String,
    map: Mutex<HashMap<String, Session>>,
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Constant-time equality of two strings of the same length.
pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    pub fn new(shared: &Shared) -> Sessions {
        Sessions {
            tokens: Tokens::new(&shared.config().admin_tokens),
            secure: shared.config().http_tls.is_some(),
            open_csrf: random_id(),
            map: Mutex::default(),
        }
    }

    /// Whether pages need a login at all.
    pub fn login_required(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Starts a session for a valid token; returns its id.
    fn open(&self, token: &str) -> Option<String> {
        let caller = self.tokens.resolve(token)?;
        let id = random_id();
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Session {
                csrf: random_id(),
                caller,
                bearer: format!("Bearer {token}"),
                expires: now + SESSION_TTL,
            },
        );
        Some(id)
    }

    fn close(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// The access of a request, from its cookie; None: it must log in.
    pub fn access(&self, headers: &HeaderMap) -> Option<Access> {
        if !self.login_required() {
            return Some(Access::of(
                Caller::anonymous(),
                self.open_csrf.clone(),
                None,
            ));
        }
        let id = cookie(headers, COOKIE)?;
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let s = map.get(id).filter(|s| s.expires > Instant::now())?;
        Some(Access::of(
            s.caller.clone(),
            s.csrf.clone(),
            Some(s.bearer.clone()),
        ))
    }

    fn cookie(&self, id: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let value =
            format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}");
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Who looks at a page, and what they may do.
#[derive(Clone)]
pub struct Access {
    /// The token's name and role (anonymous, an admin, without login).
    pub caller: Caller,
    /// Action buttons are shown and POSTs are accepted: from the caller's role.
    pub can_act: bool,
    /// Sent back by every POST in the `x-csrf-token` header.
    pub csrf: String,
    /// There is a session to log out of.
    pub logged_in: bool,
    /// The session's `authorization` header (None without login).
    pub bearer: Option<String>,
}

impl Access {
    pub fn of(caller: Caller, csrf: String, bearer: Option<String>) -> Access {
        Access {
            can_act: crate::access::may_change(&caller),
            caller,
            csrf,
            logged_in: bearer.is_some(),
            bearer,
        }
    }
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token or the CSRF token.
        write!(
            f,
            "{}:{} can_act={}",
            self.caller.name, self.caller.role, self.can_act
        )
    }
}

/// Pages without a session go to the login page (htmx requests are told to, by header).
impl FromRequestParts<Arc<Web>> for Access {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Access, Response> {
        web.sessions.access(&parts.headers).ok_or_else(|| {
            if parts.headers.contains_key("hx-request") {
                (StatusCode::UNAUTHORIZED, [("hx-redirect", "/login")]).into_response()
            } else {
                Redirect::to("/login").into_response()
            }
        })
    }
}

pub async fn login_page(State(web): State<Arc<Web>>) -> Response {
    if !web.sessions.login_required() {
        return Redirect::to("/").into_response();
    }
    login_form(None).into_response()
}

fn login_form(error: Option<&str>) -> Markup {
    layout::bare(
        "Log in",
        html! {
            form.login method="post" action="/login" {
                h1 { "Corral" }
                p.muted { "Paste a token (the registry's --admin-token or --viewer-token)." }
                @if let Some(e) = error { div.flash.err role="alert" { (e) } }
                input type="password" name="token" autocomplete="off" autofocus required
                    placeholder="token";
                button.primary type="submit" { "Log in" }
            }
        },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login(
    State(web): State<Arc<Web>>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Err(e) = super::guard::same_origin(&headers) {
        return e.into_response();
    }
    match web.sessions.open(form.token.trim()) {
        Some(id) => {
            let cookie = web.sessions.cookie(&id, SESSION_TTL.as_secs());
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        None => {
            let status = tonic::Status::unauthenticated("the token is not valid");
            let source = crate::http::ClientAddr::of(&extensions);
            gate::refused(
                &web.shared,
                None,
                true,
                &source,
                crate::access::LOGIN,
                &status,
            );
            (
                StatusCode::UNAUTHORIZED,
                login_form(Some("that token is not valid")),
            )
                .into_response()
        }
    }
}

pub async fn logout(
    State(web): State<Arc<Web>>,
    _actor: super::guard::LogoutGuard,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = cookie(&headers, COOKIE) {
        web.sessions.close(id);
    }
    let cookie = web.sessions.cookie("", 0);
    if headers.contains_key("hx-request") {
        // htmx follows a redirect itself and would swap the login page into the target.
        return ([(header::SET_COOKIE, cookie)], [("hx-redirect", "/login")]).into_response();
    }
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_tokens() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; corral_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&HeaderMap::new(), COOKIE), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
