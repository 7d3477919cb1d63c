//! What an instance runs when the release its spec names is not on disk: wait for the
//! install, or start the previous release. Pure decisions, table-tested; the install
//! machine ([`install`](super::install)) takes them, the runner performs them
//! (`runner/release.rs`).
//!
//! The *previous release* is what the instance's last process was started with: its spec
//! (kept in the instance's state file) and its release directory, when that is still on
//! disk. A release that cannot be installed never leaves an instance without a process
//! while the previous release is there:
//!
//! * a process that must start again while a switch to a new release waits for its
//!   install (a crash, a restart request, a stop that was under way, an agent that
//!   found its process gone) starts the previous release at once; the switch happens
//!   when the install is done;
//! * a start that waits for an install (a stopped or failed instance given a new release)
//!   starts the previous release when the install fails;
//! * once an install of the spec's release has failed, starts (a crash, a restart
//!   request) run the previous release; the install is tried again when the desired
//!   state names another spec or the agent restarts. Going back to the previous spec
//!   (what a rollout's revert does) restarts nothing: it is what runs.
//!
//! The install error is reported in `last_error` and the install state either way.

use corral_proto::v1::ServerSpec;
use prost::Message;

/// What is known when a process must start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Situation {
    /// The spec's release is on disk (or the spec names none).
    pub wanted_ready: bool,
    /// The last install of the spec's release failed, and none runs now.
    pub wanted_failed: bool,
    /// A switch to the spec's release waits for its install; until then the previous
    /// release is what runs.
    pub switch_pending: bool,
    /// The previous release is on disk.
    pub previous: bool,
}

/// How to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The spec's release.
    Wanted,
    /// The previous release; with `install`, install the spec's release meanwhile and
    /// switch to it once it is ready.
    Previous { install: bool },
    /// Install the spec's release and start once it is ready.
    Install,
}

pub fn on_start(s: Situation) -> Start {
    if s.wanted_ready {
        Start::Wanted
    } else if !s.previous {
        Start::Install
    } else if s.wanted_failed {
        Start::Previous { install: false }
    } else if s.switch_pending {
        Start::Previous { install: true }
    } else {
        Start::Install
    }
}

/// What is known when an install fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// A start waits for this install (no process runs).
    pub waiting: bool,
    /// A running process was to switch to this release once installed.
    pub switch_pending: bool,
    /// The previous release is on disk.
    pub previous: bool,
}

/// What to do about a failed install.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// Start the previous release instead; report the install error.
    StartPrevious,
    /// Nothing to start: the start failed (retried per the restart policy).
    FailStart,
    /// What runs keeps running; report the install error as the instance's error.
    KeepRunning,
    /// A download ahead of time failed: report it in the install state only.
    Report,
}

pub fn on_install_failed(f: Failure) -> AfterFailure {
    match f {
        Failure {
            waiting: true,
            previous: true,
            ..
        } => AfterFailure::StartPrevious,
        Failure { waiting: true, .. } => AfterFailure::FailStart,
        Failure {
            switch_pending: true,
            ..
        } => AfterFailure::KeepRunning,
        _ => AfterFailure::Report,
    }
}

/// A spec as the instance's state file keeps it.
pub fn encode(spec: &ServerSpec) -> String {
    hex::encode(spec.encode_to_vec())
}

/// The spec a state file kept; None for none (a state file from an older agent) or one
/// that cannot be read.
pub fn decode(text: &str) -> Option<ServerSpec> {
    if text.is_empty() {
        return None;
    }
    let bytes = hex::decode(text).ok()?;
    ServerSpec::decode(bytes.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(
        wanted_ready: bool,
        wanted_failed: bool,
        switch_pending: bool,
        previous: bool,
    ) -> Situation {
        Situation {
            wanted_ready,
            wanted_failed,
            switch_pending,
            previous,
        }
    }

    #[test]
    fn starts() {
        use Start::*;
        #[rustfmt::skip]
        let table = [
            ("the release is there", s(true, false, false, true), Wanted),
            ("there even after a failure", s(true, true, true, true), Wanted),
            ("a first deploy waits for its install", s(false, false, false, false), Install),
            ("a new release on a stopped instance waits for it", s(false, false, false, true), Install),
            ("a crash while the switch waits: the previous release at once", s(false, false, true, true), Previous { install: true }),
            ("after a failed install: the previous release", s(false, true, false, true), Previous { install: false }),
            ("after a failed install, nothing else: try again", s(false, true, false, false), Install),
            ("a switch pending with nothing to go back to", s(false, false, true, false), Install),
        ];
        for (name, situation, want) in table {
            assert_eq!(on_start(situation), want, "{name}");
        }
    }

    #[test]
    fn failures() {
        use AfterFailure::*;
        let f = |waiting, switch_pending, previous| Failure {
            waiting,
            switch_pending,
            previous,
        };
        #[rustfmt::skip]
        let table = [
            ("a waiting start falls back", f(true, false, true), StartPrevious),
            ("a waiting start with a switch pending falls back", f(true, true, true), StartPrevious),
            ("a waiting start with nothing to fall back to fails", f(true, false, false), FailStart),
            ("a running process keeps running", f(false, true, true), KeepRunning),
            ("also with nothing on disk", f(false, true, false), KeepRunning),
            ("a download ahead of time is only reported", f(false, false, true), Report),
        ];
        for (name, failure, want) in table {
            assert_eq!(on_install_failed(failure), want, "{name}");
        }
    }

    #[test]
    fn specs_round_trip_through_the_state_file() {
        let spec = ServerSpec {
            command: vec!["bin/server".into(), "--flag".into()],
            env: [("A".to_string(), "b".to_string())].into(),
            ..ServerSpec::default()
        };
        assert_eq!(decode(&encode(&spec)), Some(spec));
        assert_eq!(decode(""), None);
        assert_eq!(decode("not hex"), None);
    }
}
