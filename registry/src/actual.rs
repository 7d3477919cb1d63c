//! What agents report about their instances (actual state and events): written only when
//! something changed, and kept in memory until written.
//!
//! * Each report is compared with the last known state of its instance, read from the
//!   database when the node's session opens and forgotten when its desired state is sent
//!   again (rows may have been added or reset). A report equal to it writes nothing. One
//!   that differs updates the instance row; only one whose state or health differs (what
//!   discovery depends on) also appends a change-feed row and recomputes discovery.
//!   Install progress, say, updates the row (rollouts read it) and nothing else.
//! * Reports arrive in batches (an agent's `Reports`, [`received`]): each batch is
//!   recorded under one lock and published to discovery once.
//! * One task writes what waits, a round at a time, each round one transaction (rounds at
//!   least 200 ms apart while reports keep coming): the latest report per instance, events (at most
//!   [`MAX_PENDING_EVENTS`]; beyond that the oldest are dropped, counted in
//!   `corral_registry_events_dropped_total` and logged) and the ends of sessions. It tries
//!   nothing while the database is unreachable ([`crate::outage`]) and keeps what failed,
//!   so nothing is lost during an outage; it writes everything when the database is back.

mod received;
mod write;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tracing::{info, warn};

use crate::state::Shared;
use crate::store::{EventRow, StatusReport, now_ms};

pub use received::received;
pub use write::{run, trim_events};

/// Events kept while the database is unreachable; beyond that the oldest are dropped.
pub const MAX_PENDING_EVENTS: usize = 10_000;

/// (node, app, server)
type Key = (String, String, String);

/// What a report changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// It says what is known already: nothing is written.
    Nothing,
    /// The instance row changes, but nothing discovery depends on (install progress).
    Row,
    /// The state or health changed, or nothing was known: the row, a change-feed row and
    /// a recomputation of discovery.
    Discovery,
}

/// What `report` changes, given the last known report of its instance.
pub fn classify(known: Option<&StatusReport>, report: &StatusReport) -> Change {
    match known {
        None => Change::Discovery,
        Some(k) if k.state != report.state || k.health != report.health => Change::Discovery,
        Some(k) if k == report => Change::Nothing,
        Some(_) => Change::Row,
    }
}

/// A report's state and health, recorded but perhaps not in the database yet: a
/// recomputation of discovery applies it on top of what it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unwritten {
    pub node: String,
    pub app: String,
    pub server: String,
    pub state: String,
    pub health: String,
}

impl Unwritten {
    fn of(key: &Key, report: &StatusReport) -> Unwritten {
        Unwritten {
            node: key.0.clone(),
            app: key.1.clone(),
            server: key.2.clone(),
            state: report.state.clone(),
            health: report.health.clone(),
        }
    }
}

/// A report waiting to be written.
struct PendingStatus {
    session_id: i64,
    at_ms: i64,
    report: StatusReport,
    /// Whether discovery depends on what it changes (kept when a newer report replaces
    /// it, since the database has not seen that change either).
    discovery: bool,
}

/// A session that ended while the database was unreachable: its node goes `down`.
struct PendingDown {
    node: String,
    session_id: i64,
    at_ms: i64,
}

/// What waits to be written.
#[derive(Default)]
struct Pending {
    statuses: BTreeMap<Key, PendingStatus>,
    events: VecDeque<EventRow>,
    downs: Vec<PendingDown>,
}

#[derive(Default)]
struct Inner {
    known: HashMap<Key, StatusReport>,
    pending: Pending,
    /// Reports and events taken by the round of writes under way.
    writing: (usize, usize),
    /// The reports of that round.
    in_flight: Vec<Unwritten>,
    /// Events dropped since the last write of events.
    dropped: u64,
}

/// The last known reports and what waits to be written; one per registry process.
#[derive(Default)]
pub struct Actual {
    inner: Mutex<Inner>,
    /// Wakes the writer.
    wake: Notify,
}

impl Actual {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section is a few map operations; a panic cannot leave it torn.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The node's session `session_id` opened: the database's rows are what is known of
    /// its instances, and reports still waiting from an earlier session are dropped (the
    /// agent sends every status again).
    pub fn seed(&self, node: &str, session_id: i64, rows: Vec<(String, String, StatusReport)>) {
        let mut inner = self.lock();
        inner.known.retain(|k, _| k.0 != node);
        inner
            .pending
            .statuses
            .retain(|k, p| k.0 != node || p.session_id == session_id);
        for (app, server, report) in rows {
            inner.known.insert((node.to_string(), app, server), report);
        }
    }

    /// Forgets what is known of the node's instances: their next reports are written.
    pub fn forget(&self, node: &str) {
        self.lock().known.retain(|k, _| k.0 != node);
    }

    /// Records a report of `node`'s session `session_id`; what it changes.
    pub fn report(&self, node: &str, session_id: i64, report: StatusReport, at_ms: i64) -> Change {
        let change = self.lock().report(node, session_id, report, at_ms).0;
        if change != Change::Nothing {
            self.wake.notify_one();
        }
        change
    }

    /// Records a batch of reports of `node`'s session `session_id` under one lock; what
    /// each changes, with its state and health.
    pub fn report_all(
        &self,
        node: &str,
        session_id: i64,
        reports: Vec<StatusReport>,
        at_ms: i64,
    ) -> Vec<(Change, Unwritten)> {
        let mut inner = self.lock();
        let changes: Vec<(Change, Unwritten)> = reports
            .into_iter()
            .map(|r| inner.report(node, session_id, r, at_ms))
            .collect();
        drop(inner);
        if changes.iter().any(|(c, _)| *c != Change::Nothing) {
            self.wake.notify_one();
        }
        changes
    }

    /// Queues an event; how many were dropped to make room.
    pub fn event(&self, row: EventRow) -> u64 {
        self.events(vec![row])
    }

    /// Queues events, oldest first; how many were dropped to make room.
    pub fn events(&self, rows: Vec<EventRow>) -> u64 {
        let mut inner = self.lock();
        inner.pending.events.extend(rows);
        let dropped = inner.bound_events();
        drop(inner);
        self.wake.notify_one();
        dropped
    }

    /// Queues the `down` of a node whose session ended while it could not be written.
    fn node_down(&self, node: &str, session_id: i64, at_ms: i64) {
        self.lock().pending.downs.push(PendingDown {
            node: node.to_string(),
            session_id,
            at_ms,
        });
        self.wake.notify_one();
    }

    /// Reports and events waiting to be written (or being written), and the events
    /// dropped since the last ones were written.
    pub fn counts(&self) -> (usize, usize, u64) {
        let inner = self.lock();
        (
            inner.pending.statuses.len() + inner.writing.0,
            inner.pending.events.len() + inner.writing.1,
            inner.dropped,
        )
    }

    /// The reports not written yet, those being written included.
    pub fn unwritten(&self) -> Vec<Unwritten> {
        let inner = self.lock();
        let mut all = inner.in_flight.clone();
        all.extend(
            inner
                .pending
                .statuses
                .iter()
                .map(|(key, p)| Unwritten::of(key, &p.report)),
        );
        all
    }

    fn has_pending(&self) -> bool {
        let inner = self.lock();
        let p = &inner.pending;
        !(p.statuses.is_empty() && p.events.is_empty() && p.downs.is_empty())
    }

    /// Takes everything that waits, for one round of writes.
    fn take(&self) -> Pending {
        let mut inner = self.lock();
        let taken = std::mem::take(&mut inner.pending);
        inner.writing = (taken.statuses.len(), taken.events.len());
        inner.in_flight = taken
            .statuses
            .iter()
            .map(|(key, p)| Unwritten::of(key, &p.report))
            .collect();
        taken
    }

    /// Ends a round: puts back what it could not write, in front of what arrived
    /// meanwhile; how many events were dropped to keep the bound.
    fn put_back(&self, failed: Pending) -> u64 {
        let mut inner = self.lock();
        inner.writing = (0, 0);
        inner.in_flight.clear();
        for (key, old) in failed.statuses {
            match inner.pending.statuses.get_mut(&key) {
                // A newer report replaced it; it carries the old one's discovery change.
                Some(newer) => newer.discovery |= old.discovery,
                None => {
                    inner.pending.statuses.insert(key, old);
                }
            }
        }
        for event in failed.events.into_iter().rev() {
            inner.pending.events.push_front(event);
        }
        let mut downs = failed.downs;
        downs.append(&mut inner.pending.downs);
        inner.pending.downs = downs;
        inner.bound_events()
    }

    /// The report of an instance not assigned to its node was not written: it is not
    /// known either.
    fn unassigned(&self, key: &Key) {
        self.lock().known.remove(key);
    }

    /// Events were written: how many had been dropped before (and start counting again).
    fn take_dropped(&self) -> u64 {
        std::mem::take(&mut self.lock().dropped)
    }
}

impl Inner {
    /// Records one report; what it changes, with its state and health.
    fn report(
        &mut self,
        node: &str,
        session_id: i64,
        report: StatusReport,
        at_ms: i64,
    ) -> (Change, Unwritten) {
        let key = (node.to_string(), report.app.clone(), report.server.clone());
        let unwritten = Unwritten::of(&key, &report);
        let change = classify(self.known.get(&key), &report);
        if change == Change::Nothing {
            return (change, unwritten);
        }
        let discovery = change == Change::Discovery
            || self.pending.statuses.get(&key).is_some_and(|p| p.discovery);
        self.known.insert(key.clone(), report.clone());
        self.pending.statuses.insert(
            key,
            PendingStatus {
                session_id,
                at_ms,
                report,
                discovery,
            },
        );
        (change, unwritten)
    }

    /// Drops the oldest events beyond the bound; how many.
    fn bound_events(&mut self) -> u64 {
        let over = self.pending.events.len().saturating_sub(MAX_PENDING_EVENTS);
        if over == 0 {
            return 0;
        }
        if self.dropped == 0 {
            warn!(
                limit = MAX_PENDING_EVENTS,
                "too many events wait for the database: dropping the oldest"
            );
        }
        self.pending.events.drain(..over);
        self.dropped += over as u64;
        over as u64
    }
}

/// The node's session opened: what the database holds of its instances is known.
pub async fn session_opened(shared: &Shared, node: &str, session_id: i64) {
    let rows = match shared.store().node_reports(node).await {
        Ok(rows) => rows,
        Err(err) => {
            warn!(node, cause = %err, "cannot read the node's instances: its next reports are all written");
            Vec::new()
        }
    };
    shared.actual().seed(node, session_id, rows);
}

/// An event an agent reported.
pub fn event(shared: &Shared, row: EventRow) {
    let dropped = shared.actual().event(row);
    shared.metrics().events_dropped.inc_by(dropped);
}

/// The node's session ended (and no newer one replaced it): the node is `down`, now or
/// as soon as that can be written.
pub async fn session_ended(
    shared: &Shared,
    node: &str,
    session_id: i64,
    reason: &(dyn std::fmt::Display + Sync),
) {
    let at_ms = now_ms();
    if shared.outage().reachable() {
        match shared.store().mark_node_down(node, session_id, at_ms).await {
            Ok(_) => {
                info!(node, session = session_id, %reason, "node down");
                shared.discovery_changed();
                return;
            }
            Err(err) => warn!(node, cause = %err, "could not mark node down; trying again"),
        }
    }
    info!(node, session = session_id, %reason, "node down (written when the database answers)");
    shared.actual().node_down(node, session_id, at_ms);
}

#[cfg(test)]
mod tests;
