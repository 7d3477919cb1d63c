//! The discovery cache: every service name (`APP.SERVER.ADAPTER`) with its active
//! endpoints, computed from the database and published through a watch channel, so
//! `Query.Find` is a map lookup. `Query.Watch` subscribes to one name: each watched name
//! has a channel of its own, sent to only when that name's list changes, so a change
//! wakes exactly the watchers of the names it changed.
//!
//! An endpoint is active exactly when its instance is running, is healthy (or has no
//! check), its node is up, and no rollout is draining it. The table is recomputed when
//! anything that decides that changes (status reports, node up/down, admin calls,
//! rollout steps), at most once per poke, and every [`SAFETY_NET`] in case a poke was
//! missed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use corral_proto::v1::Endpoint;
use tokio::sync::{Notify, watch};
use tracing::warn;

use crate::server::Shared;
use crate::store::{Store, StoreError};

/// How often the table is recomputed with no poke. Every change that matters pokes (here,
/// or through the change feed from another replica), so this only bounds how long a
/// missed poke could go unnoticed; it reads every node, so it is not cheap on a big
/// fleet.
const SAFETY_NET: Duration = Duration::from_secs(10);

/// Name -> endpoints sorted by host, then port.
pub type Table = HashMap<String, Arc<Vec<Endpoint>>>;

/// One name's endpoints as its watchers see them (empty while the name is unknown).
pub type Watched = Arc<Vec<Endpoint>>;

pub struct Discovery {
    table: watch::Sender<Arc<Table>>,
    /// The watched names, each with its own channel. A name leaves the map when its last
    /// watcher has gone (at the next publish); all of them at shutdown (None from then
    /// on), which ends every watch stream.
    watched: Mutex<Option<HashMap<String, watch::Sender<Watched>>>>,
    poke: Notify,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            table: watch::Sender::new(Arc::new(Table::new())),
            watched: Mutex::new(Some(HashMap::new())),
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

    /// A receiver of `name`'s endpoints: the list now, then every change of it. After
    /// shutdown has begun, its sender is already gone: the list now, then the end.
    pub fn watch_name(&self, name: &str) -> watch::Receiver<Watched> {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = watched.as_ref().and_then(|w| w.get(name)) {
            return tx.subscribe();
        }
        // Under the lock, so a publish cannot slip in between reading the table and
        // registering the name.
        let now = self.table.borrow().get(name).cloned().unwrap_or_default();
        let (tx, rx) = watch::channel(now);
        if let Some(w) = watched.as_mut() {
            w.insert(name.to_string(), tx);
        }
        rx
    }

    /// Replaces the table if it differs and tells the watchers of every name whose list
    /// changed. Returns whether anything changed.
    fn publish(&self, table: Table) -> bool {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = self.table.send_if_modified(|current| {
            if **current == table {
                false
            } else {
                *current = Arc::new(table);
                true
            }
        });
        let table = self.table.borrow().clone();
        let Some(watched) = watched.as_mut() else {
            return changed;
        };
        watched.retain(|name, tx| {
            if tx.is_closed() {
                return false;
            }
            if changed {
                let now = table.get(name).cloned().unwrap_or_default();
                tx.send_if_modified(|seen| {
                    if **seen == *now {
                        false
                    } else {
                        *seen = now;
                        true
                    }
                });
            }
            true
        });
        changed
    }

    /// Ends every watch (their streams finish once they have sent what they hold).
    fn close_watches(&self) {
        *self.watched.lock().unwrap_or_else(PoisonError::into_inner) = None;
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
    let mut safety = tokio::time::interval(SAFETY_NET);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => {
                shared.discovery.close_watches();
                return;
            }
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
        if shared.discovery.publish(table) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(node: &str, port: u32) -> Endpoint {
        Endpoint {
            node: node.into(),
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn table(entries: &[(&str, Vec<Endpoint>)]) -> Table {
        entries
            .iter()
            .map(|(n, e)| (n.to_string(), Arc::new(e.clone())))
            .collect()
    }

    #[test]
    fn a_watcher_wakes_only_for_its_own_name() {
        let d = Discovery::default();
        assert!(d.publish(table(&[("a.b.Main", vec![ep("n1", 1)])])));
        let mut rx = d.watch_name("a.b.Main");
        let mut unknown = d.watch_name("x.y.Main");
        assert_eq!(*rx.borrow_and_update().as_ref(), vec![ep("n1", 1)]);
        assert!(unknown.borrow_and_update().is_empty());

        // Another name changes: nothing for either watcher.
        assert!(d.publish(table(&[
            ("a.b.Main", vec![ep("n1", 1)]),
            ("c.d.Main", vec![ep("n2", 2)]),
        ])));
        assert!(matches!(rx.has_changed(), Ok(false)));
        assert!(matches!(unknown.has_changed(), Ok(false)));

        // The same table again: not a change at all.
        assert!(!d.publish(table(&[
            ("a.b.Main", vec![ep("n1", 1)]),
            ("c.d.Main", vec![ep("n2", 2)]),
        ])));

        // Its own name changes: one wake-up with the new list.
        assert!(d.publish(table(&[("a.b.Main", vec![ep("n1", 1), ep("n3", 3)])])));
        assert!(matches!(rx.has_changed(), Ok(true)));
        assert_eq!(rx.borrow_and_update().len(), 2);
        assert!(matches!(unknown.has_changed(), Ok(false)));
    }

    #[test]
    fn names_without_watchers_are_forgotten_and_shutdown_ends_watches() {
        let d = Discovery::default();
        let rx = d.watch_name("a.b.Main");
        let count = |d: &Discovery| {
            d.watched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map_or(0, HashMap::len)
        };
        assert_eq!(count(&d), 1);
        drop(rx);
        d.publish(Table::new());
        assert_eq!(count(&d), 0);

        let rx = d.watch_name("a.b.Main");
        d.close_watches();
        assert!(rx.has_changed().is_err(), "the sender is gone at shutdown");
        // A watch that starts during shutdown gets the list now and then its end.
        let mut late = d.watch_name("a.b.Main");
        assert!(late.borrow_and_update().is_empty());
        assert!(late.has_changed().is_err());
    }
}
