//! The releases of one instance as data: the install under way (and whether a start
//! waits for it), the last install's progress, and a switch to the spec's release that
//! waits for its install. One pure transition function
//! `step(install, event) -> (install, actions)`, table-tested; the runner gathers what
//! is on disk into the events and performs the actions (`runner/release.rs`). Which
//! release starts when the spec's is not on disk is [`fallback`]'s decision.
//!
//! ```text
//!  Start ------------> the spec's release on disk? ---------------- yes --> StartWanted
//!                        | no                                              (switch dropped)
//!                        v
//!                  fallback::on_start: Previous -> StartPrevious (+ Download, switch kept)
//!                                      Install  -> Download, the start waits (for_spawn)
//!  Done (for the spec) --> StartWanted when a start waits; Switch when a switch waits
//!  Failed -------------> fallback::on_install_failed: StartPrevious, FailStart,
//!                        ReportError (what runs keeps running) or only the progress
//! ```

use corral_proto::v1::PackageRef;

use super::fallback::{self, AfterFailure, Failure, Situation, Start};
use crate::package::install::Progress;

/// An install under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub version: String,
    /// A start waits for it; else it is a download ahead of time.
    pub for_spawn: bool,
}

/// The install side of an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Install {
    pub task: Option<Task>,
    /// The last install's progress, reported with the status.
    pub progress: Progress,
    /// Restart (for this reason) once the spec's release is installed: until then the
    /// process runs the previous release.
    pub switch: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A process must start (the lifecycle's `Spawn`). `wanted`: the spec's package, None
    /// for a spec without one; `ready`: its release is on disk; `previous`: the release
    /// the last process was started with is on disk.
    Start {
        wanted: Option<PackageRef>,
        ready: bool,
        previous: bool,
    },
    /// The start that waited for the install will not happen (a stop came first): the
    /// install goes on as a download ahead of time.
    StartCancelled,
    /// The running process is to move onto the spec, for `why`; `wanted` and `ready` as
    /// for `Start`.
    SpecChanged {
        why: String,
        wanted: Option<PackageRef>,
        ready: bool,
    },
    /// The process runs the spec already (a revert to what it kept running).
    SpecRuns,
    /// The process ran an older spec and will start again: switch, for `why`, once the
    /// spec's release is installed.
    Outdated { why: String },
    /// The install under way reported progress.
    Progressed(Progress),
    /// The install under way failed with `error`. `starting`: the instance is starting;
    /// `previous` as for `Start`.
    Failed {
        error: String,
        starting: bool,
        previous: bool,
    },
    /// The install under way succeeded. `wanted`: it is the spec's package's version;
    /// `starting`: the instance is starting.
    Done { wanted: bool, starting: bool },
    /// A rollout is coming: download `pkg` ahead of time. `ready`: it is on disk.
    Prefetch { pkg: PackageRef, ready: bool },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Download and unpack this package (the one under way, if any, is dropped), then
    /// report the status.
    Download(PackageRef),
    /// Start the spec's release (switching `current` to it when it has a package).
    StartWanted,
    /// Start the previous release; once it runs, report `error`, if any, as the
    /// instance's error (why the spec's release does not run).
    StartPrevious { error: Option<String> },
    /// The start failed: nothing to run (retried per the restart policy).
    FailStart { error: String },
    /// Restart onto the spec's release, for this reason.
    Restart(String),
    /// The spec's release is installed: move the running process onto it, for this
    /// reason (as `SpecChanged` would).
    Switch(String),
    /// What runs keeps running; report this as the instance's error.
    ReportError(String),
    /// Report the status (the progress changed).
    Publish,
}

/// "downloading", "ready", "failed": the states an install reports.
pub fn downloading(version: &str) -> Progress {
    Progress {
        version: version.to_string(),
        state: "downloading".into(),
        ..Progress::default()
    }
}

pub fn ready(version: &str) -> Progress {
    Progress {
        version: version.to_string(),
        state: "ready".into(),
        percent: 100,
        error: String::new(),
    }
}

pub fn failed(version: &str, error: &str) -> Progress {
    Progress {
        version: version.to_string(),
        state: "failed".into(),
        percent: 0,
        error: error.to_string(),
    }
}

impl Install {
    /// The last install of `version` failed and none runs now.
    fn failed_for(&self, version: &str) -> bool {
        self.task.is_none() && self.progress.version == version && self.progress.state == "failed"
    }

    /// Installs `pkg` unless that install is under way already.
    fn download(&mut self, pkg: &PackageRef, for_spawn: bool, actions: &mut Vec<Action>) {
        if self.task.as_ref().is_some_and(|t| t.version == pkg.version) {
            return;
        }
        self.task = Some(Task {
            version: pkg.version.clone(),
            for_spawn,
        });
        self.progress = downloading(&pkg.version);
        actions.push(Action::Download(pkg.clone()));
    }

    /// No start waits for the install under way (it goes on as a download ahead of time).
    fn not_waiting(&mut self) {
        if let Some(t) = self.task.as_mut() {
            t.for_spawn = false;
        }
    }
}

/// One transition.
pub fn step(mut s: Install, event: Event) -> (Install, Vec<Action>) {
    let mut actions = Vec::new();
    match event {
        Event::Start { wanted: None, .. } => {
            s.switch = None;
            s.not_waiting();
            actions.push(Action::StartWanted);
        }
        Event::Start {
            wanted: Some(pkg),
            ready,
            previous,
        } => {
            let wanted_failed = s.failed_for(&pkg.version);
            let situation = Situation {
                wanted_ready: ready,
                wanted_failed,
                switch_pending: s.switch.is_some(),
                previous,
            };
            match fallback::on_start(situation) {
                Start::Wanted => {
                    s.switch = None;
                    s.not_waiting();
                    actions.push(Action::StartWanted);
                }
                Start::Previous { install } => {
                    if install {
                        s.download(&pkg, false, &mut actions);
                        s.not_waiting();
                        s.switch
                            .get_or_insert_with(|| format!("release {} installed", pkg.version));
                    }
                    let error = wanted_failed.then(|| s.progress.error.clone());
                    actions.push(Action::StartPrevious { error });
                }
                Start::Install => {
                    // The start waits for the install; a switch it would have done is this.
                    s.switch = None;
                    s.download(&pkg, true, &mut actions);
                    if let Some(t) = s.task.as_mut() {
                        t.for_spawn = true;
                    }
                }
            }
        }
        Event::StartCancelled => s.not_waiting(),
        Event::SpecChanged {
            why,
            wanted: Some(pkg),
            ready: false,
        } => {
            s.download(&pkg, false, &mut actions);
            s.switch = Some(why);
        }
        Event::SpecChanged { why, .. } => {
            s.switch = None;
            actions.push(Action::Restart(why));
        }
        Event::SpecRuns => s.switch = None,
        Event::Outdated { why } => s.switch = Some(why),
        Event::Progressed(progress) => {
            if s.task.is_some() {
                s.progress = progress;
                actions.push(Action::Publish);
            }
        }
        Event::Failed {
            error,
            starting,
            previous,
        } => {
            let Some(task) = s.task.take() else {
                return (s, actions);
            };
            s.progress = failed(&task.version, &error);
            let failure = Failure {
                waiting: task.for_spawn && starting,
                switch_pending: s.switch.is_some(),
                previous,
            };
            match fallback::on_install_failed(failure) {
                AfterFailure::StartPrevious if previous => {
                    s.switch = None;
                    actions.push(Action::StartPrevious { error: Some(error) });
                }
                AfterFailure::StartPrevious | AfterFailure::FailStart => {
                    actions.push(Action::FailStart { error });
                }
                AfterFailure::KeepRunning => {
                    s.switch = None;
                    actions.push(Action::ReportError(error));
                    actions.push(Action::Publish);
                }
                AfterFailure::Report => actions.push(Action::Publish),
            }
        }
        Event::Done { wanted, starting } => {
            let Some(task) = s.task.take() else {
                return (s, actions);
            };
            s.progress = ready(&task.version);
            actions.push(if wanted && task.for_spawn && starting {
                Action::StartWanted
            } else {
                Action::Publish
            });
            if let Some(why) = s.switch.take()
                && wanted
            {
                actions.push(Action::Switch(why));
            }
        }
        Event::Prefetch {
            pkg,
            ready: on_disk,
        } => {
            let busy = s.task.as_ref().is_some_and(|t| t.version == pkg.version);
            if busy || on_disk {
                if !busy && s.progress.version != pkg.version {
                    s.progress = ready(&pkg.version);
                    actions.push(Action::Publish);
                }
            } else if s.task.is_none() {
                s.download(&pkg, false, &mut actions);
            }
        }
    }
    (s, actions)
}

#[cfg(test)]
mod tests {
    use super::Action::*;
    use super::*;

    fn pkg(version: &str) -> PackageRef {
        PackageRef {
            version: version.into(),
            sha256: format!("sha-{version}"),
            size: 1,
        }
    }

    fn task(version: &str, for_spawn: bool) -> Option<Task> {
        Some(Task {
            version: version.into(),
            for_spawn,
        })
    }

    /// An install side: the task under way, the last progress, the switch pending.
    fn s(task: Option<Task>, progress: Progress, switch: Option<&str>) -> Install {
        Install {
            task,
            progress,
            switch: switch.map(String::from),
        }
    }

    fn idle() -> Install {
        Install::default()
    }

    fn start(wanted: Option<&str>, ready: bool, previous: bool) -> Event {
        Event::Start {
            wanted: wanted.map(pkg),
            ready,
            previous,
        }
    }

    fn spec_changed(wanted: Option<&str>, ready: bool) -> Event {
        Event::SpecChanged {
            why: "the spec changed".into(),
            wanted: wanted.map(pkg),
            ready,
        }
    }

    fn failure(starting: bool, previous: bool) -> Event {
        Event::Failed {
            error: "sha256 mismatch".into(),
            starting,
            previous,
        }
    }

    fn prefetch(version: &str, ready: bool) -> Event {
        Event::Prefetch {
            pkg: pkg(version),
            ready,
        }
    }

    fn err(text: &str) -> Option<String> {
        Some(text.to_string())
    }

    /// name, from, event, expected state, expected actions
    type Row = (&'static str, Install, Event, Install, Vec<Action>);

    #[test]
    fn starts() {
        let failed_2 = failed("2", "sha256 mismatch");
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("no package: start, no switch, no start waits",
                s(task("2", true), downloading("2"), Some("x")), start(None, false, false),
                s(task("2", false), downloading("2"), None), vec![StartWanted]),
            ("the release is on disk: start it",
                s(None, ready("2"), Some("x")), start(Some("2"), true, true),
                s(None, ready("2"), None), vec![StartWanted]),
            ("a first deploy waits for its install",
                idle(), start(Some("2"), false, false),
                s(task("2", true), downloading("2"), None), vec![Download(pkg("2"))]),
            ("a start joins the download under way",
                s(task("2", false), downloading("2"), None), start(Some("2"), false, true),
                s(task("2", true), downloading("2"), None), vec![]),
            ("a start replaces the download of another version",
                s(task("3", false), downloading("3"), None), start(Some("2"), false, false),
                s(task("2", true), downloading("2"), None), vec![Download(pkg("2"))]),
            ("a crash while the switch waits: the previous release at once",
                s(task("2", false), downloading("2"), Some("the spec changed")), start(Some("2"), false, true),
                s(task("2", false), downloading("2"), Some("the spec changed")), vec![StartPrevious { error: None }]),
            ("the switch waits but no install runs: install, start the previous",
                s(None, Progress::default(), Some("the spec changed")), start(Some("2"), false, true),
                s(task("2", false), downloading("2"), Some("the spec changed")), vec![Download(pkg("2")), StartPrevious { error: None }]),
            ("after a failed install: the previous release, saying why",
                s(None, failed_2.clone(), None), start(Some("2"), false, true),
                s(None, failed_2.clone(), None), vec![StartPrevious { error: err("sha256 mismatch") }]),
            ("after a failed install with nothing to go back to: try again",
                s(None, failed_2.clone(), None), start(Some("2"), false, false),
                s(task("2", true), downloading("2"), None), vec![Download(pkg("2"))]),
            ("a failure of another version does not count",
                s(None, failed("3", "x"), None), start(Some("2"), false, true),
                s(task("2", true), downloading("2"), None), vec![Download(pkg("2"))]),
        ];
        check(table);
    }

    #[test]
    fn spec_changes_and_switches() {
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("the new release is on disk: restart now",
                s(None, ready("2"), Some("old")), spec_changed(Some("2"), true),
                s(None, ready("2"), None), vec![Restart("the spec changed".into())]),
            ("no package: restart now",
                idle(), spec_changed(None, false),
                idle(), vec![Restart("the spec changed".into())]),
            ("not on disk: install first, keep running",
                idle(), spec_changed(Some("2"), false),
                s(task("2", false), downloading("2"), Some("the spec changed")), vec![Download(pkg("2"))]),
            ("not on disk, its install under way: wait for it",
                s(task("2", false), downloading("2"), None), spec_changed(Some("2"), false),
                s(task("2", false), downloading("2"), Some("the spec changed")), vec![]),
            ("a revert to what runs drops the switch",
                s(task("2", false), downloading("2"), Some("the spec changed")), Event::SpecRuns,
                s(task("2", false), downloading("2"), None), vec![]),
            ("a process that ran an older spec switches later",
                idle(), Event::Outdated { why: "away".into() },
                s(None, Progress::default(), Some("away")), vec![]),
            ("a cancelled start leaves a download ahead of time",
                s(task("2", true), downloading("2"), None), Event::StartCancelled,
                s(task("2", false), downloading("2"), None), vec![]),
        ];
        check(table);
    }

    #[test]
    fn installs_end() {
        let failed_2 = failed("2", "sha256 mismatch");
        let done = |wanted, starting| Event::Done { wanted, starting };
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("done, a start waits: start it",
                s(task("2", true), downloading("2"), None), done(true, true),
                s(None, ready("2"), None), vec![StartWanted]),
            ("done, the start was cancelled: report",
                s(task("2", true), downloading("2"), None), done(true, false),
                s(None, ready("2"), None), vec![Publish]),
            ("done, a switch waits: switch",
                s(task("2", false), downloading("2"), Some("the spec changed")), done(true, false),
                s(None, ready("2"), None), vec![Publish, Switch("the spec changed".into())]),
            ("done, no longer the spec's: the switch is dropped",
                s(task("2", false), downloading("2"), Some("the spec changed")), done(false, false),
                s(None, ready("2"), None), vec![Publish]),
            ("done with nothing under way: nothing",
                idle(), done(true, true),
                idle(), vec![]),
            ("failed, a start waits: the previous release",
                s(task("2", true), downloading("2"), Some("x")), failure(true, true),
                s(None, failed_2.clone(), None), vec![StartPrevious { error: err("sha256 mismatch") }]),
            ("failed, a start waits, nothing to go back to: the start fails",
                s(task("2", true), downloading("2"), None), failure(true, false),
                s(None, failed_2.clone(), None), vec![FailStart { error: "sha256 mismatch".into() }]),
            ("failed, a switch waits: what runs keeps running",
                s(task("2", false), downloading("2"), Some("x")), failure(false, true),
                s(None, failed_2.clone(), None), vec![ReportError("sha256 mismatch".into()), Publish]),
            ("failed, a download ahead of time: only reported",
                s(task("2", false), downloading("2"), None), failure(false, true),
                s(None, failed_2.clone(), None), vec![Publish]),
            ("failed, a start that was cancelled: only reported",
                s(task("2", true), downloading("2"), None), failure(false, true),
                s(None, failed_2.clone(), None), vec![Publish]),
            ("progress is reported",
                s(task("2", false), downloading("2"), None), Event::Progressed(Progress { percent: 40, ..downloading("2") }),
                s(task("2", false), Progress { percent: 40, ..downloading("2") }, None), vec![Publish]),
            ("progress of nothing is ignored",
                idle(), Event::Progressed(downloading("2")),
                idle(), vec![]),
        ];
        check(table);
    }

    #[test]
    fn prefetches() {
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("download ahead of time",
                idle(), prefetch("3", false),
                s(task("3", false), downloading("3"), None), vec![Download(pkg("3"))]),
            ("already on disk: say it is ready",
                s(None, ready("2"), None), prefetch("3", true),
                s(None, ready("3"), None), vec![Publish]),
            ("already said",
                s(None, ready("3"), None), prefetch("3", true),
                s(None, ready("3"), None), vec![]),
            ("under way already",
                s(task("3", false), downloading("3"), None), prefetch("3", false),
                s(task("3", false), downloading("3"), None), vec![]),
            ("another install runs: later",
                s(task("2", true), downloading("2"), None), prefetch("3", false),
                s(task("2", true), downloading("2"), None), vec![]),
        ];
        check(table);
    }

    fn check(table: Vec<Row>) {
        for (name, from, event, want, want_actions) in table {
            let (got, actions) = step(from, event);
            assert_eq!((got, actions), (want, want_actions), "{name}");
        }
    }

    /// A rollout's path: the new release installs while the old one runs; a crash
    /// meanwhile starts the old one again; the switch happens once it is installed.
    #[test]
    fn a_switch_survives_a_crash_during_the_install() {
        let (s1, a) = step(idle(), spec_changed(Some("2"), false));
        assert_eq!(a, vec![Download(pkg("2"))]);
        let (s2, a) = step(s1, start(Some("2"), false, true));
        assert_eq!(a, vec![StartPrevious { error: None }]);
        let (s3, a) = step(
            s2,
            Event::Done {
                wanted: true,
                starting: false,
            },
        );
        assert_eq!(a, vec![Publish, Switch("the spec changed".into())]);
        let (s4, a) = step(s3, spec_changed(Some("2"), true));
        assert_eq!(a, vec![Restart("the spec changed".into())]);
        assert_eq!(s4, s(None, ready("2"), None));
    }
}
