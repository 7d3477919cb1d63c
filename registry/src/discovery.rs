//! The discovery cache: every service name (`APP.SERVER.ADAPTER`) with its active
//! endpoints, computed from the database and published through a watch channel, so
//! `Query.Find` is a map lookup and `Query.Watch` wakes the moment the table changes.
//!
//! An endpoint is active exactly when its instance is running, is healthy (or has no
//! check), its node is up, and no rollout is draining it. The table is recomputed when
//! anything that decides that changes (status reports, node up/down, admin calls,
//! rollout steps), at most once per poke, and every second as a safety net.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use corral_proto::v1::Endpoint;
use tokio::sync::{Notify, watch};
use tracing::warn;

use crate::server::Shared;
use crate::store::{Store, StoreError};

/// Name -> endpoints sorted by host, then port.
pub type Table = HashMap<String, Arc<Vec<Endpoint>>>;

pub struct Discovery {
    table: watch::Sender<Arc<Table>>,
    poke: Notify,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            table: watch::Sender::new(Arc::new(Table::new())),
            poke: Notify::new(),
        }
    }
}

impl Discovery {
    /// Asks for a recomputation (coalesced).
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    pub fn table(&self) -> Arc<Table> {
        self.table.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Table>> {
        self.table.subscribe()
    }

    /// `host:port` strings per name, for config templates.
    pub fn endpoint_strings(&self) -> crate::spec::render::EndpointTable {
        let table = self.table();
        Arc::new(
            table
                .iter()
                .map(|(name, eps)| {
                    (
                        name.clone(),
                        eps.iter()
                            .map(|e| format!("{}:{}", e.host, e.port))
                            .collect(),
                    )
                })
                .collect(),
        )
    }
}

/// Computes the table from the database.
pub async fn compute(store: &Store) -> Result<Table, StoreError> {
    let nodes: HashMap<String, (bool, String)> = store
        .list_nodes()
        .await?
        .into_iter()
        .map(|n| (n.name, (n.state == crate::store::NodeState::Up, n.address)))
        .collect();
    let specs: HashMap<(String, String), crate::spec::Spec> = store
        .list_servers()
        .await?
        .into_iter()
        .map(|s| ((s.spec.app.clone(), s.spec.server.clone()), s.spec))
        .collect();
    let ports = store.all_ports().await?;
    let drained = store.drained_instances().await?;
    let mut table: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
    // Every adapter of every server has a name, even with no endpoint right now.
    for spec in specs.values() {
        for a in &spec.adapters {
            table
                .entry(format!("{}.{}.{}", spec.app, spec.server, a.name))
                .or_default();
        }
    }
    for i in store.all_instances().await? {
        let Some(spec) = specs.get(&(i.app.clone(), i.server.clone())) else {
            continue;
        };
        let node_up = nodes.get(&i.node).is_some_and(|(up, _)| *up);
        let healthy = spec.health.is_none() || i.health == "healthy";
        let draining = drained.contains(&(i.app.clone(), i.server.clone(), i.node.clone()));
        if i.state != "running" || !healthy || !node_up || draining || i.desired != "running" {
            continue;
        }
        let host = match &spec.external {
            Some((host, _)) => host.clone(),
            None => nodes
                .get(&i.node)
                .map(|(_, a)| a.clone())
                .unwrap_or_default(),
        };
        for a in &spec.adapters {
            let port = match &spec.external {
                Some((_, port)) => Some(*port),
                None => ports
                    .get(&(i.app.clone(), i.server.clone(), i.node.clone()))
                    .and_then(|p| p.get(&a.name).copied()),
            };
            if let Some(port) = port {
                table
                    .entry(format!("{}.{}.{}", i.app, i.server, a.name))
                    .or_default()
                    .push(Endpoint {
                        node: i.node.clone(),
                        host: host.clone(),
                        port: u32::from(port),
                    });
            }
        }
    }
    Ok(table
        .into_iter()
        .map(|(name, mut eps)| {
            eps.sort_by(|a, b| (&a.host, a.port, &a.node).cmp(&(&b.host, b.port, &b.node)));
            (name, Arc::new(eps))
        })
        .collect())
}

/// Keeps the table current until shutdown; when it changes, nodes whose config
/// templates may list endpoints get their desired state again (re-rendered).
pub async fn run(shared: Arc<Shared>) {
    let mut safety = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = shared.discovery.poke.notified() => {}
            _ = safety.tick() => {}
        }
        let table = match compute(&shared.store).await {
            Ok(t) => t,
            Err(e) => {
                warn!(cause = %e, "cannot compute the discovery table");
                continue;
            }
        };
        let changed = shared.discovery.table.send_if_modified(|current| {
            if **current == table {
                false
            } else {
                *current = Arc::new(table);
                true
            }
        });
        if changed {
            rerender(&shared).await;
        }
    }
}

/// Nodes running instances with config templates that call `endpoints(...)` are sent
/// their desired state again, rendered with the new table.
async fn rerender(shared: &Shared) {
    let Ok(servers) = shared.store.list_servers().await else {
        return;
    };
    let mut nodes: Vec<String> = servers
        .iter()
        .filter(|s| {
            s.spec
                .configs
                .iter()
                .any(|c| c.template.contains("endpoints"))
        })
        .flat_map(|s| s.spec.nodes.iter().cloned())
        .collect();
    nodes.sort();
    nodes.dedup();
    shared.sessions.notify(&nodes);
}
