//! The runner's side of releases: it gathers what is on disk (the spec's release, the
//! previous one) into events for the install machine ([`install`](crate::instance::install))
//! and performs what that decides: download, start the spec's release (switching
//! `current` to it), start the previous release, fail the start, restart onto a new
//! release once it is installed.

use std::path::PathBuf;

use corral_proto::v1::{PackageRef, ServerSpec};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{Download, Runner};
use crate::instance::fallback;
use crate::instance::install::{self, Action};
use crate::instance::state::{Event, State};
use crate::package::install::{InstallError, collect_garbage, ready_release, switch};

/// The release the instance's last process was started with, still on disk.
struct Previous {
    spec: ServerSpec,
    /// None for a spec without a package (it runs in the instance directory).
    release: Option<(PackageRef, PathBuf)>,
}

impl Previous {
    fn version(&self) -> &str {
        self.release
            .as_ref()
            .map_or("", |(p, _)| p.version.as_str())
    }
}

/// What the runner found on disk, for the install machine's start actions.
#[derive(Default)]
struct Found {
    /// The spec's release: on disk, or just installed.
    release: Option<PathBuf>,
    previous: Option<Previous>,
}

impl Runner {
    /// Starts the process at once when its release is on disk (or it has none);
    /// otherwise installs it first, or starts the previous release (see `fallback`).
    /// The lifecycle event of the start; None while the start waits for the install.
    pub(super) fn spawn_or_install(&mut self, reason: &mut String) -> Option<Event> {
        if !self.desired.spec.external_address.is_empty() {
            // An external service: nothing to start, only to check.
            self.started_at_ms = crate::now_ms();
            return Some(Event::Spawned);
        }
        let wanted = self.desired.spec.package.clone();
        let release = wanted.as_ref().and_then(|p| ready_release(&self.dir, p));
        let previous = match (&wanted, &release) {
            (Some(_), None) => self.previous(),
            _ => None,
        };
        let event = install::Event::Start {
            wanted,
            ready: release.is_some(),
            previous: previous.is_some(),
        };
        let mut found = Found { release, previous };
        let mut started = None;
        for action in self.install_transition(event) {
            if let Some(event) = self.perform_install(action, reason, &mut found) {
                started = Some(event);
            }
        }
        started
    }

    /// A start that was waiting for an install is planned again (the spec changed).
    pub(super) fn start_again(&mut self, why: &str) {
        let mut reason = why.to_string();
        if let Some(event) = self.spawn_or_install(&mut reason) {
            self.reason = reason;
            self.apply(event);
        }
    }

    /// The start that waited for the install is off (the instance stops).
    pub(super) fn start_cancelled(&mut self) {
        self.install_step(install::Event::StartCancelled);
    }

    /// Moves a running process onto a new spec. When the new spec needs a release that
    /// is not on disk yet, it is installed first and the process keeps running
    /// meanwhile: a package that cannot be installed leaves the running release alone.
    pub(super) fn restart_for_new_spec(&mut self, why: &str) {
        let wanted = self.desired.spec.package.clone();
        let ready = wanted
            .as_ref()
            .is_some_and(|p| ready_release(&self.dir, p).is_some());
        if let Some(pkg) = &wanted
            && !ready
        {
            info!(instance = %self.name, version = %pkg.version, "installing the new release before restarting");
        }
        self.install_step(install::Event::SpecChanged {
            why: why.to_string(),
            wanted,
            ready,
        });
    }

    /// Downloads ahead of time the release a rollout is about to switch to.
    pub(super) fn maybe_prefetch(&mut self) {
        let Some(pkg) = self.desired.prefetch.clone() else {
            return;
        };
        let ready = ready_release(&self.dir, &pkg).is_some();
        self.install_step(install::Event::Prefetch { pkg, ready });
    }

    pub(super) fn install_progressed(&mut self) {
        if let Some(d) = &self.download {
            let progress = d.progress.borrow().clone();
            self.install_step(install::Event::Progressed(progress));
        }
    }

    /// The install under way ended.
    pub(super) fn installed(&mut self, result: Result<PathBuf, InstallError>) {
        self.download = None;
        let Some(version) = self.install.task.as_ref().map(|t| t.version.clone()) else {
            return;
        };
        let starting = self.machine.state == State::Starting;
        match result {
            Ok(release) => {
                let wanted = self
                    .desired
                    .spec
                    .package
                    .as_ref()
                    .is_some_and(|p| p.version == version);
                let found = Found {
                    release: Some(release),
                    previous: None,
                };
                let reason = self.reason.clone();
                self.install_event(install::Event::Done { wanted, starting }, reason, found);
                self.maybe_prefetch();
            }
            Err(e) => {
                warn!(instance = %self.name, cause = %e, "install failed");
                let error = e.to_string();
                let previous = self.previous();
                let event = install::Event::Failed {
                    error: error.clone(),
                    starting,
                    previous: previous.is_some(),
                };
                let found = Found {
                    release: None,
                    previous,
                };
                self.install_event(event, error, found);
            }
        }
    }

    /// Steps the install machine with an event that needs nothing from the disk.
    pub(super) fn install_step(&mut self, event: install::Event) {
        self.install_event(event, String::new(), Found::default());
    }

    /// Steps the install machine with an event from outside the lifecycle's actions and
    /// performs what it decides; a start it makes goes through the lifecycle at once,
    /// for `reason`.
    fn install_event(&mut self, event: install::Event, mut reason: String, mut found: Found) {
        for action in self.install_transition(event) {
            if let Some(event) = self.perform_install(action, &mut reason, &mut found) {
                self.reason = std::mem::take(&mut reason);
                self.apply(event);
            }
        }
    }

    fn install_transition(&mut self, event: install::Event) -> Vec<Action> {
        let (next, actions) = install::step(std::mem::take(&mut self.install), event);
        self.install = next;
        actions
    }

    /// Performs one action of the install machine; the lifecycle event of a start.
    fn perform_install(
        &mut self,
        action: Action,
        reason: &mut String,
        found: &mut Found,
    ) -> Option<Event> {
        match action {
            Action::Download(pkg) => {
                self.start_download(pkg);
                None
            }
            Action::StartWanted => {
                match (self.desired.spec.package.clone(), found.release.take()) {
                    (Some(pkg), Some(release)) => {
                        Some(self.switch_and_start(&pkg, release, reason))
                    }
                    (Some(_), None) => None,
                    (None, _) => Some(self.start_process(reason, None, None)),
                }
            }
            Action::StartPrevious { error } => {
                let previous = found.previous.take()?;
                let wanted = self.desired.spec.package.as_ref();
                info!(instance = %self.name, wanted = wanted.map_or("", |p| p.version.as_str()), previous = previous.version(), "starting the previous release");
                let event = self.start_previous(previous, reason);
                if event == Event::Spawned
                    && let Some(error) = error
                {
                    // Say why the previous release runs, not the spec's.
                    self.last_error = error;
                }
                Some(event)
            }
            Action::FailStart { error } => {
                self.last_error = error.clone();
                *reason = error;
                Some(Event::SpawnFailed)
            }
            Action::Restart(why) => {
                self.reason = why;
                self.apply(Event::Restart);
                None
            }
            Action::Switch(why) => {
                self.restart_for_new_spec(&why);
                None
            }
            Action::ReportError(error) => {
                // The old release keeps running; say why the new one does not.
                self.last_error = error;
                None
            }
            Action::Publish => {
                self.publish(None);
                None
            }
        }
    }

    fn start_download(&mut self, pkg: PackageRef) {
        if let Some(old) = self.download.take() {
            old.handle.abort();
        }
        let (tx, rx) = watch::channel(install::downloading(&pkg.version));
        let installer = self.shared.installer.clone();
        let (app, server, dir) = (self.app.clone(), self.server.clone(), self.dir.clone());
        let handle =
            tokio::spawn(async move { installer.install(&app, &server, &dir, &pkg, &tx).await });
        self.download = Some(Download {
            handle,
            progress: rx,
        });
        self.publish(None);
    }

    /// The release the last process was started with, if it is still on disk.
    fn previous(&self) -> Option<Previous> {
        let spec = fallback::decode(&self.memory.spec)?;
        let release = match &spec.package {
            Some(pkg) => Some((pkg.clone(), ready_release(&self.dir, pkg)?)),
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
                if let Err(e) = switch(&self.dir, &pkg.version) {
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

    /// Points `current` at the spec's release and starts it; then drops old releases.
    fn switch_and_start(
        &mut self,
        pkg: &PackageRef,
        release: PathBuf,
        reason: &mut String,
    ) -> Event {
        if let Err(e) = switch(&self.dir, &pkg.version) {
            let e = format!("cannot switch to release {}: {e}", pkg.version);
            self.last_error = e.clone();
            *reason = e;
            return Event::SpawnFailed;
        }
        let event = self.start_process(reason, Some(release), None);
        let prefetch = self.desired.prefetch.as_ref().map(|p| p.version.clone());
        let mut protect = vec![pkg.version.as_str()];
        protect.extend(prefetch.as_deref());
        let installer = &self.shared.installer;
        collect_garbage(
            &installer.data_dir,
            &self.dir,
            installer.keep_releases,
            &protect,
        );
        event
    }
}
