//! Admitting an agent: check its Hello, prove or record its identity, record it `up`.

use std::net::IpAddr;

use corral_proto::PROTOCOL_VERSION;
use corral_proto::names::check_node_name;
use corral_proto::v1::Hello;
use rand::Rng;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::store::{JoinRecord, NodeState, Store, StoreError};

/// A Hello that passed every check.
pub struct Admitted {
    pub node: String,
    pub session_id: i64,
}

/// The shortest identity the registry records: agents send 64 hex digits (32 random bytes).
pub const MIN_IDENTITY_LEN: usize = 32;
/// The longest identity the registry accepts.
pub const MAX_IDENTITY_LEN: usize = 256;

pub fn identity_hash(identity: &str) -> String {
    hex::encode(Sha256::digest(identity.as_bytes()))
}

/// Checks the fields of a Hello; the error names the field at fault.
pub fn check_hello(hello: &Hello) -> Result<(), Status> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "agent speaks protocol version {}, this registry speaks version {PROTOCOL_VERSION}; \
             run an agent and registry of matching releases",
            hello.protocol_version
        )));
    }
    check_node_name(&hello.node).map_err(Status::invalid_argument)?;
    let len = hello.identity.len();
    if !(MIN_IDENTITY_LEN..=MAX_IDENTITY_LEN).contains(&len) {
        return Err(Status::invalid_argument(format!(
            "identity of node {:?} is {len} characters long; it must be {MIN_IDENTITY_LEN} to \
             {MAX_IDENTITY_LEN} (agents make up 64 hex digits)",
            hello.node
        )));
    }
    if hello.advertise_ip.parse::<IpAddr>().is_err() {
        return Err(Status::invalid_argument(format!(
            "advertise IP {} of node {:?} is not an IP address",
            corral_proto::text::quoted(&hello.advertise_ip),
            hello.node
        )));
    }
    Ok(())
}

fn refuse_identity(node: &str, up: bool) -> Status {
    if up {
        Status::failed_precondition(format!(
            "node name {node:?} is taken by a running agent with another identity; \
             start this agent with another --node name"
        ))
    } else {
        Status::failed_precondition(format!(
            "node name {node:?} belongs to another identity; if that host is gone, run \
             `registry node remove {node}` first, or start this agent with another --node name"
        ))
    }
}

/// Admits the agent that sent `hello` (already checked by [`check_hello`]) and records
/// its node `up` in the store.
pub async fn admit(
    store: &Store,
    hello: &Hello,
    join_token: Option<&str>,
    now_ms: i64,
) -> Result<Admitted, Status> {
    let facts = hello.facts.clone().unwrap_or_default();
    let session_id = rand::rng().random_range(1..i64::MAX);
    let mut record = JoinRecord {
        name: hello.node.clone(),
        identity_hash: String::new(),
        address: hello.advertise_ip.clone(),
        agent_version: hello.agent_version.clone(),
        hostname: facts.hostname,
        os: facts.os,
        kernel: facts.kernel,
        cpu_cores: i64::from(facts.cpu_cores),
        memory_bytes: i64::try_from(facts.memory_bytes).unwrap_or(i64::MAX),
        disk_bytes: i64::try_from(facts.disk_bytes).unwrap_or(i64::MAX),
        now_ms,
        session_id,
        data_dir: facts.data_dir.clone(),
        cgroups: facts.cgroups,
        cgroups_note: facts.cgroups_note.clone(),
    };
    // The usual joins take one statement: a known node rejoining with its identity, or
    // a new node joining with a valid token. Anything else (a name taken, an identity
    // not known, a token refused) is sorted out below from the node's row. At 10,000
    // agents joining at once on MySQL, the read before every write was a round trip in
    // each join (docs/benchmarks.md, "10,000 sessions").
    let allowed = crate::auth::join_allowed(join_token, &hello.join_token);
    record.identity_hash = identity_hash(&hello.identity);
    let first_try = if hello.new_identity && allowed {
        store.insert_node(&record).await
    } else {
        store.rejoin_node(&record).await
    };
    match first_try {
        Ok(()) => {
            return Ok(Admitted {
                node: record.name,
                session_id,
            });
        }
        Err(StoreError::NodeExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let existing = store.get_node(&hello.node).await?;
    match existing {
        Some(node) => {
            if identity_hash(&hello.identity) != node.identity_hash {
                return Err(refuse_identity(&hello.node, node.state == NodeState::Up));
            }
            record.identity_hash = node.identity_hash;
            store.rejoin_node(&record).await.map_err(|e| match e {
                StoreError::NodeExists(_) => refuse_identity(&hello.node, true),
                e => e.into(),
            })?;
            Ok(Admitted {
                node: record.name,
                session_id,
            })
        }
        None if !hello.new_identity => Err(Status::failed_precondition(format!(
            "node {:?} presented an identity this registry does not know (was the node \
             removed?); delete the identity file in the agent's data dir to join as a new node",
            hello.node
        ))),
        None => {
            if !allowed {
                let why = if hello.join_token.is_empty() {
                    "this registry needs a join token for a first join: start the agent with --join-token or CORRAL_JOIN_TOKEN"
                } else {
                    "the join token is not valid"
                };
                return Err(Status::unauthenticated(why));
            }
            record.identity_hash = identity_hash(&hello.identity);
            store.insert_node(&record).await.map_err(|e| match e {
                StoreError::NodeExists(_) => refuse_identity(&hello.node, true),
                e => e.into(),
            })?;
            Ok(Admitted {
                node: record.name,
                session_id,
            })
        }
    }
}
