//! The task that writes what agents reported.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::{Key, Pending, PendingStatus};
use crate::state::Shared;
use crate::store::{EventRow, StoreError};

/// Events written per transaction.
const EVENT_BATCH: usize = 500;
/// How soon a write that failed is tried again (once the database answers).
const RETRY: Duration = Duration::from_millis(500);

/// Writes what waits as soon as it arrives, until shutdown (and once more then).
pub async fn run(shared: Arc<Shared>) {
    let mut availability = shared.outage().subscribe();
    loop {
        let retry = shared.actual().has_pending();
        let stop = tokio::select! {
            () = shared.shutdown().cancelled() => true,
            () = shared.actual().wake.notified() => false,
            Ok(()) = availability.changed() => false,
            () = tokio::time::sleep(RETRY), if retry => false,
        };
        if shared.outage().reachable() {
            write_pending(&shared).await;
        }
        if stop {
            return;
        }
    }
}

/// One round: the ends of sessions, then events, then reports (an agent sends the events
/// that led to a status before it, so whoever sees the status finds its events). The
/// first failure stops the round; what is left goes back to wait.
async fn write_pending(shared: &Shared) {
    let mut todo = shared.actual().take();
    let mut failed = Pending::default();
    let mut error: Option<StoreError> = None;
    let mut wrote = false;
    let mut discovery = false;

    for down in std::mem::take(&mut todo.downs) {
        if error.is_some() {
            failed.downs.push(down);
            continue;
        }
        match shared
            .store()
            .mark_node_down(&down.node, down.session_id, down.at_ms)
            .await
        {
            Ok(changed) => {
                wrote = true;
                if changed {
                    info!(node = %down.node, "node down, written now that the database answers");
                    discovery = true;
                }
            }
            Err(err) => {
                failed.downs.push(down);
                error = Some(err);
            }
        }
    }
    let keep = i64::try_from(shared.config().event_retention).unwrap_or(i64::MAX);
    while !todo.events.is_empty() {
        if error.is_some() {
            failed.events.append(&mut todo.events);
            break;
        }
        let n = todo.events.len().min(EVENT_BATCH);
        let batch: Vec<EventRow> = todo.events.range(..n).cloned().collect();
        match shared.store().insert_events(&batch, keep).await {
            Ok(()) => {
                wrote = true;
                todo.events.drain(..n);
            }
            Err(err) => error = Some(err),
        }
    }

    for (key, pending) in std::mem::take(&mut todo.statuses) {
        if error.is_some() {
            failed.statuses.insert(key, pending);
            continue;
        }
        match write_status(shared, &key, &pending).await {
            Ok(Some(true)) => {
                wrote = true;
                discovery |= pending.discovery;
            }
            Ok(Some(false)) => {
                wrote = true;
                shared.actual().unassigned(&key);
                debug!(node = %key.0, server = %format!("{}.{}", key.1, key.2), "status of an instance not assigned here");
            }
            Ok(None) => {
                debug!(node = %key.0, server = %format!("{}.{}", key.1, key.2), "status of a session replaced since: dropped");
            }
            Err(err) => {
                failed.statuses.insert(key, pending);
                error = Some(err);
            }
        }
    }
    if discovery {
        shared.discovery_changed();
    }
    let dropped = shared.actual().put_back(failed);
    shared.metrics().events_dropped.inc_by(dropped);
    match error {
        Some(err) => {
            warn!(cause = %err, "could not write what agents reported; it waits and is tried again");
            shared.outage().write_failed(&err);
        }
        None if wrote => {
            shared.outage().write_succeeded();
            let dropped = shared.actual().take_dropped();
            if dropped > 0 {
                warn!(
                    dropped,
                    "events were dropped while the database was unreachable (too many waited)"
                );
            }
        }
        None => {}
    }
}

/// Writes a report: Some(whether its instance is assigned to its node), or None when a
/// newer session of the node has replaced the one that sent it (that session's agent has
/// sent every status again).
async fn write_status(
    shared: &Shared,
    key: &Key,
    pending: &PendingStatus,
) -> Result<Option<bool>, StoreError> {
    let node = key.0.as_str();
    if !shared.sessions().is_current(node, pending.session_id) {
        let current = shared.store().get_node(node).await?.map(|n| n.session_id);
        if current != Some(pending.session_id) {
            return Ok(None);
        }
    }
    shared
        .store()
        .report_status(node, &pending.report, pending.at_ms)
        .await
        .map(Some)
}
