//! What the runner tells the board (and through it the registry): the instance's status
//! after every change, and an event for each state transition or health verdict change.

use corral_proto::v1::{Install, InstanceEvent, InstanceStatus};
use tracing::info;

use super::Runner;
use crate::instance::state::State;

impl Runner {
    /// Publishes the status, with the event of a state change from `from` for `reason`.
    pub(super) fn publish(&self, change: Option<(State, String)>) {
        let event = change.map(|(from, reason)| {
            info!(instance = %self.name, from = from.as_str(), to = self.machine.state.as_str(), %reason, "instance state");
            self.event("state", from.as_str(), reason)
        });
        self.shared.board.publish(&self.name, self.status(), event);
    }

    /// An event of this instance: from `from` to where it is now (its state, or its
    /// health verdict for kind "health").
    pub(super) fn event(&self, kind: &str, from: &str, reason: String) -> InstanceEvent {
        let to = if kind == "health" {
            self.health.report()
        } else {
            self.machine.state.as_str()
        };
        InstanceEvent {
            app: self.app.clone(),
            server: self.server.clone(),
            from: from.into(),
            to: to.into(),
            reason,
            at_ms: crate::now_ms(),
            kind: kind.into(),
        }
    }

    pub(super) fn status(&self) -> InstanceStatus {
        let progress = &self.install.progress;
        InstanceStatus {
            health: self.health.report().to_string(),
            health_error: self.health.report_error().to_string(),
            app: self.app.clone(),
            server: self.server.clone(),
            state: self.machine.state.as_str().into(),
            pid: self.proc.as_ref().map_or(0, |p| p.pid),
            restarts: self.memory.restarts,
            started_at_ms: self.started_at_ms,
            last_exit: self.last_exit.clone(),
            last_error: self.last_error.clone(),
            version: if self.proc.is_some() {
                self.memory.version.clone()
            } else {
                String::new()
            },
            install: (!progress.version.is_empty()).then(|| Install {
                version: progress.version.clone(),
                state: progress.state.clone(),
                percent: progress.percent,
                error: progress.error.clone(),
            }),
        }
    }
}
