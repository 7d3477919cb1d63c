//! Reports as a session receives them: an agent's `Reports` batch (or a lone status or
//! event) read into rows, each refused on its own when this registry cannot read it, and
//! recorded as one batch: one lock of what is known, one wake of the writer, one update
//! of discovery.

use corral_proto::v1::{
    EventKind, HealthStatus, InstallState, InstanceEvent, InstanceState, InstanceStatus,
};
use corral_proto::wire::{Named, Unknown, known};
use tracing::warn;

use super::{Change, Unwritten};
use crate::state::Shared;
use crate::store::{EventRow, StatusReport, now_ms};

/// Records what a session of `node` received: events first (an agent sends the events
/// that led to a status before it), then statuses.
pub fn received(
    shared: &Shared,
    node: &str,
    session_id: i64,
    events: Vec<InstanceEvent>,
    statuses: Vec<InstanceStatus>,
) {
    shared
        .metrics()
        .reports_received
        .inc_by((events.len() + statuses.len()) as u64);
    let rows: Vec<EventRow> = events
        .into_iter()
        .filter_map(|e| event_row(node, e))
        .collect();
    if !rows.is_empty() {
        let dropped = shared.actual().events(rows);
        shared.metrics().events_dropped.inc_by(dropped);
    }
    let reports: Vec<StatusReport> = statuses
        .into_iter()
        .filter_map(|s| status_report(node, s))
        .collect();
    if !reports.is_empty() {
        reported(shared, node, session_id, reports);
    }
}

/// Status reports of `node`'s session `session_id`: recorded, and those whose state or
/// health changed published to discovery at once, together (from memory, so it works
/// while the database is unreachable).
pub fn reported(shared: &Shared, node: &str, session_id: i64, reports: Vec<StatusReport>) {
    let at_ms = now_ms();
    let changed: Vec<Unwritten> = shared
        .actual()
        .report_all(node, session_id, reports, at_ms)
        .into_iter()
        .filter(|(change, _)| *change == Change::Discovery)
        .map(|(_, u)| u)
        .collect();
    if !changed.is_empty() {
        // Config files that list them follow through the renderer, which watches the
        // tables.
        shared.discovery().instances_reported(&changed);
    }
}

/// The names of a report's typed fields; an error names the field this registry cannot
/// read (a value it does not know, or one left out).
fn report_names(status: &InstanceStatus) -> Result<(String, String, String), Unknown> {
    let state = known::<InstanceState>("InstanceStatus.state", status.state)?;
    let health = known::<HealthStatus>("InstanceStatus.health", status.health)?;
    let install = match &status.install {
        Some(i) => known::<InstallState>("Install.state", i.state)?.name(),
        None => "",
    };
    Ok((
        state.name().to_string(),
        health.name().to_string(),
        install.to_string(),
    ))
}

/// A status as the store keeps it; None (logged) when this registry cannot read it.
fn status_report(node: &str, status: InstanceStatus) -> Option<StatusReport> {
    let (state, health, install_state) = match report_names(&status) {
        Ok(names) => names,
        Err(e) => {
            warn!(node, server = %format!("{}.{}", status.app, status.server), cause = %e, "refused a status report it cannot read");
            return None;
        }
    };
    Some(StatusReport {
        app: status.app,
        server: status.server,
        state,
        pid: i64::from(status.pid),
        restarts: i64::try_from(status.restarts).unwrap_or(i64::MAX),
        started_at_ms: status.started_at_ms,
        last_exit: status.last_exit,
        last_error: status.last_error,
        version: status.version,
        install_version: status
            .install
            .as_ref()
            .map(|i| i.version.clone())
            .unwrap_or_default(),
        install_state,
        install_percent: status.install.as_ref().map_or(0, |i| i64::from(i.percent)),
        install_error: status.install.map(|i| i.error).unwrap_or_default(),
        health,
        health_error: status.health_error,
    })
}

/// An event under the session's node (an agent reports for its own node only); None
/// (logged) when this registry cannot read it.
fn event_row(node: &str, event: InstanceEvent) -> Option<EventRow> {
    let kind = match known::<EventKind>("InstanceEvent.kind", event.kind) {
        Ok(k) => k.name().to_string(),
        Err(e) => {
            warn!(node, server = %format!("{}.{}", event.app, event.server), cause = %e, "refused an event it cannot read");
            return None;
        }
    };
    Some(EventRow {
        id: 0,
        at_ms: if event.at_ms > 0 {
            event.at_ms
        } else {
            now_ms()
        },
        app: event.app,
        server: event.server,
        node: node.to_string(),
        from: event.from,
        to: event.to,
        reason: event.reason,
        kind,
    })
}
