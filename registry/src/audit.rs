//! The audit log: every Admin call that changes something, and every refused one, with
//! who made it (the token's name), from where, what it acted on and how it ended.
//!
//! The admin gate ([`crate::gate`]) records; a handler only says what its call acted on
//! ([`Note::set`]). Records go through a bounded queue ([`QUEUE`]) to one writer task
//! ([`run`]), so that writing the audit never slows or fails a call that succeeded, and a
//! database outage does not lose what happened during it: the writer keeps the record it
//! could not write and retries until the database answers. A record that finds the queue
//! full is dropped, logged as an error and counted (`corral_registry_audit_dropped_total`).
//! The newest [`crate::config::defaults::AUDIT_RETENTION`] records are kept; older ones are
//! pruned every [`TRIM_EVERY`] records written.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::Request;
use tracing::{error, info, warn};

use crate::auth::Caller;
use crate::state::Shared;
pub use crate::store::AuditRow;

/// Records waiting to be written, at most.
pub const QUEUE: usize = 10_000;
/// Records written between two prunes of old ones.
pub const TRIM_EVERY: u64 = 1_000;
/// How long the writer waits before it tries a record again when the database failed.
const RETRY: Duration = Duration::from_secs(1);
/// How long shutdown waits for the queue to be written.
const FLUSH_AT_SHUTDOWN: Duration = Duration::from_secs(3);

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// No valid token, or a role that may not make the call.
    Refused,
    /// The call was allowed and returned an error.
    Failed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// What a call acted on, noted by its handler: the gate puts one into every allowed call's
/// extensions and reads it when the call ends.
#[derive(Clone, Default)]
pub struct Note(Arc<Mutex<String>>);

impl Note {
    /// The note of a call (a detached one when the call came by another way, e.g. a test).
    pub fn of<T>(request: &Request<T>) -> Note {
        request
            .extensions()
            .get::<Note>()
            .cloned()
            .unwrap_or_default()
    }

    pub fn set(&self, target: impl Into<String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = target.into();
    }

    pub fn get(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The queue between the calls that record and the writer.
pub struct Audit {
    tx: mpsc::Sender<AuditRow>,
    rx: Mutex<Option<mpsc::Receiver<AuditRow>>>,
}

impl Default for Audit {
    fn default() -> Audit {
        let (tx, rx) = mpsc::channel(QUEUE);
        Audit {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

/// A record of a call made now.
pub fn entry(
    caller: Option<&Caller>,
    source: &str,
    method: &str,
    target: &str,
    outcome: Outcome,
    error: &str,
) -> AuditRow {
    AuditRow {
        id: 0,
        at_ms: corral_common::time::now_ms(),
        caller: caller.map_or_else(String::new, |c| c.name.clone()),
        role: caller.map_or_else(String::new, |c| c.role.name().to_string()),
        source: source.to_string(),
        method: method.to_string(),
        target: target.to_string(),
        outcome: outcome.name().to_string(),
        error: error.to_string(),
    }
}

/// Queues a record for the writer; never waits. A full queue drops it, loudly.
pub fn record(shared: &Shared, row: AuditRow) {
    if let Err(err) = shared.audit().tx.try_send(row) {
        let row = match err {
            mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
        };
        shared.metrics().audit_dropped.inc();
        error!(
            caller = %row.caller,
            method = %row.method,
            target = %row.target,
            outcome = %row.outcome,
            "audit record dropped: {QUEUE} records already wait for the database"
        );
    }
}

/// Writes queued records until shutdown, then what is left (for a few seconds).
pub async fn run(shared: Arc<Shared>) {
    let Some(mut rx) = shared
        .audit()
        .rx
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    else {
        return;
    };
    let mut written: u64 = 0;
    loop {
        let row = tokio::select! {
            () = shared.shutdown().cancelled() => break,
            row = rx.recv() => match row {
                Some(r) => r,
                None => return,
            },
        };
        let mut failures = 0u32;
        loop {
            match shared.store().record_audit(&row).await {
                Ok(()) => break,
                Err(err) => {
                    failures += 1;
                    if failures == 1 {
                        error!(cause = %err, method = %row.method, caller = %row.caller,
                            "cannot write the audit log; keeping the record and trying again");
                    }
                    tokio::select! {
                        () = shared.shutdown().cancelled() => {
                            error!(method = %row.method, caller = %row.caller,
                                "audit record lost at shutdown: the database does not answer");
                            return;
                        }
                        () = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        }
        if failures > 0 {
            info!(failures, "the audit log is written again");
        }
        written += 1;
        if written % TRIM_EVERY == 1 {
            trim(&shared).await;
        }
    }
    // Shutdown: write what is queued, as long as the database answers quickly.
    let flush = async {
        while let Ok(row) = rx.try_recv() {
            if let Err(err) = shared.store().record_audit(&row).await {
                error!(cause = %err, "audit records lost at shutdown");
                return;
            }
        }
    };
    if tokio::time::timeout(FLUSH_AT_SHUTDOWN, flush)
        .await
        .is_err()
    {
        error!("audit records lost at shutdown: the database did not take them in time");
    }
}

async fn trim(shared: &Shared) {
    let keep = crate::config::defaults::AUDIT_RETENTION;
    match shared.store().trim_audit(keep).await {
        Ok(0) => {}
        Ok(n) => info!(removed = n, keep, "pruned old audit records"),
        Err(err) => warn!(cause = %err, "could not prune old audit records"),
    }
}
