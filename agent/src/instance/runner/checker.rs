//! The runner's health checker: it runs exactly while the instance runs and its spec has
//! a check; each result goes through [`Health`](crate::instance::health::Health), a
//! changed verdict is reported as a "health" event, and too many failures in a row
//! restart the instance.

use std::path::PathBuf;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::info;

use super::Runner;
use super::launch::DEFAULT_PATH;
use crate::instance::health;
use crate::instance::state::{Event, State};

impl Runner {
    /// Runs the health checker exactly while the instance runs and has a check.
    pub(super) fn sync_checker(&mut self) {
        let wanted = self.machine.state == State::Running && self.desired.spec.health.is_some();
        match (&self.checker, wanted) {
            (None, true) => {
                let started = self.proc.as_ref().map_or_else(Instant::now, |p| p.started);
                self.health
                    .restart(self.desired.spec.health.clone(), started);
                let (tx, rx) = mpsc::channel(4);
                let target = self.health_target();
                self.checker = Some((health::spawn(target, tx), rx));
            }
            (Some(_), false) => {
                if let Some((task, _)) = self.checker.take() {
                    task.abort();
                }
                self.health
                    .restart(self.desired.spec.health.clone(), Instant::now());
            }
            _ => {}
        }
    }

    /// What to probe: the check's adapter on the node's address (or the external
    /// address), and an exec check's command, run in the current release.
    fn health_target(&self) -> health::Target {
        let check = self.desired.spec.health.clone().unwrap_or_default();
        let spec = &self.desired.spec;
        let addr = if spec.external_address.is_empty() {
            let port = spec
                .adapters
                .iter()
                .find(|a| a.name == check.adapter)
                .or(spec.adapters.first())
                .map(|a| a.port as u16);
            port.map(|p| (self.shared.node_ip.clone(), p))
        } else {
            spec.external_address.rsplit_once(':').and_then(|(h, p)| {
                Some((
                    h.trim_start_matches('[').trim_end_matches(']').to_string(),
                    p.parse().ok()?,
                ))
            })
        };
        let exec = check.command.first().map(|program| {
            let base = self.dir.join("current");
            let base = if base.exists() {
                base
            } else {
                self.dir.clone()
            };
            let path = PathBuf::from(program);
            let program = if path.is_absolute() || !program.contains('/') {
                path
            } else {
                base.join(program)
            };
            let env = vec![
                ("PATH".to_string(), DEFAULT_PATH.to_string()),
                ("CORRAL_NODE_IP".to_string(), self.shared.node_ip.clone()),
                (
                    "CORRAL_INSTANCE_DIR".to_string(),
                    self.dir.display().to_string(),
                ),
            ];
            health::ExecCheck {
                program,
                args: check.command[1..].to_vec(),
                cwd: base,
                env,
            }
        });
        health::Target { check, addr, exec }
    }

    /// One probe's result.
    pub(super) fn checked(&mut self, result: Result<(), String>) {
        let (verdict, cause) = (self.health.report(), self.health.report_error().to_string());
        let outcome = self.health.record(result, Instant::now());
        if outcome.changed {
            info!(instance = %self.name, health = self.health.report(), cause = %self.health.last_error, "health changed");
            let event = health::change_event(&self.health);
            self.shared.board.publish(
                &self.name,
                self.status(),
                Some(self.event("health", verdict, event)),
            );
        } else if self.health.report_error() != cause {
            self.publish(None);
        }
        if outcome.restart && self.machine.state == State::Running {
            self.reason = format!("health check failed too often: {}", self.health.last_error);
            self.apply(Event::Restart);
        }
    }
}
