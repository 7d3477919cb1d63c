//! The admin gate: wraps the Admin service, and for every call resolves the token to a
//! [`Caller`], checks that the caller may make the call ([`crate::access`]), and records
//! the audit ([`crate::audit`]): refused calls here, mutating calls when they end (with
//! what their handler noted as target, and their outcome).
//!
//! It works on the HTTP request (rather than as a tonic interceptor) because it needs the
//! method's path, the caller's address and the response's status.
//!
//! Another front end (the web dashboard) does the same with the same parts: the caller of
//! a presented secret ([`Tokens::resolve`] / [`Tokens::check_header`]), whether it may
//! make a call ([`access::may`]), and the record of what it did ([`audit::record`] with
//! [`audit::entry`], or [`refused`] for a refusal, which also counts it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tracing::info;

use crate::access::{self, Access};
use crate::audit::{self, Note, Outcome};
use crate::auth::{Caller, Tokens};
use crate::metrics::RefusedLabels;
use crate::state::Shared;

/// The Admin service `S`, behind the gate.
#[derive(Clone)]
pub struct AdminGate<S> {
    inner: S,
    shared: Arc<Shared>,
    tokens: Tokens,
}

impl<S> AdminGate<S> {
    pub fn new(inner: S, shared: Arc<Shared>) -> AdminGate<S> {
        let tokens = Tokens::new(&shared.config().admin_tokens);
        AdminGate {
            inner,
            shared,
            tokens,
        }
    }
}

impl<S: NamedService> NamedService for AdminGate<S> {
    const NAME: &'static str = S::NAME;
}

/// The caller's address, as tonic's transport saw it; "" when unknown.
fn source<B>(req: &http::Request<B>) -> String {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
        .map_or_else(String::new, |a| a.to_string())
}

/// Calls outside the Admin service that are recorded when refused, by the names the
/// audit log and the refused-call counter give them: an agent's join, a discovery read
/// over gRPC or HTTP, a dashboard login.
pub const OTHER_CALLS: &[&str] = &["Join", "Query", "HttpDiscovery", "Login"];

/// Records a refused call: the audit, the counter, a log line.
pub fn refused(
    shared: &Shared,
    caller: Option<&Caller>,
    presented: bool,
    source: &str,
    method: &str,
    status: &Status,
) {
    let mut row = audit::entry(
        caller,
        source,
        method,
        "",
        Outcome::Refused,
        status.message(),
    );
    if caller.is_none() {
        row.caller = if presented {
            "(unknown token)"
        } else {
            "(no token)"
        }
        .to_string();
    }
    refused_row(shared, row, status);
}

/// Records a refused call described by `row` (its caller, source, call and target set):
/// the audit, the counter (by the status's code), a log line.
pub fn refused_row(shared: &Shared, row: audit::AuditRow, status: &Status) {
    let reason = match status.code() {
        tonic::Code::PermissionDenied => "permission_denied",
        tonic::Code::Unauthenticated => "unauthenticated",
        _ => "invalid",
    };
    let method = row.method.as_str();
    let call = if access::known(method) || OTHER_CALLS.contains(&method) {
        method
    } else {
        "other"
    };
    shared
        .metrics()
        .admin_refused
        .get_or_create(&RefusedLabels {
            reason: reason.to_string(),
            call: call.to_string(),
        })
        .inc();
    info!(caller = %row.caller, source = %row.source, method, reason, "call refused");
    audit::record(shared, row);
}

impl<S, B> tower::Service<http::Request<B>> for AdminGate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let method = access::method_of(req.uri().path()).to_string();
        let source = source(&req);
        let header = req.headers().get(http::header::AUTHORIZATION);
        let presented = header.is_some();
        let header = header.map(|h| h.to_str().unwrap_or_default());
        let caller = match self.tokens.check_header(header) {
            Ok(c) => c,
            Err(status) => {
                refused(&self.shared, None, presented, &source, &method, &status);
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        if let Err(status) = access::may(&caller, &method) {
            refused(&self.shared, Some(&caller), true, &source, &method, &status);
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let note = Note::default();
        req.extensions_mut().insert(caller.clone());
        req.extensions_mut().insert(note.clone());
        // The service was made ready for this call; a clone takes its place for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = inner.call(req);
        if Access::of(&method) != Access::Mutate {
            return Box::pin(fut);
        }
        let mut pending = Pending {
            shared: self.shared.clone(),
            caller,
            source,
            method,
            note,
            done: false,
        };
        Box::pin(async move {
            let response = fut.await;
            // A unary call that failed answers with its status in the headers; one that
            // succeeded, in the trailers.
            match &response {
                Ok(r) => match Status::from_header_map(r.headers()) {
                    Some(s) if s.code() != tonic::Code::Ok => {
                        pending.finish(Outcome::Failed, s.message());
                    }
                    _ => pending.finish(Outcome::Ok, ""),
                },
                Err(_) => pending.finish(Outcome::Failed, "the call failed in the transport"),
            }
            response
        })
    }
}

/// A mutating call on its way: recorded when it ends, or, when the caller goes away first
/// (its future dropped), as failed with a message saying so.
struct Pending {
    shared: Arc<Shared>,
    caller: Caller,
    source: String,
    method: String,
    note: Note,
    done: bool,
}

impl Pending {
    fn finish(&mut self, outcome: Outcome, error: &str) {
        self.done = true;
        let row = audit::entry(
            Some(&self.caller),
            &self.source,
            &self.method,
            &self.note.get(),
            outcome,
            error,
        );
        audit::record(&self.shared, row);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.finish(
                Outcome::Failed,
                "cancelled: the caller went away before the call ended (what it had done by \
                 then stays done)",
            );
        }
    }
}
