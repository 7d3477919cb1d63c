//! A stable hash of a [`ServerSpec`](crate::v1::ServerSpec): a process started from one
//! spec must be restarted on another. The agent compares it with the one it started a
//! process from; the registry stamps rendered config files with it.

use prost::Message;
use sha2::{Digest, Sha256};

use crate::v1::ServerSpec;

pub fn spec_hash(spec: &ServerSpec) -> String {
    // Maps encode in arbitrary order; hash a copy with the environment sorted.
    let mut env: Vec<(&String, &String)> = spec.env.iter().collect();
    env.sort();
    let mut h = Sha256::new();
    let mut copy = spec.clone();
    copy.env.clear();
    h.update(copy.encode_to_vec());
    for (k, v) in env {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}
