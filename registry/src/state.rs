//! The registry's state in memory and its one owner.
//!
//! [`Shared`] holds what one registry process keeps: its configuration, the database
//! handle, the open agent sessions, the discovery tables, the agents' last reports, the
//! database's availability, the rollouts this replica drives, and the event bus. Its
//! fields are private: RPC handlers and background loops reach each part through a
//! method, and learn that the fleet changed by subscribing to the bus ([`crate::bus`]),
//! not by calling into each other. One task, [`dispatch`], turns what is published into
//! what sessions and discovery must do.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::actual::Actual;
use crate::bus::{Bus, Change, Origin, Published};
use crate::config::RegistryConfig;
use crate::discovery::Discovery;
use crate::download::ChunkCache;
use crate::metrics::Metrics;
use crate::outage::Outage;
use crate::sessions::Sessions;
use crate::store::{Store, StoreError};

/// What every RPC handler and background loop of one registry process shares.
pub struct Shared {
    config: RegistryConfig,
    store: Store,
    sessions: Sessions,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Names this process among replicas (leases, the change feed).
    replica_id: String,
    /// Rollouts this replica drives now.
    driven_rollouts: Mutex<HashSet<i64>>,
    discovery: Discovery,
    /// Package chunks read for the downloads running now.
    chunks: ChunkCache,
    /// Who gets which package from whom, and the packages' chunk hashes.
    distribution: crate::sources::Distribution,
    /// Whether the database answers, as last checked.
    outage: Outage,
    /// Agents' last known reports, and what waits to be written.
    actual: Actual,
    bus: Bus,
    /// Audit records waiting to be written.
    audit: crate::audit::Audit,
    /// Log streams open through this replica's sessions.
    logs: Arc<crate::logs::routes::Routes>,
}

impl Shared {
    pub fn new(config: RegistryConfig, store: Store, shutdown: CancellationToken) -> Arc<Shared> {
        Arc::new(Shared {
            config,
            store,
            sessions: Sessions::default(),
            metrics: Metrics::new(),
            shutdown,
            tracker: TaskTracker::new(),
            replica_id: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
            driven_rollouts: Mutex::default(),
            discovery: Discovery::default(),
            chunks: ChunkCache::default(),
            distribution: Default::default(),
            outage: Outage::default(),
            actual: Actual::default(),
            bus: Bus::default(),
            audit: crate::audit::Audit::default(),
            logs: Arc::default(),
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    pub fn chunks(&self) -> &ChunkCache {
        &self.chunks
    }

    pub fn distribution(&self) -> &crate::sources::Distribution {
        &self.distribution
    }

    pub fn outage(&self) -> &Outage {
        &self.outage
    }

    pub fn actual(&self) -> &Actual {
        &self.actual
    }

    pub fn audit(&self) -> &crate::audit::Audit {
        &self.audit
    }

    pub fn logs(&self) -> &Arc<crate::logs::routes::Routes> {
        &self.logs
    }

    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// Cancelled when the registry shuts down.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Runs a task that shutdown waits for.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Waits for every task [`Shared::spawn`] started (after shutdown was cancelled).
    pub async fn wait_tasks(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Claims rollout `id` for this replica to drive; false when it already does.
    pub fn drive_rollout(&self, id: i64) -> bool {
        self.driven_rollouts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
    }

    /// This replica stopped driving rollout `id`.
    pub fn rollout_driven(&self, id: i64) {
        self.driven_rollouts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// The desired state of these nodes changed in a way discovery and config files
    /// depend on: recompute, then resend it to their sessions, here and on every other
    /// replica.
    pub fn changed(&self, nodes: &[String]) {
        self.bus.publish(
            Change::Desired {
                nodes: nodes.into(),
                refresh: true,
            },
            Origin::Here,
        );
    }

    /// Only what these nodes are sent changed (new config files): resend it to their
    /// sessions, here and on every other replica.
    pub fn resend(&self, nodes: &[String]) {
        self.bus.publish(
            Change::Desired {
                nodes: nodes.into(),
                refresh: false,
            },
            Origin::Here,
        );
    }

    /// Something discovery depends on changed: recompute, here and on every other
    /// replica.
    pub fn discovery_changed(&self) {
        self.bus.publish(Change::Discovery, Origin::Here);
    }

    /// Reports that change discovery were written: the other replicas recompute; this
    /// one applied them from memory when they arrived ([`Change::Reported`]).
    pub fn reports_written(&self) {
        self.bus.publish(Change::Reported, Origin::Here);
    }

    /// A change made on another replica, read from the change feed.
    pub fn changed_elsewhere(&self, change: Change) {
        self.bus.publish(change, Origin::Elsewhere);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.bus.subscribe()
    }

    /// Recomputes discovery from the database now, with the reports not written yet on
    /// top of what it reads.
    pub async fn refresh_discovery(&self) -> Result<(), StoreError> {
        self.metrics.discovery_recomputes.inc();
        self.discovery
            .refresh(&self.store, || self.actual.unwritten())
            .await
    }
}

/// Acts on the bus until shutdown: a desired-state change recomputes discovery (when it
/// touches it) and then wakes the sessions of its nodes, so what they render and send
/// sees the change; a discovery change recomputes discovery. A subscriber that fell
/// behind does both for everyone.
pub async fn dispatch(shared: Arc<Shared>) {
    let mut rx = shared.subscribe();
    loop {
        let published = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            p = rx.recv() => p,
        };
        match published {
            Ok(Published {
                change: Change::Desired { nodes, refresh },
                ..
            }) => {
                if refresh && let Err(e) = shared.refresh_discovery().await {
                    warn!(cause = %e, "cannot recompute discovery before sending a change");
                }
                shared.sessions.notify(nodes.iter());
            }
            Ok(Published {
                change: Change::Discovery,
                ..
            }) => shared.discovery.poke(),
            // Applied here when received; recomputing from the database after every
            // writer round would only read back what memory has (5 times a second
            // under a crash storm: most of the registry's work then).
            Ok(Published {
                change: Change::Reported,
                ..
            }) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(missed, "fell behind the event bus; resending everything");
                if let Err(e) = shared.refresh_discovery().await {
                    warn!(cause = %e, "cannot recompute discovery");
                }
                shared.sessions.notify(shared.sessions.live_nodes().iter());
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
