//! Planned absences do not change configs that restart their instances.
//!
//! An instance that the registry itself is restarting — a config restart it delivered, or
//! a rollout draining and switching it — leaves discovery for a moment. If the files of
//! its peers that list endpoints (and restart on change) followed that, each restart
//! would restart the peers, whose restarts would restart it again: the feedback loop of a
//! gateway whose config lists its own peers. So for those files an instance in a planned
//! absence is rendered as it was listed just before: a peers list stays stable across
//! the restarts the registry makes on purpose, and still follows real failures (an
//! instance that does not come back is dropped once its absence is no longer planned).
//! Files reloaded by signal or not at all see the live tables: a reload is cheap and a
//! load balancer must stop sending to a draining instance.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use corral_proto::v1::Endpoint;

use super::plan::InstanceKey;
use crate::discovery::Table;
use crate::spec::render::{InstanceTable, Tables};

/// What each instance looked like when it was last not in a planned absence.
#[derive(Default)]
pub struct Memory {
    /// The endpoints that listed it, by name.
    listed: HashMap<InstanceKey, Vec<(String, Endpoint)>>,
    /// Its `instances()` state and health.
    states: HashMap<InstanceKey, (String, bool)>,
}

/// `app.server` of an `app.server[.adapter]` name.
fn server_of(name: &str) -> Option<(&str, &str)> {
    corral_proto::names::Name::parse(name).map(|n| (n.app, n.server))
}

impl Memory {
    /// The live tables (for files that do not restart their instance) and the frozen
    /// ones (for files that do), remembering what instances not absent look like now.
    pub fn tables(
        &mut self,
        endpoints: &Table,
        instances: &InstanceTable,
        absent: &HashSet<InstanceKey>,
    ) -> (Tables, Tables) {
        let mut listed: HashMap<InstanceKey, Vec<(String, Endpoint)>> = HashMap::new();
        for (name, eps) in endpoints {
            let Some((app, server)) = server_of(name) else {
                continue;
            };
            for e in eps.iter() {
                listed
                    .entry((app.into(), server.into(), e.node.clone()))
                    .or_default()
                    .push((name.clone(), e.clone()));
            }
        }
        for (name, entries) in instances.iter() {
            let Some((app, server)) = server_of(name) else {
                continue;
            };
            for e in entries {
                let key = (app.to_string(), server.to_string(), e.node.clone());
                if !absent.contains(&key) {
                    self.states.insert(key, (e.state.clone(), e.healthy));
                }
            }
        }
        let all: HashSet<InstanceKey> = listed.keys().cloned().collect();
        for key in self.listed.keys().cloned().collect::<Vec<_>>() {
            if !absent.contains(&key) && !all.contains(&key) {
                self.listed.remove(&key);
            }
        }
        for (key, names) in listed {
            if !absent.contains(&key) {
                self.listed.insert(key, names);
            }
        }

        let live = Tables {
            endpoints: Arc::new(
                endpoints
                    .iter()
                    .map(|(n, eps)| (n.clone(), eps.to_vec()))
                    .collect(),
            ),
            instances: instances.clone(),
        };
        if absent.is_empty() {
            return (live.clone(), live);
        }
        let mut frozen_eps: HashMap<String, Vec<Endpoint>> = endpoints
            .iter()
            .map(|(n, eps)| (n.clone(), eps.to_vec()))
            .collect();
        for key in absent {
            for (name, e) in self.listed.get(key).into_iter().flatten() {
                let list = frozen_eps.entry(name.clone()).or_default();
                if !list.iter().any(|x| x.node == e.node) {
                    list.push(e.clone());
                    list.sort_by(|a, b| {
                        (&a.host, a.port, &a.node).cmp(&(&b.host, b.port, &b.node))
                    });
                }
            }
        }
        let mut frozen_instances = HashMap::clone(instances);
        for (name, entries) in frozen_instances.iter_mut() {
            let Some((app, server)) = server_of(name) else {
                continue;
            };
            for e in entries.iter_mut() {
                let key = (app.to_string(), server.to_string(), e.node.clone());
                if absent.contains(&key)
                    && let Some((state, healthy)) = self.states.get(&key)
                {
                    e.state.clone_from(state);
                    e.healthy = *healthy;
                }
            }
        }
        let frozen = Tables {
            endpoints: Arc::new(frozen_eps),
            instances: Arc::new(frozen_instances),
        };
        (live, frozen)
    }

    /// Forgets instances that no longer exist.
    pub fn retain(&mut self, exists: impl Fn(&InstanceKey) -> bool) {
        self.listed.retain(|k, _| exists(k));
        self.states.retain(|k, _| exists(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(node: &str, host: &str) -> Endpoint {
        Endpoint {
            node: node.into(),
            host: host.into(),
            port: 30300,
            ..Endpoint::default()
        }
    }

    /// `host:port` of the endpoints listed for the test's name.
    fn listed(tables: &Tables) -> Vec<String> {
        tables.endpoints["chain0.gw.P2P"]
            .iter()
            .map(|e| format!("{}:{}", e.host, e.port))
            .collect()
    }

    fn table(eps: Vec<Endpoint>) -> Table {
        HashMap::from([("chain0.gw.P2P".to_string(), Arc::new(eps))])
    }

    #[test]
    fn an_instance_restarted_on_purpose_stays_listed_for_restarting_files() {
        let mut m = Memory::default();
        let none = HashSet::new();
        let all = table(vec![ep("a", "10.0.0.1"), ep("b", "10.0.0.2")]);
        let (live, frozen) = m.tables(&all, &InstanceTable::default(), &none);
        assert_eq!(live.endpoints, frozen.endpoints);

        // b restarts for its config: live drops it, frozen keeps it in its place.
        let absent = HashSet::from([("chain0".into(), "gw".into(), "b".into())]);
        let (live, frozen) = m.tables(
            &table(vec![ep("a", "10.0.0.1")]),
            &InstanceTable::default(),
            &absent,
        );
        assert_eq!(listed(&live), ["10.0.0.1:30300"]);
        assert_eq!(listed(&frozen), ["10.0.0.1:30300", "10.0.0.2:30300"]);

        // Its absence is no longer planned (it did not come back): it goes.
        let (_, frozen) = m.tables(
            &table(vec![ep("a", "10.0.0.1")]),
            &InstanceTable::default(),
            &none,
        );
        assert_eq!(listed(&frozen), ["10.0.0.1:30300"]);
    }
}
