//! The task that writes what agents reported.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::{Key, Pending};
use crate::state::Shared;
use crate::store::{EventRow, StatusReport, StoreError};

/// How soon a write that failed is tried again (once the database answers).
const RETRY: Duration = Duration::from_millis(500);
/// Rounds are at least this far apart: while reports keep coming (a crash storm), what
/// arrives meanwhile is one round — one transaction, one recomputation of discovery, one
/// change-feed row — however many reports it holds. The first report after a quiet spell
/// is written at once, and discovery has each one from memory as it arrives.
const ROUND_GAP: Duration = Duration::from_millis(200);

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
        let wrote = shared.outage().reachable() && write_pending(&shared).await;
        if stop {
            return;
        }
        if !wrote {
            continue;
        }
        tokio::select! {
            () = shared.shutdown().cancelled() => {}
            () = tokio::time::sleep(ROUND_GAP) => {}
        }
    }
}

/// One round: the ends of sessions, then events and reports in one transaction (events
/// first: an agent sends the events that led to a status before it, so whoever sees the
/// status finds its events). The first failure stops the round; what is left goes back
/// to wait. Whether it wrote anything.
async fn write_pending(shared: &Shared) -> bool {
    let mut todo = shared.actual().take();
    let mut failed = Pending::default();
    let mut error: Option<StoreError> = None;
    let mut wrote = false;
    // A node down written late changes what discovery reads from the database; the
    // statuses written were applied to discovery from memory when they arrived.
    let mut downs_written = false;
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
                    downs_written = true;
                }
            }
            Err(err) => {
                failed.downs.push(down);
                error = Some(err);
            }
        }
    }
    let keep = i64::try_from(shared.config().event_retention).unwrap_or(i64::MAX);
    let mut statuses = Vec::new();
    for (key, pending) in std::mem::take(&mut todo.statuses) {
        if error.is_some() {
            failed.statuses.insert(key, pending);
            continue;
        }
        match is_current(shared, &key, pending.session_id).await {
            Ok(true) => statuses.push((key, pending)),
            Ok(false) => {
                debug!(node = %key.0, server = %format!("{}.{}", key.1, key.2), "status of a session replaced since: dropped");
            }
            Err(err) => {
                failed.statuses.insert(key, pending);
                error = Some(err);
            }
        }
    }
    if error.is_some() {
        failed.events.append(&mut todo.events);
        failed.statuses.extend(statuses);
    } else if !(todo.events.is_empty() && statuses.is_empty()) {
        let events: Vec<EventRow> = std::mem::take(&mut todo.events).into();
        let rows: Vec<(&str, &StatusReport, i64)> = statuses
            .iter()
            .map(|(key, p)| (key.0.as_str(), &p.report, p.at_ms))
            .collect();
        match shared.store().write_reports(&events, &rows, keep).await {
            Ok(assigned) => {
                wrote = true;
                for ((key, pending), assigned) in statuses.iter().zip(assigned) {
                    if assigned {
                        discovery |= pending.discovery;
                    } else {
                        shared.actual().unassigned(key);
                        debug!(node = %key.0, server = %format!("{}.{}", key.1, key.2), "status of an instance not assigned here");
                    }
                }
            }
            Err(err) => {
                failed.events = events.into();
                failed.statuses.extend(statuses);
                error = Some(err);
            }
        }
    }
    if downs_written {
        shared.discovery_changed();
    } else if discovery {
        shared.reports_written();
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
    wrote
}

/// Whether the session that sent a report is still its node's current one (else a newer
/// session has replaced it, and that session's agent has sent every status again).
async fn is_current(shared: &Shared, key: &Key, session_id: i64) -> Result<bool, StoreError> {
    let node = key.0.as_str();
    if shared.sessions().is_current(node, session_id) {
        return Ok(true);
    }
    let current = shared.store().get_node(node).await?.map(|n| n.session_id);
    Ok(current == Some(session_id))
}

/// Keeps the event log bounded: the newest `event_retention` events stay.
pub async fn trim_events(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shared.shutdown().cancelled() => return,
            _ = tick.tick() => {}
        }
        match shared
            .store()
            .trim_events(shared.config().event_retention as i64)
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "trimmed old events"),
            Err(err) => warn!(cause = %err, "could not trim events"),
        }
    }
}
