//! Choosing one endpoint of a service for each call: the resolver's policies.
//!
//! * [`Policy::RoundRobin`] (the default): each endpoint in turn.
//! * [`Policy::Random`]: any endpoint, uniformly.
//! * [`Policy::Weighted`]: at random, in proportion to each endpoint's `weight` (the
//!   spec's `weight`, default 1; weight 0 is chosen only when every weight is 0).
//! * [`Policy::ConsistentHash`]: the same key goes to the same endpoint while the list
//!   stays; when an endpoint comes or goes only the keys that were on it (or now belong
//!   to it) move. Rendezvous hashing with a hash that is fixed for good (FNV-1a with a
//!   64-bit finaliser), so every client, in any process and any version, agrees.
//! * [`Policy::PreferNode`]: round robin over the endpoints on the given node (the
//!   caller's own, by default `$CORRAL_NODE`, which the agent sets for every service),
//!   over all of them when that node has none.
//!
//! A [`Balancer`] applies a policy to a [`crate::Resolver`]'s live list, optionally
//! keeping to the endpoints with a tag.

use std::sync::atomic::{AtomicUsize, Ordering};

use corral_proto::v1::Endpoint;
use rand::Rng;
use tokio::sync::watch;

/// How a [`Balancer`] chooses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    #[default]
    RoundRobin,
    Random,
    Weighted,
    /// Needs a key: [`Balancer::pick_for`].
    ConsistentHash,
    /// Prefer endpoints on this node.
    PreferNode(String),
}

impl Policy {
    /// Prefer the caller's own node: `$CORRAL_NODE` (set by the agent for its services);
    /// plain round robin without it.
    pub fn same_node() -> Policy {
        match std::env::var("CORRAL_NODE") {
            Ok(node) if !node.is_empty() => Policy::PreferNode(node),
            _ => Policy::RoundRobin,
        }
    }
}

/// Chooses among endpoints by a policy; cheap to share between tasks.
#[derive(Debug, Default)]
pub struct Picker {
    pub policy: Policy,
    next: AtomicUsize,
}

/// FNV-1a over `parts` (each followed by a 0xff byte, which no UTF-8 text contains),
/// then splitmix64's finaliser so that close inputs land far apart.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Picker {
    pub fn new(policy: Policy) -> Picker {
        Picker {
            policy,
            next: AtomicUsize::new(0),
        }
    }

    fn turn(&self, n: usize) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % n
    }

    /// One endpoint of `eps`; `key` is what [`Policy::ConsistentHash`] hashes (without
    /// one it goes round robin). None when `eps` is empty.
    pub fn pick<'a>(&self, eps: &'a [Endpoint], key: Option<&[u8]>) -> Option<&'a Endpoint> {
        if eps.is_empty() {
            return None;
        }
        match &self.policy {
            Policy::RoundRobin => eps.get(self.turn(eps.len())),
            Policy::Random => eps.get(rand::rng().random_range(0..eps.len())),
            Policy::Weighted => {
                let total: u64 = eps.iter().map(|e| u64::from(e.weight)).sum();
                if total == 0 {
                    return eps.get(rand::rng().random_range(0..eps.len()));
                }
                let mut at = rand::rng().random_range(0..total);
                eps.iter().find(|e| {
                    let w = u64::from(e.weight);
                    if at < w {
                        true
                    } else {
                        at -= w;
                        false
                    }
                })
            }
            Policy::ConsistentHash => match key {
                Some(key) => eps.iter().max_by_key(|e| {
                    let addr = format!("{}:{}", e.host, e.port);
                    stable_hash(&[key, addr.as_bytes()])
                }),
                None => eps.get(self.turn(eps.len())),
            },
            Policy::PreferNode(node) => {
                let local: Vec<&Endpoint> = eps.iter().filter(|e| &e.node == node).collect();
                if local.is_empty() {
                    eps.get(self.turn(eps.len()))
                } else {
                    local.get(self.turn(local.len())).copied()
                }
            }
        }
    }
}

/// A policy over a resolver's live list.
pub struct Balancer {
    endpoints: watch::Receiver<Vec<Endpoint>>,
    picker: Picker,
    tag: Option<String>,
}

impl Balancer {
    pub fn new(endpoints: watch::Receiver<Vec<Endpoint>>, policy: Policy) -> Balancer {
        Balancer {
            endpoints,
            picker: Picker::new(policy),
            tag: None,
        }
    }

    /// Keep to the endpoints tagged `tag`.
    pub fn with_tag(mut self, tag: &str) -> Balancer {
        self.tag = Some(tag.to_string());
        self
    }

    /// The endpoints it chooses from now.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let all = self.endpoints.borrow();
        match &self.tag {
            Some(t) => all.iter().filter(|e| e.tags.contains(t)).cloned().collect(),
            None => all.clone(),
        }
    }

    /// The endpoint for the next call; None while there is none.
    pub fn pick(&self) -> Option<Endpoint> {
        self.picker.pick(&self.endpoints(), None).cloned()
    }

    /// The endpoint for `key` (consistent hash); other policies ignore the key.
    pub fn pick_for(&self, key: &[u8]) -> Option<Endpoint> {
        self.picker.pick(&self.endpoints(), Some(key)).cloned()
    }

    /// Waits until the list changes (Err once the resolver has stopped).
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.endpoints.changed().await
    }
}

#[cfg(test)]
mod tests;
