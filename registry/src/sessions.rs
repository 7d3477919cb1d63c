//! The agent sessions open on this replica, kept in memory.
//!
//! Heartbeats only touch this table; a background task writes last-seen times and load
//! reports to the database in one batch per flush interval, so a heartbeat never costs a
//! database write of its own. A node's heartbeat is written again only once its last-seen
//! time has moved on by the refresh period ([`refresh_ms`]) since the last write: the
//! database needs it fresh enough for the stale-node sweep, not every beat (at 10,000
//! nodes, every beat was 5,000 row updates a second). A heartbeat stays pending until a
//! write of it succeeded, so none is lost while the database is unreachable. State
//! changes (up, down) are written at once by the session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use tokio_util::sync::CancellationToken;

use crate::store::{HeartbeatRow, LoadRow};

struct Live {
    session_id: i64,
    /// Cancelled when a newer session of the same node replaces this one.
    replaced: CancellationToken,
    last_seen_ms: i64,
    load: Option<LoadRow>,
    /// Whether a heartbeat arrived that is not written yet.
    dirty: bool,
    /// The last-seen time last written to the database (0: none of this session yet).
    written_ms: i64,
    /// Woken when the node's desired state changed; the session then sends it again.
    changed: Arc<Notify>,
}

/// What a new session gets from [`Sessions::open`].
pub struct Opened {
    /// Cancelled when a newer session of the same node replaces this one.
    pub replaced: CancellationToken,
    /// Notified when the node's desired state changes.
    pub changed: Arc<Notify>,
}

#[derive(Default)]
pub struct Sessions {
    table: Mutex<HashMap<String, Live>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        // A panic while holding this lock cannot leave the map inconsistent: every
        // critical section is a single insert, remove or field update.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new session of `node`, cancelling the one it replaces (if any).
    pub fn open(&self, node: &str, session_id: i64, now_ms: i64) -> Opened {
        let replaced = CancellationToken::new();
        let changed = Arc::new(Notify::new());
        let old = self.lock().insert(
            node.to_string(),
            Live {
                session_id,
                replaced: replaced.clone(),
                last_seen_ms: now_ms,
                load: None,
                dirty: false,
                written_ms: 0,
                changed: changed.clone(),
            },
        );
        if let Some(old) = old {
            old.replaced.cancel();
        }
        Opened { replaced, changed }
    }

    /// Tells the sessions of these nodes (those open on this replica) that their
    /// desired state changed.
    pub fn notify<'a>(&self, nodes: impl IntoIterator<Item = &'a String>) {
        let table = self.lock();
        for node in nodes {
            if let Some(live) = table.get(node) {
                live.changed.notify_one();
            }
        }
    }

    /// Records a heartbeat of the session `session_id` of `node`.
    pub fn touch(&self, node: &str, session_id: i64, now_ms: i64, load: Option<LoadRow>) {
        if let Some(live) = self.lock().get_mut(node)
            && live.session_id == session_id
        {
            live.last_seen_ms = now_ms;
            if load.is_some() {
                live.load = load;
            }
            live.dirty = true;
        }
    }

    /// Removes the session if it is still the current one for its node; returns whether
    /// it was (a replaced session must not mark its node down).
    pub fn close(&self, node: &str, session_id: i64) -> bool {
        let mut table = self.lock();
        if table.get(node).is_some_and(|l| l.session_id == session_id) {
            table.remove(node);
            true
        } else {
            false
        }
    }

    /// The heartbeats to write in one batch: those not written yet of the nodes whose
    /// last write is `refresh_ms` old or more (or who have none yet). They stay pending
    /// until [`Sessions::written`] says the write succeeded.
    pub fn pending_heartbeats(&self, refresh_ms: i64) -> Vec<HeartbeatRow> {
        self.lock()
            .iter()
            .filter(|(_, l)| {
                l.dirty && (l.written_ms == 0 || l.last_seen_ms - l.written_ms >= refresh_ms)
            })
            .map(|(name, l)| HeartbeatRow {
                name: name.clone(),
                session_id: l.session_id,
                last_seen_ms: l.last_seen_ms,
                load: l.load.clone(),
            })
            .collect()
    }

    /// These heartbeats are in the database: they are no longer pending, unless a newer
    /// one arrived meanwhile.
    pub fn written(&self, rows: &[HeartbeatRow]) {
        let mut table = self.lock();
        for row in rows {
            if let Some(live) = table.get_mut(&row.name)
                && live.session_id == row.session_id
            {
                live.written_ms = row.last_seen_ms;
                if live.last_seen_ms == row.last_seen_ms {
                    live.dirty = false;
                }
            }
        }
    }

    /// Whether `session_id` is the open session of `node` on this replica.
    pub fn is_current(&self, node: &str, session_id: i64) -> bool {
        self.lock()
            .get(node)
            .is_some_and(|l| l.session_id == session_id)
    }

    /// The nodes with a session open on this replica: they are alive whatever the
    /// database says of them.
    pub fn live_nodes(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How long a node's written last-seen time may stay behind: half the slack between the
/// heartbeat interval and the node timeout. The database's last-seen time then lags by at
/// most this plus one heartbeat interval plus one flush interval, which is less than the
/// node timeout plus two flush intervals the stale-node sweep allows (since the heartbeat
/// interval is shorter than the node timeout).
pub fn refresh_ms(heartbeat_interval: Duration, node_timeout: Duration) -> i64 {
    (node_timeout.saturating_sub(heartbeat_interval).as_millis() / 2) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_session_replaces_the_old_one() {
        let sessions = Sessions::default();
        let first = sessions.open("node-a", 1, 10).replaced;
        let second = sessions.open("node-a", 2, 20).replaced;
        assert!(first.is_cancelled());
        assert!(!second.is_cancelled());
        // The replaced session's close must not remove the new one.
        assert!(!sessions.close("node-a", 1));
        assert_eq!(sessions.len(), 1);
        assert!(sessions.close("node-a", 2));
        assert!(sessions.is_empty());
    }

    #[test]
    fn heartbeats_are_batched_once() {
        let sessions = Sessions::default();
        sessions.open("node-a", 1, 10);
        sessions.open("node-b", 2, 10);
        sessions.touch("node-a", 1, 30, None);
        sessions.touch("node-b", 99, 30, None); // a stale session id is ignored
        let rows = sessions.pending_heartbeats(0);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].name, "node-a");
        assert_eq!(rows[0].last_seen_ms, 30);
        sessions.written(&rows);
        assert!(sessions.pending_heartbeats(0).is_empty());
    }

    #[test]
    fn a_heartbeat_is_written_again_once_the_refresh_period_passed() {
        let sessions = Sessions::default();
        sessions.open("node-a", 1, 10);
        // The session's first heartbeat is written at once.
        sessions.touch("node-a", 1, 1_000, None);
        let rows = sessions.pending_heartbeats(4_000);
        assert_eq!(rows.len(), 1);
        sessions.written(&rows);
        // The next ones wait until the last-seen time moved on by the refresh period...
        sessions.touch("node-a", 1, 3_000, None);
        assert!(sessions.pending_heartbeats(4_000).is_empty());
        sessions.touch("node-a", 1, 4_999, None);
        assert!(sessions.pending_heartbeats(4_000).is_empty());
        // ...and are written then, the latest one.
        sessions.touch("node-a", 1, 5_000, None);
        let rows = sessions.pending_heartbeats(4_000);
        assert_eq!((rows.len(), rows[0].last_seen_ms), (1, 5_000));
        sessions.written(&rows);
        assert!(sessions.pending_heartbeats(0).is_empty());
        // A new session of the node writes its first heartbeat at once.
        sessions.open("node-a", 2, 5_500);
        sessions.touch("node-a", 2, 6_000, None);
        assert_eq!(sessions.pending_heartbeats(4_000).len(), 1);
    }

    #[test]
    fn the_written_last_seen_time_lags_less_than_the_sweep_allows() {
        for (hb, timeout, flush) in [
            (2_000, 10_000, 2_000),
            (1_000, 3_000, 500),
            (900, 1_000, 100),
        ] {
            let refresh = refresh_ms(Duration::from_millis(hb), Duration::from_millis(timeout));
            let lag = refresh + hb as i64 + flush;
            assert!(
                lag < timeout as i64 + 2 * flush,
                "{hb} {timeout} {flush}: {lag}"
            );
        }
        assert_eq!(
            refresh_ms(Duration::from_secs(2), Duration::from_secs(10)),
            4_000
        );
    }

    #[test]
    fn a_heartbeat_stays_pending_until_written() {
        let sessions = Sessions::default();
        sessions.open("node-a", 1, 10);
        sessions.touch("node-a", 1, 30, None);
        // The write failed: nothing says it was written, so it is still pending.
        let failed = sessions.pending_heartbeats(0);
        assert_eq!(failed.len(), 1);
        let rows = sessions.pending_heartbeats(0);
        assert_eq!(rows[0].last_seen_ms, 30);
        // A newer heartbeat arrives while the write runs: it stays pending after it.
        sessions.touch("node-a", 1, 40, None);
        sessions.written(&rows);
        let rows = sessions.pending_heartbeats(0);
        assert_eq!(rows[0].last_seen_ms, 40);
        sessions.written(&rows);
        assert!(sessions.pending_heartbeats(0).is_empty());
        assert!(sessions.is_current("node-a", 1));
        assert!(!sessions.is_current("node-a", 2));
        assert_eq!(sessions.live_nodes(), ["node-a"]);
    }
}
