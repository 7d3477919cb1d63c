//! The one guard of every POST ([`Actor`]'s extractor): a session, an Origin (or Referer)
//! naming this host, the session's CSRF token in the `x-csrf-token` header, and a role
//! that may change the fleet ([`crate::access`]). A request it refuses is answered 403
//! (or sent to the login) and recorded like a refused gRPC call ([`gate::refused`]: the
//! audit log and `corral_registry_admin_refused_total`).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tonic::Status;

use super::session::same;
use super::{Access, Web, WebError};
use crate::auth::Caller;
use crate::gate;
use crate::http::ClientAddr;

/// Who makes a change: a POST that passed the guard. Actions take one, so none can run
/// without the guard.
#[derive(Clone, Debug)]
pub struct Actor {
    /// The token's name and role (anonymous without login).
    pub caller: Caller,
    /// The peer's address, for the audit log.
    pub source: String,
}

impl FromRequestParts<Arc<Web>> for Actor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Actor, Response> {
        let source = ClientAddr::of(&parts.extensions);
        let call = super::actions::call_of(parts.uri.path());
        let access = match Access::from_request_parts(parts, web).await {
            Ok(a) => a,
            Err(to_login) => {
                let status = Status::unauthenticated("no dashboard session: log in first");
                gate::refused(&web.shared, None, false, &source, call, &status);
                return Err(to_login);
            }
        };
        if let Err(err) = guard(&parts.headers, &access, call) {
            let status = Status::permission_denied(err.to_string());
            gate::refused(
                &web.shared,
                Some(&access.caller),
                true,
                &source,
                call,
                &status,
            );
            return Err(err.into_response());
        }
        Ok(Actor {
            caller: access.caller,
            source,
        })
    }
}

/// The one check of every POST: same origin, CSRF token, a role that may make `call`.
fn guard(headers: &HeaderMap, access: &Access, call: &str) -> Result<(), WebError> {
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
    if !access.can_act {
        let why = crate::access::may(&access.caller, call).err().map_or_else(
            || format!("token {} may not change the fleet", access.caller.name),
            |s| s.message().to_string(),
        );
        return Err(WebError::Forbidden(why));
    }
    Ok(())
}

/// The request comes from a page of this host: its Origin (or, without one, its Referer)
/// names the Host it was sent to.
pub fn same_origin(headers: &HeaderMap) -> Result<(), WebError> {
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

/// Logging out needs the same origin and CSRF token as any POST, but not `can_act`.
pub struct LogoutGuard;

impl FromRequestParts<Arc<Web>> for LogoutGuard {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Self, Response> {
        let mut access = Access::from_request_parts(parts, web).await?;
        access.can_act = true;
        guard(&parts.headers, &access, "Logout").map_err(IntoResponse::into_response)?;
        Ok(LogoutGuard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

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
    fn the_guard() {
        let h = headers(&[
            ("host", "h:1"),
            ("origin", "http://h:1"),
            ("x-csrf-token", "t0k"),
        ]);
        let access = |role, csrf: &str| {
            let caller = Caller {
                name: "eve".into(),
                role,
            };
            Access::of(caller, csrf.into(), Some("Bearer x".into()))
        };
        assert!(guard(&h, &access(Role::Admin, "t0k"), "ControlServer").is_ok());
        let err = guard(&h, &access(Role::Admin, "other"), "Expand").expect_err("stale token");
        assert!(err.to_string().contains("CSRF"), "{err}");
        let viewer = access(Role::Viewer, "t0k");
        assert!(!viewer.can_act);
        let err = guard(&h, &viewer, "ControlServer").expect_err("viewer");
        let err = err.to_string();
        assert!(
            err.contains("role viewer") && err.contains("ControlServer") && err.contains("eve"),
            "{err}"
        );
    }
}
