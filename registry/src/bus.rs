//! The registry's event bus: how the parts that keep a view of the fleet (agent
//! sessions, discovery, the change feed, other replicas) learn that it changed, without
//! reaching into each other. Whoever changes the database publishes what changed;
//! each part subscribes and acts on it in its own task.

use std::sync::Arc;

use tokio::sync::broadcast;

/// How many changes a slow subscriber may fall behind before it is told it lagged (it
/// then acts as if everything changed).
const CAPACITY: usize = 1024;

/// Something in the fleet changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The desired state of these nodes changed: their sessions send it again. With
    /// `refresh`, what the change touched is also something discovery and config files
    /// depend on (instances added, removed, started, stopped), so discovery is recomputed
    /// before the sessions render and send.
    Desired { nodes: Arc<[String]>, refresh: bool },
    /// Something discovery depends on changed (an instance's state or health, a node up
    /// or down): discovery is recomputed.
    Discovery,
    /// Agents' reports that change discovery were written. This replica's discovery has
    /// them already (applied from memory when they arrived), so it does not recompute;
    /// the other replicas, which read them from the database, recompute as for
    /// [`Change::Discovery`] (the feed carries it as that).
    Reported,
}

/// Where a change was made: here (it is recorded in the change feed for the other
/// replicas), or on another replica (read from the feed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Here,
    Elsewhere,
}

/// A change and where it was made, as subscribers receive it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub change: Change,
    pub origin: Origin,
}

pub struct Bus {
    tx: broadcast::Sender<Published>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            tx: broadcast::Sender::new(CAPACITY),
        }
    }
}

impl Bus {
    pub fn publish(&self, change: Change, origin: Origin) {
        // No subscriber (at shutdown) is not an error: nobody needs to hear it.
        let _ = self.tx.send(Published { change, origin });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.tx.subscribe()
    }
}
