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
//!
//! A status report does not wait for that: once it is recorded, its server's names are
//! recomputed at once from the inputs of the last recomputation with that instance's new
//! state ([`Discovery::instances_reported`], once per batch), so a watcher hears of a crash or a recovery
//! without a round of database reads in between. The recomputation that follows reads
//! the database again and confirms it; reports that arrive while it reads are applied on
//! top of what it read, so it never publishes an older state than one already sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use corral_proto::v1::Endpoint;
use tokio::sync::{Notify, watch};
use tracing::warn;

use crate::spec::render::{InstanceEntry, InstanceTable, Tables};
use crate::state::Shared;
use crate::store::{Store, StoreError};

mod inputs;

pub use inputs::Inputs;
use inputs::Reported;

/// How often the table is recomputed with no poke. Every change that matters pokes (here,
/// or through the change feed from another replica), so this only bounds how long a
/// missed poke could go unnoticed; it reads every node, so it is not cheap on a big
/// fleet.
const SAFETY_NET: Duration = Duration::from_secs(10);

/// Name -> endpoints sorted by host, then port.
pub type Table = HashMap<String, Arc<Vec<Endpoint>>>;

/// One name's endpoints as its watchers see them: None while no server has the name.
pub type Watched = Option<Arc<Vec<Endpoint>>>;

pub struct Discovery {
    table: watch::Sender<Arc<Table>>,
    /// What `instances()` in templates lists, published with the table; its version
    /// moves on every change, which wakes the config renderer.
    instances: watch::Sender<InstanceTable>,
    /// Bumped after every recomputation (something in the fleet changed).
    recomputes: watch::Sender<u64>,
    /// The watched names, each with its own channel. A name leaves the map when its last
    /// watcher has gone (at the next publish); all of them at shutdown (None from then
    /// on), which ends every watch stream.
    watched: Mutex<Option<HashMap<String, watch::Sender<Watched>>>>,
    model: Mutex<Model>,
    poke: Notify,
    /// Held through a recomputation: the reports applied during its reads are kept for
    /// one reader at a time.
    recomputing: tokio::sync::Mutex<()>,
}

/// What the table was last computed from, and the reports applied since.
#[derive(Default)]
struct Model {
    inputs: Option<Inputs>,
    /// While a recomputation reads the database: the reports applied meanwhile, to apply
    /// again on top of what it read (it may have read before they were written).
    reading: Option<Vec<Reported>>,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            table: watch::Sender::new(Arc::new(Table::new())),
            instances: watch::Sender::new(InstanceTable::default()),
            recomputes: watch::Sender::new(0),
            watched: Mutex::new(Some(HashMap::new())),
            model: Mutex::new(Model::default()),
            poke: Notify::new(),
            recomputing: tokio::sync::Mutex::new(()),
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

    /// Every assigned instance by name, for `instances()` in templates.
    pub fn instances(&self) -> InstanceTable {
        self.instances.borrow().clone()
    }

    /// Wakes on every change of the endpoint or instance tables (the config renderer).
    pub fn subscribe_instances(&self) -> watch::Receiver<InstanceTable> {
        self.instances.subscribe()
    }

    /// Wakes after every recomputation of the tables, changed or not.
    pub fn subscribe_recomputes(&self) -> watch::Receiver<u64> {
        self.recomputes.subscribe()
    }

    /// The tables templates read.
    pub fn render_tables(&self) -> Tables {
        Tables {
            endpoints: self.endpoint_strings(),
            instances: self.instances(),
        }
    }

    fn publish_instances(&self, table: HashMap<String, Vec<InstanceEntry>>) {
        self.instances.send_if_modified(|current| {
            if **current == table {
                false
            } else {
                *current = Arc::new(table);
                true
            }
        });
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
        let now = self.table.borrow().get(name).cloned();
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
                let now = table.get(name).cloned();
                tx.send_if_modified(|seen| {
                    if *seen == now {
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

    /// An instance's state and health, just recorded: see [`Discovery::instances_reported`].
    pub fn instance_reported(
        &self,
        node: &str,
        app: &str,
        server: &str,
        state: &str,
        health: &str,
    ) -> bool {
        self.instances_reported(&[crate::actual::Unwritten {
            node: node.to_string(),
            app: app.to_string(),
            server: server.to_string(),
            state: state.to_string(),
            health: health.to_string(),
        }])
    }

    /// Instances' states and health, just recorded together (an agent's batch): applies
    /// them all to the last inputs, recomputes the names of the servers they changed, and
    /// publishes once. Returns whether any list changed.
    pub fn instances_reported(&self, reports: &[crate::actual::Unwritten]) -> bool {
        let reports: Vec<Reported> = reports
            .iter()
            .map(|u| Reported {
                app: u.app.clone(),
                server: u.server.clone(),
                node: u.node.clone(),
                state: u.state.clone(),
                health: u.health.clone(),
            })
            .collect();
        let mut model = self.model.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = model.reading.as_mut() {
            log.extend(reports.iter().cloned());
        }
        let Some(inputs) = model.inputs.as_mut() else {
            return false;
        };
        let mut servers = std::collections::BTreeSet::new();
        for report in &reports {
            if inputs.apply(report) {
                servers.insert((report.app.as_str(), report.server.as_str()));
            }
        }
        if servers.is_empty() {
            return false;
        }
        let mut table = Table::clone(&self.table());
        let mut instances = HashMap::clone(&self.instances());
        for (app, server) in servers {
            table.extend(inputs.server_names(app, server));
            instances.extend(inputs.server_instances(app, server));
        }
        self.publish_instances(instances);
        self.publish(table)
    }

    /// Recomputes the tables from the database now. Changes that sessions are about to
    /// send call this first, so the files rendered for them see the fleet as it now is
    /// (a server's own new instances in its peers list).
    pub async fn refresh(
        &self,
        store: &Store,
        unwritten: impl FnOnce() -> Vec<crate::actual::Unwritten>,
    ) -> Result<(), StoreError> {
        let _one_at_a_time = self.recomputing.lock().await;
        self.reading();
        self.unwritten(unwritten());
        let inputs = Inputs::read(store).await?;
        self.recomputed(inputs);
        Ok(())
    }

    /// Marks the start of a recomputation's reads.
    fn reading(&self) {
        self.model
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reading = Some(Vec::new());
    }

    /// Reports recorded but perhaps not in the database yet ([`crate::actual`] writes them
    /// a moment later): the recomputation under way applies them on top of what it reads,
    /// before the reports that arrive during the read (which are newer).
    fn unwritten(&self, reports: Vec<crate::actual::Unwritten>) {
        let mut model = self.model.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = model.reading.as_mut() {
            let mut all: Vec<Reported> = reports
                .into_iter()
                .map(|u| Reported {
                    app: u.app,
                    server: u.server,
                    node: u.node,
                    state: u.state,
                    health: u.health,
                })
                .collect();
            all.append(log);
            *log = all;
        }
    }

    /// Takes freshly read inputs (with the reports applied during the read on top) as the
    /// model and publishes their table. Returns whether anything changed.
    fn recomputed(&self, mut inputs: Inputs) -> bool {
        let mut model = self.model.lock().unwrap_or_else(PoisonError::into_inner);
        for report in model.reading.take().unwrap_or_default() {
            inputs.apply(&report);
        }
        let table = inputs.table();
        self.publish_instances(inputs.instances_table());
        model.inputs = Some(inputs);
        self.recomputes.send_modify(|n| *n = n.wrapping_add(1));
        self.publish(table)
    }

    /// Ends every watch (their streams finish once they have sent what they hold).
    fn close_watches(&self) {
        *self.watched.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The endpoints per name, for config templates.
    pub fn endpoint_strings(&self) -> crate::spec::render::EndpointTable {
        let table = self.table();
        Arc::new(
            table
                .iter()
                .map(|(name, eps)| (name.clone(), eps.to_vec()))
                .collect(),
        )
    }
}

/// Keeps the table current until shutdown. Configs that list endpoints or instances are
/// re-rendered by the config renderer ([`crate::configs`]), which follows the tables.
pub async fn run(shared: Arc<Shared>) {
    let mut safety = tokio::time::interval(SAFETY_NET);
    loop {
        tokio::select! {
            () = shared.shutdown().cancelled() => {
                shared.discovery().close_watches();
                return;
            }
            () = shared.discovery().poke.notified() => {}
            _ = safety.tick() => {}
        }
        if let Err(e) = shared.refresh_discovery().await {
            warn!(cause = %e, "cannot compute the discovery table");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::inputs::Instance;
    use super::*;

    fn ep(node: &str, port: u32) -> Endpoint {
        Endpoint {
            node: node.into(),
            host: "127.0.0.1".into(),
            port,
            weight: 1,
            ..Endpoint::default()
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
        assert_eq!(rx.borrow_and_update().as_deref(), Some(&vec![ep("n1", 1)]));
        assert!(unknown.borrow_and_update().is_none());

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
        assert_eq!(rx.borrow_and_update().as_deref().map(Vec::len), Some(2));
        assert!(matches!(unknown.has_changed(), Ok(false)));

        // The name goes (its server was removed): its watchers hear it.
        assert!(d.publish(table(&[("c.d.Main", vec![ep("n2", 2)])])));
        assert!(matches!(rx.has_changed(), Ok(true)));
        assert!(rx.borrow_and_update().is_none());
    }

    /// demo.echo on n1 and n2 (port 20001 each), both running, no health check.
    fn inputs() -> Inputs {
        let spec = crate::spec::parse(
            "app = \"demo\"\nserver = \"echo\"\nnodes = [\"n1\", \"n2\"]\n\
             command = [\"bin/echo\"]\n[[adapters]]\nname = \"Main\"\nport = 20001\n",
            "demo.toml",
        )
        .expect("valid spec");
        let mut i = Inputs::default();
        for (node, ip) in [("n1", "127.0.0.2"), ("n2", "127.0.0.3")] {
            i.nodes.insert(node.into(), (true, ip.into()));
            i.ports.insert(
                ("demo".into(), "echo".into(), node.into()),
                BTreeMap::from([("Main".to_string(), 20001)]),
            );
            i.instances
                .entry(("demo".into(), "echo".into()))
                .or_default()
                .push(Instance {
                    node: node.into(),
                    ordinal: if node == "n1" { 0 } else { 1 },
                    desired: "running".into(),
                    state: "running".into(),
                    health: String::new(),
                });
        }
        i.specs.insert(("demo".into(), "echo".into()), spec);
        i
    }

    fn nodes(rx: &mut watch::Receiver<Watched>) -> Vec<String> {
        rx.borrow_and_update()
            .iter()
            .flat_map(|eps| eps.iter())
            .map(|e| e.node.clone())
            .collect()
    }

    #[test]
    fn a_report_is_published_without_a_recomputation() {
        let d = Discovery::default();
        // Before the first recomputation there is nothing to apply a report to.
        assert!(!d.instance_reported("n1", "demo", "echo", "stopped", ""));
        d.reading();
        assert!(d.recomputed(inputs()));
        let mut rx = d.watch_name("demo.echo.Main");
        assert_eq!(nodes(&mut rx), ["n1", "n2"]);

        assert!(d.instance_reported("n1", "demo", "echo", "stopped", ""));
        assert!(matches!(rx.has_changed(), Ok(true)));
        assert_eq!(nodes(&mut rx), ["n2"]);
        // The same report again, or one for an instance the model does not hold: no change.
        assert!(!d.instance_reported("n1", "demo", "echo", "stopped", ""));
        assert!(!d.instance_reported("n9", "demo", "echo", "running", ""));
        assert!(!d.instance_reported("n1", "demo", "other", "running", ""));
        assert!(matches!(rx.has_changed(), Ok(false)));

        // A recomputation that read the database before the next report was written
        // must not send the older state again.
        d.reading();
        assert!(d.instance_reported("n1", "demo", "echo", "running", ""));
        assert_eq!(nodes(&mut rx), ["n1", "n2"]);
        let mut stale = inputs();
        stale.apply(&Reported {
            app: "demo".into(),
            server: "echo".into(),
            node: "n1".into(),
            state: "stopped".into(),
            health: String::new(),
        });
        assert!(!d.recomputed(stale), "the report made during the read wins");
        assert!(matches!(rx.has_changed(), Ok(false)));
        // The next recomputation reads the database as it is now.
        d.reading();
        let mut down = inputs();
        down.nodes.insert("n2".into(), (false, "127.0.0.3".into()));
        assert!(d.recomputed(down));
        assert_eq!(nodes(&mut rx), ["n1"]);
    }

    #[test]
    fn a_batch_of_reports_is_one_publish() {
        let d = Discovery::default();
        d.reading();
        assert!(d.recomputed(inputs()));
        let mut rx = d.watch_name("demo.echo.Main");
        assert_eq!(nodes(&mut rx), ["n1", "n2"]);
        let report = |node: &str, state: &str| crate::actual::Unwritten {
            node: node.into(),
            app: "demo".into(),
            server: "echo".into(),
            state: state.into(),
            health: String::new(),
        };
        // n1 crashes and comes back, n2 crashes, all in one agent's batch: the watcher
        // wakes once, with where the batch ends.
        assert!(d.instances_reported(&[
            report("n1", "backoff"),
            report("n2", "backoff"),
            report("n1", "running"),
        ]));
        assert_eq!(nodes(&mut rx), ["n1"]);
        assert!(matches!(rx.has_changed(), Ok(false)));
        // Reports that change nothing publish nothing.
        assert!(!d.instances_reported(&[report("n1", "running"), report("n9", "running")]));
        assert!(matches!(rx.has_changed(), Ok(false)));
    }

    #[test]
    fn a_report_not_written_yet_survives_a_recomputation() {
        let d = Discovery::default();
        d.reading();
        assert!(d.recomputed(inputs()));
        let mut rx = d.watch_name("demo.echo.Main");
        assert!(d.instance_reported("n1", "demo", "echo", "stopped", ""));
        assert_eq!(nodes(&mut rx), ["n2"]);
        // A recomputation reads the database before that report is written: it applies
        // the report on top, so nothing older is published.
        d.reading();
        let unwritten = |state: &str| crate::actual::Unwritten {
            node: "n1".into(),
            app: "demo".into(),
            server: "echo".into(),
            state: state.into(),
            health: String::new(),
        };
        d.unwritten(vec![unwritten("stopped")]);
        assert!(!d.recomputed(inputs()), "the unwritten report wins");
        assert!(matches!(rx.has_changed(), Ok(false)));
        // One that arrives during the read is newer than one not written yet.
        d.reading();
        assert!(d.instance_reported("n1", "demo", "echo", "running", ""));
        d.unwritten(vec![unwritten("stopped")]);
        d.recomputed(inputs());
        assert_eq!(nodes(&mut rx), ["n1", "n2"]);
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
        assert!(late.borrow_and_update().is_none());
        assert!(late.has_changed().is_err());
    }
}
