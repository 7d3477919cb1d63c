//! Who may call what: admin calls (and discovery reads, unless public) need a bearer
//! token the registry was started with; agents need the join token for their first join
//! and their identity after that.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The bearer tokens admin calls may present (hashed; compared in constant time).
#[derive(Clone, Default)]
pub struct Tokens {
    hashes: Arc<Vec<[u8; 32]>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two digests.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    pub fn new(tokens: &[String]) -> Tokens {
        Tokens {
            hashes: Arc::new(tokens.iter().map(|t| digest(t)).collect()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn accepts(&self, token: &str) -> bool {
        let d = digest(token);
        self.hashes
            .iter()
            .fold(false, |found, h| found | same(h, &d))
    }

    /// Checks the `authorization: Bearer TOKEN` header of a call.
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.is_empty() {
            return Ok(());
        }
        let Some(header) = request.metadata().get("authorization") else {
            return Err(Status::unauthenticated(
                "this call needs an admin token: pass --token or set CORRAL_TOKEN",
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default();
        if self.accepts(token) {
            Ok(())
        } else {
            Err(Status::unauthenticated("the admin token is not valid"))
        }
    }
}

/// Checks admin tokens on every call of the service it wraps.
#[derive(Clone)]
pub struct AdminAuth(pub Tokens);

impl Interceptor for AdminAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.check(&request)?;
        Ok(request)
    }
}

/// Whether a join token matches (constant time); always true when none is required.
pub fn join_allowed(required: Option<&str>, presented: &str) -> bool {
    match required {
        None => true,
        Some(t) => same(&digest(t), &digest(presented)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t = Tokens::new(&["a".into(), "b".into()]);
        assert!(t.accepts("a") && t.accepts("b") && !t.accepts("c") && !t.accepts(""));
        let mut ok = Request::new(());
        ok.metadata_mut()
            .insert("authorization", "Bearer b".parse().expect("header"));
        assert!(t.check(&ok).is_ok());
        let err = t.check(&Request::new(())).expect_err("missing");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(
            Tokens::default().check(&Request::new(())).is_ok(),
            "no tokens: open"
        );
        assert!(
            join_allowed(None, "") && join_allowed(Some("j"), "j") && !join_allowed(Some("j"), "x")
        );
    }
}
