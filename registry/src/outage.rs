//! The database's availability as this replica sees it.
//!
//! A watch task checks the database every [`PROBE_EVERY`] ([`crate::store::Store::check`]: for SQLite
//! that the file is still the one opened and writable, for both that a query is answered
//! within [`CHECK_WITHIN`]); `/health` checks it too and tells the watch what it found.
//! While the database is unreachable, agent sessions stay open, discovery answers from
//! memory, and what would be written waits in memory: heartbeats in [`crate::sessions`],
//! reports and events in [`crate::actual`]. The writers try nothing meanwhile (an attempt
//! would wait for the pool's timeout, or write into a deleted file); when the database is
//! back they are woken and write what waited, and discovery is recomputed.
//!
//! The stale-node sweep waits too, for two flush intervals after the database is back:
//! every replica's heartbeats are written by then, so no node is marked `down` only
//! because its heartbeats could not be written during the outage.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::state::Shared;
use crate::store::StoreError;

/// How often the watch checks the database.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long a check may take, `/health`'s included: it answers within a second.
pub const CHECK_WITHIN: Duration = Duration::from_millis(800);

/// Whether the database answers.
#[derive(Clone, Debug)]
pub struct Availability {
    /// None while the database answers; otherwise what is wrong.
    pub error: Option<String>,
    /// Since when it is so.
    pub since: Instant,
}

pub struct Outage {
    state: watch::Sender<Availability>,
    /// The last write of reports or heartbeats that failed, until one succeeds: a check
    /// can pass while writes fail (a full disk).
    write_error: Mutex<Option<String>>,
}

impl Default for Outage {
    fn default() -> Self {
        Outage {
            state: watch::Sender::new(Availability {
                error: None,
                since: Instant::now(),
            }),
            write_error: Mutex::new(None),
        }
    }
}

impl Outage {
    /// Whether the last check passed: writers try only then.
    pub fn reachable(&self) -> bool {
        self.state.borrow().error.is_none()
    }

    /// How long the database has answered; None while it does not.
    pub fn up_for(&self) -> Option<Duration> {
        let state = self.state.borrow();
        state.error.is_none().then(|| state.since.elapsed())
    }

    /// What is wrong with the database, if anything: the last check's error, else the
    /// last failed write's.
    pub fn error(&self) -> Option<String> {
        self.state.borrow().error.clone().or_else(|| {
            self.write_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }

    /// Changes of availability, for the writers to wait on.
    pub fn subscribe(&self) -> watch::Receiver<Availability> {
        self.state.subscribe()
    }

    /// Records a check's outcome; returns true when the database has just come back.
    pub fn observe(&self, checked: &Result<(), StoreError>) -> bool {
        let error = checked.as_ref().err().map(ToString::to_string);
        let mut back = false;
        self.state.send_if_modified(|state| {
            if state.error == error {
                return false;
            }
            match (&state.error, &error) {
                (None, Some(e)) => {
                    warn!(cause = %e, "the database is unreachable: sessions and discovery go on from memory; writes wait")
                }
                (Some(_), None) => {
                    info!(after = ?state.since.elapsed(), "the database answers again: writing what waited");
                    back = true;
                }
                _ => {}
            }
            if state.error.is_none() || error.is_none() {
                state.since = Instant::now();
            }
            state.error = error;
            true
        });
        back
    }

    pub fn write_failed(&self, err: &StoreError) {
        *self
            .write_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(err.to_string());
    }

    pub fn write_succeeded(&self) {
        *self
            .write_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Checks the database and records the outcome; when it has just come back, catches up.
pub async fn check(shared: &Arc<Shared>) -> Result<(), StoreError> {
    let checked = shared.store().check(CHECK_WITHIN).await;
    if shared.outage().observe(&checked) {
        back(shared).await;
    }
    checked
}

/// The database is back: what changed in memory meanwhile reaches it and the agents.
/// The writers were woken by the change of availability.
async fn back(shared: &Arc<Shared>) {
    // The config renderer follows the recomputation (it could not deliver meanwhile).
    shared.discovery().poke();
}

/// Watches the database until shutdown.
pub async fn watch(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = shared.shutdown().cancelled() => return,
            () = tokio::time::sleep(PROBE_EVERY) => {}
        }
        let _ = check(&shared).await;
    }
}
