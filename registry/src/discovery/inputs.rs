//! What the discovery tables are computed from: nodes, specs, ports, drained and
//! assigned instances read from the database, with the reports applied on top; and the
//! tables themselves (the endpoints clients find, the instances templates list).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use corral_proto::v1::Endpoint;

use super::Table;
use crate::spec::Spec;
use crate::spec::render::InstanceEntry;
use crate::store::{Store, StoreError};

/// An instance's reported state and health.
#[derive(Clone)]
pub(super) struct Reported {
    pub(super) app: String,
    pub(super) server: String,
    pub(super) node: String,
    pub(super) state: String,
    pub(super) health: String,
}

/// What decides the table, read from the database.
#[derive(Default)]
pub struct Inputs {
    /// Node -> (up, advertise address).
    pub(super) nodes: HashMap<String, (bool, String)>,
    pub(super) specs: HashMap<(String, String), Spec>,
    pub(super) ports: BTreeMap<(String, String, String), BTreeMap<String, u16>>,
    pub(super) drained: HashSet<(String, String, String)>,
    /// (app, server) -> its instances.
    pub(super) instances: HashMap<(String, String), Vec<Instance>>,
}

pub(super) struct Instance {
    pub(super) node: String,
    pub(super) ordinal: u32,
    pub(super) desired: String,
    pub(super) state: String,
    pub(super) health: String,
}

impl Inputs {
    /// Reads everything the table depends on.
    pub async fn read(store: &Store) -> Result<Inputs, StoreError> {
        let nodes = store
            .list_nodes()
            .await?
            .into_iter()
            .map(|n| (n.name, (n.state == crate::store::NodeState::Up, n.address)))
            .collect();
        let specs = store
            .list_servers()
            .await?
            .into_iter()
            .map(|s| ((s.spec.app.clone(), s.spec.server.clone()), s.spec))
            .collect();
        let ports = store.all_ports().await?;
        let drained = store.drained_instances().await?;
        let mut instances: HashMap<(String, String), Vec<Instance>> = HashMap::new();
        for i in store.all_instances().await? {
            instances
                .entry((i.app, i.server))
                .or_default()
                .push(Instance {
                    node: i.node,
                    ordinal: u32::try_from(i.ordinal).unwrap_or(0),
                    desired: i.desired,
                    state: i.state,
                    health: i.health,
                });
        }
        Ok(Inputs {
            nodes,
            specs,
            ports,
            drained,
            instances,
        })
    }

    /// Records a report; whether the instance is known and anything changed.
    pub(super) fn apply(&mut self, r: &Reported) -> bool {
        let Some(i) = self
            .instances
            .get_mut(&(r.app.clone(), r.server.clone()))
            .and_then(|all| all.iter_mut().find(|i| i.node == r.node))
        else {
            return false;
        };
        if i.state == r.state && i.health == r.health {
            return false;
        }
        i.state.clone_from(&r.state);
        i.health.clone_from(&r.health);
        true
    }

    /// Every assigned instance of every server, by `APP.SERVER` and `APP.SERVER.ADAPTER`.
    pub fn instances_table(&self) -> HashMap<String, Vec<InstanceEntry>> {
        self.specs
            .keys()
            .flat_map(|(app, server)| self.server_instances(app, server))
            .collect()
    }

    /// What `instances()` lists for one server: every instance the operator has not
    /// stopped, healthy or not, by ordinal.
    pub fn server_instances(&self, app: &str, server: &str) -> Vec<(String, Vec<InstanceEntry>)> {
        let key = (app.to_string(), server.to_string());
        let Some(spec) = self.specs.get(&key) else {
            return Vec::new();
        };
        let mut entries: Vec<InstanceEntry> = Vec::new();
        for i in self.instances.get(&key).into_iter().flatten() {
            if i.desired != "running" {
                continue;
            }
            let instance = (app.to_string(), server.to_string(), i.node.clone());
            let host = match &spec.external {
                Some((host, _)) => host.clone(),
                None => self
                    .nodes
                    .get(&i.node)
                    .map(|(_, a)| a.clone())
                    .unwrap_or_default(),
            };
            let ports: BTreeMap<String, u16> = match &spec.external {
                Some((_, port)) => spec
                    .adapters
                    .iter()
                    .map(|a| (a.name.clone(), *port))
                    .collect(),
                None => self.ports.get(&instance).cloned().unwrap_or_default(),
            };
            entries.push(InstanceEntry {
                node: i.node.clone(),
                host,
                port: 0,
                ports,
                ordinal: i.ordinal,
                state: i.state.clone(),
                healthy: i.state == "running" && (spec.health.is_none() || i.health == "healthy"),
                weight: 0,
                tags: Vec::new(),
                meta: BTreeMap::new(),
            });
        }
        entries.sort_by_key(|e| e.ordinal);
        let with_port = |adapter: Option<&str>| -> Vec<InstanceEntry> {
            let adapter = adapter.or(spec.adapters.first().map(|a| a.name.as_str()));
            entries
                .iter()
                .map(|e| {
                    let meta =
                        spec.metadata
                            .effective(adapter.unwrap_or_default(), &e.node, e.ordinal);
                    InstanceEntry {
                        port: adapter.and_then(|a| e.ports.get(a).copied()).unwrap_or(0),
                        weight: meta.weight,
                        tags: meta.tags,
                        meta: meta.meta,
                        ..e.clone()
                    }
                })
                .collect()
        };
        let mut out = vec![(format!("{app}.{server}"), with_port(None))];
        for a in &spec.adapters {
            out.push((
                format!("{app}.{server}.{}", a.name),
                with_port(Some(&a.name)),
            ));
        }
        out
    }

    /// The whole table: every adapter of every server has a name, even with no endpoint.
    pub fn table(&self) -> Table {
        self.specs
            .keys()
            .flat_map(|(app, server)| self.server_names(app, server))
            .collect()
    }

    /// The names of one server's adapters, each with its active endpoints sorted by
    /// host, then port.
    pub(super) fn server_names(
        &self,
        app: &str,
        server: &str,
    ) -> Vec<(String, Arc<Vec<Endpoint>>)> {
        let key = (app.to_string(), server.to_string());
        let Some(spec) = self.specs.get(&key) else {
            return Vec::new();
        };
        let mut names: Vec<(String, Vec<Endpoint>)> = spec
            .adapters
            .iter()
            .map(|a| (format!("{app}.{server}.{}", a.name), Vec::new()))
            .collect();
        for i in self.instances.get(&key).into_iter().flatten() {
            let instance = (app.to_string(), server.to_string(), i.node.clone());
            let node_up = self.nodes.get(&i.node).is_some_and(|(up, _)| *up);
            let healthy = spec.health.is_none() || i.health == "healthy";
            let draining = self.drained.contains(&instance);
            if i.state != "running" || !healthy || !node_up || draining || i.desired != "running" {
                continue;
            }
            let host = match &spec.external {
                Some((host, _)) => host.clone(),
                None => self
                    .nodes
                    .get(&i.node)
                    .map(|(_, a)| a.clone())
                    .unwrap_or_default(),
            };
            let ports = self.ports.get(&instance);
            for (a, (_, eps)) in spec.adapters.iter().zip(names.iter_mut()) {
                let port = match &spec.external {
                    Some((_, port)) => Some(*port),
                    None => ports.and_then(|p| p.get(&a.name).copied()),
                };
                if let Some(port) = port {
                    let meta = spec.metadata.effective(&a.name, &i.node, i.ordinal);
                    eps.push(Endpoint {
                        node: i.node.clone(),
                        host: host.clone(),
                        port: u32::from(port),
                        weight: meta.weight,
                        tags: meta.tags,
                        meta: meta.meta,
                    });
                }
            }
        }
        names
            .into_iter()
            .map(|(name, mut eps)| {
                eps.sort_by(|a, b| (&a.host, a.port, &a.node).cmp(&(&b.host, b.port, &b.node)));
                // An external service has one address, however many nodes check it: it
                // is listed once (named after the first node that finds it healthy).
                if spec.external.is_some() {
                    eps.dedup_by(|b, a| a.host == b.host && a.port == b.port);
                }
                (name, Arc::new(eps))
            })
            .collect()
    }
}
