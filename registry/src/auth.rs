//! Who may call what: admin calls (and discovery reads, unless public) need a bearer
//! token the registry was started with; agents need the join token for their first join
//! and their identity after that.
//!
//! Every token has a name and a role ([`Role`]): an `admin` may do everything, a `viewer`
//! may read everything but secrets and change nothing. A presented secret resolves to a
//! [`Caller`] ([`Tokens::resolve`]); what each Admin call needs is decided in one place,
//! [`crate::access`]. Clients present only the secret; the name is what the audit log
//! ([`crate::audit`]) records.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::{Request, Status};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything.
    Admin,
    /// Every read but secrets; no change.
    Viewer,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One token as configured: its name (what the audit log shows), role and secret (what
/// clients present).
#[derive(Clone, PartialEq, Eq)]
pub struct NamedToken {
    pub name: String,
    pub role: Role,
    pub secret: String,
}

impl std::fmt::Debug for NamedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret: configs are logged and printed in errors.
        write!(f, "{}:{}:<secret>", self.name, self.role)
    }
}

/// Who made a call: the name of the token presented and its role. Put into the request's
/// extensions by the admin gate ([`crate::gate`]), so handlers and the audit see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// The caller of a registry that runs without tokens (loopback or `--no-auth`): anyone
/// who reaches it may do everything.
pub const ANONYMOUS: &str = "anonymous";

impl Caller {
    pub fn anonymous() -> Caller {
        Caller {
            name: ANONYMOUS.to_string(),
            role: Role::Admin,
        }
    }
}

/// The tokens callers may present (hashed; compared in constant time).
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Arc<Vec<([u8; 32], Caller)>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two digests.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    pub fn new(tokens: &[NamedToken]) -> Tokens {
        Tokens {
            entries: Arc::new(
                tokens
                    .iter()
                    .map(|t| {
                        (
                            digest(&t.secret),
                            Caller {
                                name: t.name.clone(),
                                role: t.role,
                            },
                        )
                    })
                    .collect(),
            ),
        }
    }

    /// No token at all: calls are open.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller a presented secret belongs to; None when it is no token's. Every entry
    /// is compared, so the time taken does not tell which one matched.
    pub fn resolve(&self, secret: &str) -> Option<Caller> {
        let d = digest(secret);
        let mut found = None;
        for (h, caller) in self.entries.iter() {
            if same(h, &d) && found.is_none() {
                found = Some(caller);
            }
        }
        found.cloned()
    }

    /// Whether a secret is any token's (admin or viewer).
    pub fn accepts(&self, secret: &str) -> bool {
        self.resolve(secret).is_some()
    }

    /// The caller of a call, from its `authorization: Bearer TOKEN` header; anonymous
    /// (an admin) when the registry has no tokens.
    pub fn check<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|h| h.to_str().unwrap_or_default());
        self.check_header(header)
    }

    /// The same from the header's text (None: no header), for callers that hold an
    /// `http::Request` (the gate, the dashboard).
    pub fn check_header(&self, header: Option<&str>) -> Result<Caller, Status> {
        if self.is_empty() {
            return Ok(Caller::anonymous());
        }
        let Some(header) = header else {
            return Err(Status::unauthenticated(
                "this call needs an admin token: pass --token or set CORRAL_TOKEN",
            ));
        };
        let token = header.strip_prefix("Bearer ").unwrap_or_default();
        self.resolve(token)
            .ok_or_else(|| Status::unauthenticated("the admin token is not valid"))
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

    fn token(name: &str, role: Role, secret: &str) -> NamedToken {
        NamedToken {
            name: name.into(),
            role,
            secret: secret.into(),
        }
    }

    #[test]
    fn tokens() {
        let t = Tokens::new(&[
            token("alice", Role::Admin, "a"),
            token("bob", Role::Viewer, "b"),
        ]);
        assert!(t.accepts("a") && t.accepts("b") && !t.accepts("c") && !t.accepts(""));
        assert_eq!(t.resolve("b").map(|c| c.name), Some("bob".to_string()));
        assert_eq!(t.resolve("b").map(|c| c.role), Some(Role::Viewer));
        let mut ok = Request::new(());
        ok.metadata_mut()
            .insert("authorization", "Bearer a".parse().expect("header"));
        assert_eq!(t.check(&ok).expect("valid").name, "alice");
        let err = t.check(&Request::new(())).expect_err("missing");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            Tokens::default()
                .check(&Request::new(()))
                .expect("no tokens: open"),
            Caller::anonymous()
        );
        assert!(
            join_allowed(None, "") && join_allowed(Some("j"), "j") && !join_allowed(Some("j"), "x")
        );
        assert!(!format!("{:?}", token("x", Role::Admin, "s3cr3t")).contains("s3cr3t"));
    }
}
