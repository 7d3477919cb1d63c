//! Who gets a package from whom: the registry's choice of sources for `Agent.Sources`.
//!
//! Each package (by sha256) has a swarm: the nodes that asked for it recently, each with
//! the address it serves peers on and the source it was given (its parent: the registry
//! or another node). The first [`REGISTRY_FANOUT`] nodes get the package from the
//! registry; every later one gets it from a member with the fewest children, preferring
//! the members that joined first (they hold the most bytes). Members serve what they have
//! while still receiving it, so the swarm is a tree that streams: a level adds the time of
//! a few chunks, not of a transfer. The registry thus sends a package about
//! `REGISTRY_FANOUT` times, however many nodes install it.
//!
//! A node never gets one of its own descendants (they wait for its bytes: a cycle would
//! stall). A peer a node reports as failed or corrupt is not given to anyone again until
//! it asks for the package itself. With no peer left, the registry serves.
//!
//! The swarm lives in this replica's memory: with several replicas, each builds its own
//! tree for the nodes whose requests reach it (more registry egress, same correctness).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Nodes the registry serves a package to directly, per swarm.
pub const REGISTRY_FANOUT: usize = 2;
/// Children a member is given before others with fewer are preferred; past it, when
/// every member has as many, the least loaded one still gets more (never the registry).
pub const PEER_FANOUT: usize = 3;
/// A swarm nobody asked about for this long is forgotten.
pub const SWARM_IDLE: Duration = Duration::from_secs(600);

/// Where a node is to download from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Registry,
    Peer { node: String, address: String },
}

#[derive(Debug)]
struct Member {
    node: String,
    /// "IP:PORT" it serves peers on; None: it serves none.
    address: Option<String>,
    /// Its source: None is the registry.
    parent: Option<String>,
    /// Reported failed or corrupt by another node since it last asked: not given again.
    suspect: bool,
}

#[derive(Debug)]
struct Swarm {
    /// In the order they first asked.
    members: Vec<Member>,
    touched: Instant,
}

/// The swarms of the packages being distributed, one per sha256.
#[derive(Debug, Default)]
pub struct Swarms {
    swarms: HashMap<String, Swarm>,
}

/// What a node asks for: the package, who it is, where it serves and which peers failed.
pub struct Ask<'a> {
    pub sha256: &'a str,
    pub node: &'a str,
    pub address: Option<String>,
    pub failed: &'a [String],
    pub corrupt: &'a [String],
}

impl Swarms {
    /// The source for `ask.node`, recorded as its parent.
    pub fn choose(&mut self, ask: &Ask<'_>, now: Instant) -> Source {
        self.swarms
            .retain(|_, s| now.duration_since(s.touched) < SWARM_IDLE);
        let swarm = self
            .swarms
            .entry(ask.sha256.to_string())
            .or_insert_with(|| Swarm {
                members: Vec::new(),
                touched: now,
            });
        swarm.touched = now;
        for m in &mut swarm.members {
            if ask.failed.contains(&m.node) || ask.corrupt.contains(&m.node) {
                m.suspect = true;
            }
        }
        let me = match swarm.members.iter().position(|m| m.node == ask.node) {
            Some(i) => {
                let m = &mut swarm.members[i];
                m.address = ask.address.clone();
                m.suspect = false;
                i
            }
            None => {
                swarm.members.push(Member {
                    node: ask.node.to_string(),
                    address: ask.address.clone(),
                    parent: None,
                    suspect: false,
                });
                swarm.members.len() - 1
            }
        };
        let source = swarm.pick(me);
        swarm.members[me].parent = match &source {
            Source::Registry => None,
            Source::Peer { node, .. } => Some(node.clone()),
        };
        source
    }

    #[cfg(test)]
    fn parent(&self, sha: &str, node: &str) -> Option<Option<String>> {
        let swarm = self.swarms.get(sha)?;
        let m = swarm.members.iter().find(|m| m.node == node)?;
        Some(m.parent.clone())
    }
}

impl Swarm {
    fn children(&self, node: &str, except: usize) -> usize {
        self.members
            .iter()
            .enumerate()
            .filter(|(i, m)| *i != except && m.parent.as_deref() == Some(node))
            .count()
    }

    /// Whether `ancestor` is on the path from `node` up to the registry.
    fn descends_from(&self, node: &str, ancestor: &str) -> bool {
        let mut at = node;
        // Bounded: a path visits each member at most once.
        for _ in 0..=self.members.len() {
            if at == ancestor {
                return true;
            }
            match self
                .members
                .iter()
                .find(|m| m.node == at)
                .and_then(|m| m.parent.as_deref())
            {
                Some(parent) => at = parent,
                None => return false,
            }
        }
        true
    }

    fn pick(&self, me: usize) -> Source {
        let node = self.members[me].node.as_str();
        let from_registry = self
            .members
            .iter()
            .enumerate()
            .filter(|(i, m)| *i != me && m.parent.is_none())
            .count();
        if from_registry < REGISTRY_FANOUT {
            return Source::Registry;
        }
        let best = self
            .members
            .iter()
            .enumerate()
            .filter(|(i, m)| {
                *i != me && m.address.is_some() && !m.suspect && !self.descends_from(&m.node, node)
            })
            .min_by_key(|(i, m)| (self.children(&m.node, me).min(PEER_FANOUT), *i));
        match best {
            Some((_, m)) => Source::Peer {
                node: m.node.clone(),
                address: m.address.clone().unwrap_or_default(),
            },
            None => Source::Registry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask<'a>(node: &'a str, failed: &'a [String], corrupt: &'a [String]) -> Ask<'a> {
        Ask {
            sha256: "p",
            node,
            address: Some(format!("{node}:1")),
            failed,
            corrupt,
        }
    }

    fn peer(s: &Source) -> &str {
        match s {
            Source::Registry => "registry",
            Source::Peer { node, .. } => node,
        }
    }

    #[test]
    fn the_registry_serves_a_few_and_the_rest_form_a_tree() {
        let mut s = Swarms::default();
        let now = Instant::now();
        let names: Vec<String> = (0..16).map(|i| format!("n{i:02}")).collect();
        let got: Vec<String> = names
            .iter()
            .map(|n| peer(&s.choose(&ask(n, &[], &[]), now)).to_string())
            .collect();
        assert_eq!(got.iter().filter(|g| *g == "registry").count(), 2);
        // Each member serves at most PEER_FANOUT while some have fewer.
        for n in &names {
            let children = got.iter().filter(|g| *g == n).count();
            assert!(children <= PEER_FANOUT, "{n} serves {children}");
        }
        // Asking again keeps the tree: the same node gets a source, not a second seat.
        assert_eq!(peer(&s.choose(&ask("n00", &[], &[]), now)), "registry");
        // A node never gets its own descendant; with its parent failed it gets another.
        let parent = s.parent("p", "n05").flatten().expect("a peer");
        let failed = vec![parent.clone()];
        let again = s.choose(&ask("n05", &failed, &[]), now);
        let new = peer(&again).to_string();
        assert_ne!(new, parent);
        assert_ne!(new, "n05");
        if new != "registry" {
            let swarm = &s.swarms["p"];
            assert!(!swarm.descends_from(&new, "n05"), "{new} descends from n05");
        }
        // The failed peer is given to nobody else.
        let late = s.choose(&ask("late", &[], &[]), now);
        assert_ne!(peer(&late), parent);
    }

    #[test]
    fn with_every_peer_failed_or_corrupt_the_registry_serves() {
        let mut s = Swarms::default();
        let now = Instant::now();
        for n in ["a", "b", "c"] {
            s.choose(&ask(n, &[], &[]), now);
        }
        assert_eq!(peer(&s.choose(&ask("c", &[], &[]), now)), "a");
        let failed = vec!["a".to_string()];
        let corrupt = vec!["b".to_string()];
        assert_eq!(
            s.choose(&ask("c", &failed, &corrupt), now),
            Source::Registry
        );
        // A node that serves nobody (no address) is never a source.
        let mut s = Swarms::default();
        for n in ["a", "b"] {
            s.choose(&ask(n, &[], &[]), now);
        }
        let mut quiet = ask("c", &[], &[]);
        quiet.address = None;
        s.choose(&quiet, now);
        let d = s.choose(&ask("d", &[], &[]), now);
        assert!(matches!(peer(&d), "a" | "b"));
        // Forgotten when idle.
        s.choose(&ask("x", &[], &[]), now + SWARM_IDLE);
        assert_eq!(s.parent("p", "a"), None);
    }
}
