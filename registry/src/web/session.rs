//! Who is looking, and whether they may act.
//!
//! With admin tokens, the operator logs in by pasting one; the registry answers with a
//! session cookie (a random id: HttpOnly, SameSite=Strict, Secure when the HTTP port
//! serves TLS, Path=/, expiring after [`SESSION_TTL`]). Sessions live in this replica's
//! memory: another replica, or this one after a restart, asks for the token again.
//! Without admin tokens (dev, loopback) there is no login.
//!
//! Every page gets its [`Access`] from [`access`], the one place that decides whether
//! the viewer may act (`can_act`: action buttons are shown). Every POST goes through
//! [`Actor`]'s extractor, the one guard: a session that may act, the session's CSRF token
//! in the `x-csrf-token` header, and an Origin (or Referer) naming this host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Web, WebError, layout};
use crate::auth::Tokens;
use crate::state::Shared;

/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The most sessions one replica keeps; the oldest go first.
const MAX_SESSIONS: usize = 10_000;
const COOKIE: &str = "corral_session";

struct Session {
    csrf: String,
    can_act: bool,
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
fn same(a: &str, b: &str) -> bool {
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

    /// What a token lets its holder do: None for a token that is not valid. Every valid
    /// token acts today; roles (admin/viewer) decide here.
    fn role_of(&self, token: &str) -> Option<bool> {
        self.tokens.accepts(token).then_some(true)
    }

    /// Starts a session for a valid token; returns its id.
    fn open(&self, token: &str) -> Option<String> {
        let can_act = self.role_of(token)?;
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
                can_act,
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
            return Some(Access {
                can_act: true,
                csrf: self.open_csrf.clone(),
                logged_in: false,
            });
        }
        let id = cookie(headers, COOKIE)?;
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let s = map.get(id).filter(|s| s.expires > Instant::now())?;
        Some(Access {
            can_act: s.can_act,
            csrf: s.csrf.clone(),
            logged_in: true,
        })
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

/// What the viewer of a page may do.
#[derive(Clone, Debug)]
pub struct Access {
    /// Action buttons are shown and POSTs are accepted.
    pub can_act: bool,
    /// Sent back by every POST in the `x-csrf-token` header.
    pub csrf: String,
    /// There is a session to log out of.
    pub logged_in: bool,
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

/// Who makes a change: a POST that passed the guard. Actions take one, so none can run
/// without the guard.
#[derive(Clone, Debug)]
pub struct Actor {
    /// Who, for the record: "token" or "open" (no login).
    pub who: &'static str,
}

impl FromRequestParts<Arc<Web>> for Actor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Actor, Response> {
        let access = Access::from_request_parts(parts, web).await?;
        guard(&parts.headers, &access).map_err(IntoResponse::into_response)?;
        Ok(Actor {
            who: if access.logged_in { "token" } else { "open" },
        })
    }
}

/// The one check of every POST: may act, CSRF token, same origin.
fn guard(headers: &HeaderMap, access: &Access) -> Result<(), WebError> {
    if !access.can_act {
        return Err(WebError::Forbidden(
            "this login may view the fleet but not change it".into(),
        ));
    }
    same_origin(headers)?;
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !same(sent, &access.csrf) {
        return Err(WebError::Forbidden(
            "the request's CSRF token is missing or stale: reload the page".into(),
        ));
    }
    Ok(())
}

/// The request comes from a page of this host: its Origin (or, without one, its Referer)
/// names the Host it was sent to.
fn same_origin(headers: &HeaderMap) -> Result<(), WebError> {
    let get = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let host = get(header::HOST).unwrap_or_default();
    let from = get(header::ORIGIN)
        .filter(|o| *o != "null")
        .or_else(|| get(header::REFERER))
        .ok_or_else(|| WebError::Forbidden("the request names no Origin or Referer".into()))?;
    let authority = from
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or_default());
    if host.is_empty() || authority != host {
        return Err(WebError::Forbidden(format!(
            "the request comes from {}, not from this dashboard ({})",
            corral_proto::text::quoted(corral_proto::text::prefix(from, 100)),
            corral_proto::text::quoted(corral_proto::text::prefix(host, 100)),
        )));
    }
    Ok(())
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
                p.muted { "Paste an admin token (the registry's --admin-token)." }
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
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Err(e) = same_origin(&headers) {
        return e.into_response();
    }
    match web.sessions.open(form.token.trim()) {
        Some(id) => {
            let cookie = web.sessions.cookie(&id, SESSION_TTL.as_secs());
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        None => (
            StatusCode::UNAUTHORIZED,
            login_form(Some("that token is not valid")),
        )
            .into_response(),
    }
}

pub async fn logout(
    State(web): State<Arc<Web>>,
    _actor: LogoutGuard,
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

/// Logging out needs the same origin and CSRF token as any POST, but not `can_act`.
pub struct LogoutGuard;

impl FromRequestParts<Arc<Web>> for LogoutGuard {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Self, Response> {
        let mut access = Access::from_request_parts(parts, web).await?;
        access.can_act = true;
        guard(&parts.headers, &access).map_err(IntoResponse::into_response)?;
        Ok(LogoutGuard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn origin_must_name_this_host() {
        let ok = headers(&[
            ("host", "127.0.0.1:17891"),
            ("origin", "http://127.0.0.1:17891"),
        ]);
        assert!(same_origin(&ok).is_ok());
        let tls = headers(&[("host", "reg:443"), ("origin", "https://reg:443")]);
        assert!(same_origin(&tls).is_ok());
        let by_referer = headers(&[
            ("host", "127.0.0.1:17891"),
            ("referer", "http://127.0.0.1:17891/servers/demo.app"),
        ]);
        assert!(same_origin(&by_referer).is_ok());
        for bad in [
            headers(&[
                ("host", "127.0.0.1:17891"),
                ("origin", "http://evil.example"),
            ]),
            headers(&[
                ("host", "127.0.0.1:17891"),
                ("origin", "http://127.0.0.1:17891.evil"),
            ]),
            headers(&[("host", "127.0.0.1:17891"), ("origin", "null")]),
            headers(&[("host", "127.0.0.1:17891")]),
            headers(&[("origin", "http://127.0.0.1:17891")]),
        ] {
            assert!(same_origin(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cookies_and_tokens() {
        let h = headers(&[("cookie", "a=1; corral_session=abc; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&headers(&[("cookie", "x=1")]), COOKIE), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }

    #[test]
    fn the_guard() {
        let h = headers(&[
            ("host", "h:1"),
            ("origin", "http://h:1"),
            ("x-csrf-token", "t0k"),
        ]);
        let access = |can_act, csrf: &str| Access {
            can_act,
            csrf: csrf.into(),
            logged_in: true,
        };
        assert!(guard(&h, &access(true, "t0k")).is_ok());
        let err = guard(&h, &access(true, "other")).expect_err("stale token");
        assert!(err.to_string().contains("CSRF"), "{err}");
        let err = guard(&h, &access(false, "t0k")).expect_err("viewer");
        assert!(err.to_string().contains("view"), "{err}");
    }
}
