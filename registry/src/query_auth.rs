//! Who may read discovery (`Query.Find`/`Watch`): a caller with an admin token, anyone
//! when the registry runs with `--public-discovery`, and an agent with its node identity
//! (its watch cache follows names for the clients of its host, who need no token of
//! their own).
//!
//! The interceptor is synchronous, so an identity is only noted there
//! ([`NodeClaim`]); the call checks it ([`Verifier::check`]) against the node's
//! recorded identity. A proven identity is remembered for a while, so an agent's watches
//! are not refused while the database is unreachable.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use corral_agent::discovery::cache::{IDENTITY_HEADER, NODE_HEADER};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::auth::Tokens;
use crate::state::Shared;

/// The node and identity an agent presented, to be checked by the call.
#[derive(Clone)]
pub struct NodeClaim {
    pub node: String,
    pub identity: String,
}

/// Checks every discovery call: a token, public discovery, or a node claim.
#[derive(Clone)]
pub struct QueryAuth {
    tokens: Tokens,
    public: bool,
    /// Where a refusal is recorded (the audit log and the refused-call counter).
    shared: Arc<Shared>,
}

impl QueryAuth {
    pub fn new(shared: Arc<Shared>) -> QueryAuth {
        QueryAuth {
            tokens: Tokens::new(&shared.config().admin_tokens),
            public: shared.config().public_discovery,
            shared,
        }
    }
}

/// The address a call came from, "" when unknown.
fn source<T>(request: &Request<T>) -> String {
    request
        .remote_addr()
        .map_or_else(String::new, |a| a.to_string())
}

impl Interceptor for QueryAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if self.public {
            return Ok(request);
        }
        let token = self.tokens.check(&request).map(|_| ());
        if token.is_ok() {
            return Ok(request);
        }
        let md = request.metadata();
        let claim = match (md.get(NODE_HEADER), md.get(IDENTITY_HEADER)) {
            (Some(node), Some(identity)) => match (node.to_str(), identity.to_str()) {
                (Ok(node), Ok(identity)) => Some(NodeClaim {
                    node: node.to_string(),
                    identity: identity.to_string(),
                }),
                _ => None,
            },
            _ => None,
        };
        match claim {
            Some(claim) => {
                request.extensions_mut().insert(claim);
                Ok(request)
            }
            None => match token {
                Ok(()) => Ok(request),
                Err(status) => {
                    let presented = request.metadata().get("authorization").is_some();
                    crate::gate::refused(
                        &self.shared,
                        None,
                        presented,
                        &source(&request),
                        "Query",
                        &status,
                    );
                    Err(status)
                }
            },
        }
    }
}

/// How long a proven identity is taken without asking the database again.
const PROVEN_FOR: Duration = Duration::from_secs(300);

/// Checks node claims against the database, remembering the ones proven.
#[derive(Default)]
pub struct Verifier {
    /// Node -> (hash of the identity proven, when).
    proven: Mutex<HashMap<String, (String, Instant)>>,
}

impl Verifier {
    /// Ok when the call carries no claim (the interceptor let it through) or a claim
    /// that matches the node's recorded identity.
    pub async fn check<T>(&self, shared: &Shared, request: &Request<T>) -> Result<(), Status> {
        let Some(claim) = request.extensions().get::<NodeClaim>() else {
            return Ok(());
        };
        let hash = crate::join::identity_hash(&claim.identity);
        let remembered = self
            .proven
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&claim.node)
            .filter(|(h, _)| *h == hash)
            .map(|(_, at)| at.elapsed() < PROVEN_FOR);
        if remembered == Some(true) {
            return Ok(());
        }
        let refused = || {
            Status::unauthenticated(format!(
                "node {} did not prove its identity (discovery needs an admin token or a node's identity)",
                corral_proto::text::quoted(&claim.node)
            ))
        };
        match shared.store().get_node(&claim.node).await {
            Ok(Some(node)) if node.identity_hash == hash => {
                self.proven
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(claim.node.clone(), (hash, Instant::now()));
                Ok(())
            }
            Ok(_) => {
                let status = refused();
                let mut row = crate::audit::entry(
                    None,
                    &source(request),
                    "Query",
                    "",
                    crate::audit::Outcome::Refused,
                    status.message(),
                );
                row.caller = format!("(node {})", claim.node);
                crate::gate::refused_row(shared, row, &status);
                Err(status)
            }
            // The database does not answer: an identity proven before still counts.
            Err(_) if remembered.is_some() => Ok(()),
            Err(e) => Err(Status::unavailable(format!(
                "cannot check node {}'s identity now: {e}",
                corral_proto::text::quoted(&claim.node)
            ))),
        }
    }
}
