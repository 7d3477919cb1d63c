//! Peer tickets: what lets one node fetch a package from another.
//!
//! The registry decides who gets a package from whom (`Agent.Sources`); the
//! serving node must not serve anyone else. A ticket is the HMAC-SHA256 of the package,
//! the node it is for and an expiry, keyed with the serving node's identity hash: the hex
//! sha256 of the identity the node proves itself with. The registry stores that hash and
//! the node can compute it from its secret, so both can make a ticket and nobody else
//! can, without a round trip or a shared key to distribute. A ticket names one node and
//! one package, and expires.

use ring::hmac;

/// The message a ticket authenticates.
fn message(sha256: &str, node: &str, expires_ms: i64) -> String {
    format!("corral-peer-v1\n{sha256}\n{node}\n{expires_ms}")
}

/// The ticket for `node` to fetch `sha256` from the node whose identity hash is `key`.
pub fn issue(key: &str, sha256: &str, node: &str, expires_ms: i64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
    hex::encode(hmac::sign(
        &key,
        message(sha256, node, expires_ms).as_bytes(),
    ))
}

/// Why a ticket was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("the ticket expired")]
    Expired,
    #[error("the ticket is not valid for this node, package and expiry")]
    Invalid,
}

/// Checks a ticket presented at `now_ms` (constant time).
pub fn check(
    key: &str,
    sha256: &str,
    node: &str,
    expires_ms: i64,
    ticket: &str,
    now_ms: i64,
) -> Result<(), TicketError> {
    if now_ms > expires_ms {
        return Err(TicketError::Expired);
    }
    let tag = hex::decode(ticket).map_err(|_| TicketError::Invalid)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
    hmac::verify(&key, message(sha256, node, expires_ms).as_bytes(), &tag)
        .map_err(|_| TicketError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_holds_for_its_node_package_and_time_only() {
        let t = issue("key", "abc", "node-b", 1000);
        assert_eq!(check("key", "abc", "node-b", 1000, &t, 999), Ok(()));
        assert_eq!(
            check("key", "abc", "node-b", 1000, &t, 1001),
            Err(TicketError::Expired)
        );
        for (key, sha, node, exp) in [
            ("other", "abc", "node-b", 1000),
            ("key", "abd", "node-b", 1000),
            ("key", "abc", "node-c", 1000),
            ("key", "abc", "node-b", 2000),
        ] {
            assert_eq!(
                check(key, sha, node, exp, &t, 0),
                Err(TicketError::Invalid),
                "{key} {sha} {node} {exp}"
            );
        }
        assert_eq!(
            check("key", "abc", "node-b", 1000, "zz", 0),
            Err(TicketError::Invalid)
        );
    }
}
