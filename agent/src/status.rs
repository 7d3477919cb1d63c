//! The latest status of every instance and the events not yet sent, shared between the
//! instance runners (writers) and the registry session (reader).
//!
//! The session sends what changed as soon as it is notified; after a reconnect it sends
//! every status again. Events wait here while no session is open, up to a bound.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use corral_proto::v1::{InstanceEvent, InstanceStatus};
use tokio::sync::Notify;

/// Events kept while no registry is reachable; the oldest go first.
const MAX_PENDING_EVENTS: usize = 1000;

#[derive(Default)]
struct Inner {
    /// name -> (status, sequence number of its last change)
    statuses: BTreeMap<String, (InstanceStatus, u64)>,
    seq: u64,
    events: VecDeque<InstanceEvent>,
}

#[derive(Default)]
pub struct Board {
    inner: Mutex<Inner>,
    pub changed: Notify,
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section is a few field updates; a panic cannot leave it torn.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an instance's status (and the event that led to it).
    pub fn publish(&self, name: &str, status: InstanceStatus, event: Option<InstanceEvent>) {
        {
            let mut inner = self.lock();
            inner.seq += 1;
            let seq = inner.seq;
            inner.statuses.insert(name.to_string(), (status, seq));
            if let Some(e) = event {
                if inner.events.len() >= MAX_PENDING_EVENTS {
                    inner.events.pop_front();
                }
                inner.events.push_back(e);
            }
        }
        self.changed.notify_one();
    }

    /// Forgets an instance that was removed.
    pub fn remove(&self, name: &str) {
        self.lock().statuses.remove(name);
    }

    /// Statuses changed after `after` (0: all), the sequence number to pass next time,
    /// and the pending events (taken).
    pub fn changes(&self, after: u64) -> (Vec<InstanceStatus>, u64, Vec<InstanceEvent>) {
        let mut inner = self.lock();
        let statuses = inner
            .statuses
            .values()
            .filter(|(_, seq)| *seq > after)
            .map(|(s, _)| s.clone())
            .collect();
        let events = inner.events.drain(..).collect();
        (statuses, inner.seq, events)
    }

    /// Puts events back at the front after a failed send.
    pub fn requeue(&self, events: Vec<InstanceEvent>) {
        let mut inner = self.lock();
        for e in events.into_iter().rev() {
            if inner.events.len() >= MAX_PENDING_EVENTS {
                break;
            }
            inner.events.push_front(e);
        }
    }

    pub fn status(&self, name: &str) -> Option<InstanceStatus> {
        self.lock().statuses.get(name).map(|(s, _)| s.clone())
    }

    pub fn all(&self) -> Vec<InstanceStatus> {
        self.lock()
            .statuses
            .values()
            .map(|(s, _)| s.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str) -> InstanceStatus {
        InstanceStatus {
            app: "a".into(),
            server: "s".into(),
            state: corral_proto::wire::number::<corral_proto::v1::InstanceState>(state),
            ..Default::default()
        }
    }

    #[test]
    fn changes_since_a_sequence_number() {
        let board = Board::default();
        board.publish("a.s", status("starting"), None);
        board.publish("a.t", status("running"), Some(InstanceEvent::default()));
        let (all, seq, events) = board.changes(0);
        assert_eq!((all.len(), events.len()), (2, 1));
        board.publish("a.s", status("running"), None);
        let (changed, _, events) = board.changes(seq);
        assert_eq!(changed.len(), 1);
        assert_eq!(
            changed[0].state,
            i32::from(corral_proto::v1::InstanceState::Running)
        );
        assert!(events.is_empty());
    }
}
