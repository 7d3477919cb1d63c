//! The runner's side of releases: starting the spec's release, installing it first, or
//! starting the previous release when the spec's is not on disk, as
//! [`fallback`](super::fallback) decides; and what a finished install means.

use std::path::PathBuf;

use corral_proto::v1::{PackageRef, ServerSpec};
use tracing::{info, warn};

use super::fallback::{self, AfterFailure, Failure, Situation, Start};
use super::{Event, Runner, State};
use crate::package::install::{self, InstallError, Progress};

/// The release the instance's last process was started with, still on disk.
pub(super) struct Previous {
    pub spec: ServerSpec,
    /// None for a spec without a package (it runs in the instance directory).
    pub release: Option<(PackageRef, PathBuf)>,
}

impl Previous {
    fn version(&self) -> &str {
        self.release
            .as_ref()
            .map_or("", |(p, _)| p.version.as_str())
    }
}

impl Runner {
    /// Starts the process at once when its release is on disk (or it has none);
    /// otherwise installs it first, or starts the previous release (see `fallback`).
    pub(super) fn spawn_or_install(&mut self, reason: &mut String) -> Option<Event> {
        if !self.desired.spec.external_address.is_empty() {
            // An external service: nothing to start, only to check.
            self.started_at_ms = crate::now_ms();
            return Some(Event::Spawned);
        }
        let Some(pkg) = self.desired.spec.package.clone() else {
            self.restart_when_installed = None;
            self.not_waiting();
            return Some(self.start_process(reason, None, None));
        };
        let ready = install::ready_release(&self.dir, &pkg);
        let previous = if ready.is_none() {
            self.previous()
        } else {
            None
        };
        let situation = Situation {
            wanted_ready: ready.is_some(),
            wanted_failed: self.install.is_none()
                && self.install_progress.version == pkg.version
                && self.install_progress.state == "failed",
            switch_pending: self.restart_when_installed.is_some(),
            previous: previous.is_some(),
        };
        match (fallback::on_start(situation), ready, previous) {
            (Start::Wanted, Some(release), _) => {
                self.restart_when_installed = None;
                self.not_waiting();
                Some(self.switch_and_start(&pkg, release, reason))
            }
            (Start::Previous { install }, _, Some(previous)) => {
                if install {
                    if self
                        .install
                        .as_ref()
                        .is_none_or(|t| t.version != pkg.version)
                    {
                        self.start_install(pkg.clone(), false);
                    }
                    self.not_waiting();
                    self.restart_when_installed
                        .get_or_insert_with(|| format!("release {} installed", pkg.version));
                }
                info!(instance = %self.name, wanted = %pkg.version, previous = previous.version(), "starting the previous release");
                let event = self.start_previous(previous, reason);
                if event == Event::Spawned && situation.wanted_failed {
                    // Say why the previous release runs, not the spec's.
                    self.last_error = self.install_progress.error.clone();
                }
                Some(event)
            }
            _ => {
                // The start waits for the install; a switch it would have done is this.
                self.restart_when_installed = None;
                match self.install.as_mut() {
                    Some(t) if t.version == pkg.version => t.for_spawn = true,
                    _ => self.start_install(pkg, true),
                }
                None
            }
        }
    }

    /// No start waits for the install under way (it goes on as a download ahead of time).
    fn not_waiting(&mut self) {
        if let Some(t) = self.install.as_mut() {
            t.for_spawn = false;
        }
    }

    /// The release the last process was started with, if it is still on disk.
    fn previous(&self) -> Option<Previous> {
        let spec = fallback::decode(&self.memory.spec)?;
        let release = match &spec.package {
            Some(pkg) => Some((pkg.clone(), install::ready_release(&self.dir, pkg)?)),
            None => None,
        };
        Some(Previous { spec, release })
    }

    fn start_previous(&mut self, previous: Previous, reason: &mut String) -> Event {
        let note = match previous.version() {
            "" => "the previous spec".to_string(),
            v => format!("the previous release {v}"),
        };
        if !reason.is_empty() {
            reason.push_str("; ");
        }
        reason.push_str(&format!("starting {note}"));
        let release = match previous.release {
            Some((pkg, release)) => {
                if let Err(e) = install::switch(&self.dir, &pkg.version) {
                    let e = format!("cannot switch back to release {}: {e}", pkg.version);
                    self.last_error = e.clone();
                    *reason = e;
                    return Event::SpawnFailed;
                }
                Some(release)
            }
            None => None,
        };
        self.start_process(reason, release, Some(&previous.spec))
    }

    /// A start that was waiting for an install is planned again (the spec changed).
    pub(super) fn start_again(&mut self, why: &str) {
        let mut reason = why.to_string();
        if let Some(event) = self.spawn_or_install(&mut reason) {
            self.reason = reason;
            self.apply(event);
        }
    }

    pub(super) fn installed(&mut self, result: Result<PathBuf, InstallError>) {
        let Some(task) = self.install.take() else {
            return;
        };
        let e = match result {
            Ok(release) => return self.install_done(&task.version, task.for_spawn, release),
            Err(e) => e,
        };
        warn!(instance = %self.name, cause = %e, "install failed");
        let message = e.to_string();
        self.install_progress = Progress {
            version: task.version.clone(),
            state: "failed".into(),
            percent: 0,
            error: message.clone(),
        };
        let waiting = task.for_spawn && self.machine.state == State::Starting;
        let previous = if waiting { self.previous() } else { None };
        let failure = Failure {
            waiting,
            switch_pending: self.restart_when_installed.is_some(),
            previous: previous.is_some(),
        };
        match (fallback::on_install_failed(failure), previous) {
            (AfterFailure::StartPrevious, Some(previous)) => {
                self.restart_when_installed = None;
                let mut reason = message.clone();
                let event = self.start_previous(previous, &mut reason);
                if event == Event::Spawned {
                    // The previous release runs; say why the new one does not.
                    self.last_error = message;
                }
                self.reason = reason;
                self.apply(event);
            }
            (AfterFailure::StartPrevious | AfterFailure::FailStart, _) => {
                self.last_error = message.clone();
                self.reason = message;
                self.apply(Event::SpawnFailed);
            }
            (AfterFailure::KeepRunning, _) => {
                self.restart_when_installed = None;
                // The old release keeps running; say why the new one does not.
                self.last_error = message;
                self.publish(None);
            }
            (AfterFailure::Report, _) => self.publish(None),
        }
    }

    fn install_done(&mut self, version: &str, for_spawn: bool, release: PathBuf) {
        self.install_progress = Progress {
            version: version.to_string(),
            state: "ready".into(),
            percent: 100,
            error: String::new(),
        };
        let wanted = self
            .desired
            .spec
            .package
            .clone()
            .filter(|p| p.version == version);
        match wanted {
            Some(pkg) if for_spawn && self.machine.state == State::Starting => {
                let mut reason = std::mem::take(&mut self.reason);
                let event = self.switch_and_start(&pkg, release, &mut reason);
                self.reason = reason;
                self.apply(event);
            }
            _ => self.publish(None),
        }
        let wanted_now = self
            .desired
            .spec
            .package
            .as_ref()
            .is_some_and(|p| p.version == version);
        if let Some(why) = self.restart_when_installed.take()
            && wanted_now
        {
            self.restart_for_new_spec(&why);
        }
        self.maybe_prefetch();
    }
}
