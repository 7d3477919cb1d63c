//! An instance's lifecycle as data: one state enum and a pure transition function
//! `step(machine, policy, event) -> (machine, actions)`. The runner performs the actions
//! (spawn, signal, timers) and feeds back the events; nothing here touches the system.
//!
//! ```text
//!            Start                Spawned
//!  Stopped ---------> Starting ------------> Running
//!     ^                 |  ^                    |  \  Exited (policy says restart)
//!     |     SpawnFailed |  | RetryDue           |   \---------> Starting (1st quick failure,
//!     |                 v  |                    |               or a run >= min_uptime)
//!     |               Failed / Backoff / CrashLooping <---------  (2nd+ quick failure)
//!     |                                         |
//!     +--- GroupGone --- Stopping <--- Stop ----+        Exited (policy says no) -> Exited
//! ```

use std::time::Duration;

/// Where an instance is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// A process is being started.
    Starting,
    /// The process runs.
    Running,
    /// The stop signal was sent; waiting for every process of the group to end.
    Stopping,
    /// Stopped on purpose (desired state, or before the first start).
    Stopped,
    /// The process ended and the restart policy says to leave it.
    Exited,
    /// The process failed quickly; restart after a growing delay.
    Backoff,
    /// Too many quick failures in a row; retried every `max_delay`.
    CrashLooping,
    /// The process could not be started (missing binary, permission, unknown user);
    /// retried every `max_delay`.
    Failed,
}

impl State {
    /// The state as the wire carries it.
    pub fn wire(self) -> corral_proto::v1::InstanceState {
        use corral_proto::v1::InstanceState as W;
        match self {
            State::Starting => W::Starting,
            State::Running => W::Running,
            State::Stopping => W::Stopping,
            State::Stopped => W::Stopped,
            State::Exited => W::Exited,
            State::Backoff => W::Backoff,
            State::CrashLooping => W::CrashLooping,
            State::Failed => W::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Exited => "exited",
            State::Backoff => "backoff",
            State::CrashLooping => "crash-looping",
            State::Failed => "failed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartKind {
    Always,
    OnFailure,
    Never,
}

/// The restart part of a spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub kind: RestartKind,
    pub min_uptime: Duration,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub max_quick_failures: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event {
    /// The desired state says run.
    Start,
    /// The desired state says stop.
    Stop,
    /// Stop (if running) and start again: a restart request or a new spec.
    Restart,
    Spawned,
    SpawnFailed,
    /// The main process ended; `failed` is a non-zero code, a signal, or unknown.
    Exited {
        failed: bool,
        uptime: Duration,
    },
    /// The stop timeout passed and processes of the group remain.
    StopTimeout,
    /// No process of the group is left.
    GroupGone,
    /// A backoff or retry delay passed.
    RetryDue,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Start the process.
    Spawn,
    /// Send the stop signal to the process group.
    SignalGroup,
    /// SIGKILL the process group.
    KillGroup,
    /// Start the stop timeout.
    ArmStopTimer,
    /// Wait until no process of the group is left, then deliver `GroupGone`.
    AwaitGroupGone,
    /// Deliver `RetryDue` after this long.
    ArmRetry(Duration),
    /// Forget a pending `RetryDue`.
    DisarmRetry,
}

/// The state plus what the transitions need to remember.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Machine {
    pub state: State,
    /// Quick failures in a row.
    pub quick_failures: u32,
    /// Start again once the stop completes (a restart).
    pub start_after_stop: bool,
}

impl Machine {
    pub fn new(state: State) -> Machine {
        Machine {
            state,
            quick_failures: 0,
            start_after_stop: false,
        }
    }
}

/// The delay after the `n`-th quick failure in a row (n >= 2): `initial_delay` doubled
/// for each failure after the 2nd, times `jitter` (expected in [0.75, 1.25]), at most
/// `max_delay`.
pub fn backoff_delay(policy: &Policy, n: u32, jitter: f64) -> Duration {
    let doublings = n.saturating_sub(2).min(32);
    let base = policy
        .initial_delay
        .saturating_mul(1u32 << doublings.min(31));
    base.mul_f64(jitter).min(policy.max_delay)
}

/// One transition. `jitter` is the random factor for a backoff delay, passed in so this
/// stays a pure function.
pub fn step(m: Machine, policy: &Policy, event: Event, jitter: f64) -> (Machine, Vec<Action>) {
    use Action::*;
    use State::*;
    let to = |state: State, m: Machine| Machine { state, ..m };
    match (m.state, event) {
        // Run.
        (Stopped | Exited | Failed | Backoff | CrashLooping, Event::Start) => (
            Machine {
                state: Starting,
                quick_failures: 0,
                start_after_stop: false,
            },
            vec![DisarmRetry, Spawn],
        ),
        (Stopping, Event::Start) => (
            Machine {
                start_after_stop: true,
                ..m
            },
            vec![],
        ),
        (Starting | Running, Event::Start) => (m, vec![]),

        // Stop.
        (Starting | Running, Event::Stop) => (
            Machine {
                state: Stopping,
                start_after_stop: false,
                ..m
            },
            vec![SignalGroup, ArmStopTimer],
        ),
        (Stopping, Event::Stop) => (
            Machine {
                start_after_stop: false,
                ..m
            },
            vec![],
        ),
        (Backoff | CrashLooping | Failed | Exited, Event::Stop) => {
            (to(Stopped, m), vec![DisarmRetry])
        }
        (Stopped, Event::Stop) => (m, vec![]),

        // Restart: stop what runs, then start.
        (Starting | Running, Event::Restart) => (
            Machine {
                state: Stopping,
                start_after_stop: true,
                ..m
            },
            vec![SignalGroup, ArmStopTimer],
        ),
        (Stopping, Event::Restart) => (
            Machine {
                start_after_stop: true,
                ..m
            },
            vec![],
        ),
        (Stopped | Exited | Failed | Backoff | CrashLooping, Event::Restart) => (
            Machine {
                state: Starting,
                quick_failures: 0,
                start_after_stop: false,
            },
            vec![DisarmRetry, Spawn],
        ),

        (Starting, Event::Spawned) => (to(Running, m), vec![]),
        (Starting, Event::SpawnFailed) => (to(Failed, m), vec![ArmRetry(policy.max_delay)]),

        // The process ended while we were stopping it: wait for the rest of its group.
        (Stopping, Event::Exited { .. }) => (m, vec![AwaitGroupGone]),
        (Stopping, Event::StopTimeout) => (m, vec![KillGroup, AwaitGroupGone]),
        (Stopping, Event::GroupGone) if m.start_after_stop => (
            Machine {
                state: Starting,
                quick_failures: 0,
                start_after_stop: false,
            },
            vec![Spawn],
        ),
        (Stopping, Event::GroupGone) => (to(Stopped, m), vec![]),

        // The process ended on its own. Whatever it left in its group goes with it.
        (Starting | Running, Event::Exited { failed, uptime }) => {
            let restart = match policy.kind {
                RestartKind::Always => true,
                RestartKind::OnFailure => failed,
                RestartKind::Never => false,
            };
            if !restart {
                return (to(Exited, m), vec![KillGroup]);
            }
            if uptime >= policy.min_uptime {
                return (
                    Machine {
                        state: Starting,
                        quick_failures: 0,
                        ..m
                    },
                    vec![KillGroup, Spawn],
                );
            }
            let n = m.quick_failures.saturating_add(1);
            let m = Machine {
                quick_failures: n,
                ..m
            };
            if n >= policy.max_quick_failures {
                (
                    to(CrashLooping, m),
                    vec![KillGroup, ArmRetry(policy.max_delay)],
                )
            } else if n == 1 {
                (to(Starting, m), vec![KillGroup, Spawn])
            } else {
                (
                    to(Backoff, m),
                    vec![KillGroup, ArmRetry(backoff_delay(policy, n, jitter))],
                )
            }
        }

        (Backoff | CrashLooping | Failed, Event::RetryDue) => (to(Starting, m), vec![Spawn]),

        // Anything else is stale (a timer that fired after a state change): ignore it.
        _ => (m, vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::Action::*;
    use super::State::*;
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy(kind: RestartKind) -> Policy {
        Policy {
            kind,
            min_uptime: Duration::from_secs(5),
            initial_delay: 100 * MS,
            max_delay: Duration::from_secs(30),
            max_quick_failures: 4,
        }
    }

    fn m(state: State, quick_failures: u32) -> Machine {
        Machine {
            state,
            quick_failures,
            start_after_stop: false,
        }
    }

    fn quick(failed: bool) -> Event {
        Event::Exited {
            failed,
            uptime: 10 * MS,
        }
    }

    fn long(failed: bool) -> Event {
        Event::Exited {
            failed,
            uptime: Duration::from_secs(60),
        }
    }

    /// name, policy, from, event, expected state, expected actions
    type Row = (&'static str, Policy, Machine, Event, State, Vec<Action>);

    #[test]
    fn transitions() {
        let always = policy(RestartKind::Always);
        let on_failure = policy(RestartKind::OnFailure);
        let never = policy(RestartKind::Never);
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("start from stopped", always, m(Stopped, 0), Event::Start, Starting, vec![DisarmRetry, Spawn]),
            ("spawned", always, m(Starting, 0), Event::Spawned, Running, vec![]),
            ("spawn failure", always, m(Starting, 0), Event::SpawnFailed, Failed, vec![ArmRetry(Duration::from_secs(30))]),
            ("failed retries", always, m(Failed, 0), Event::RetryDue, Starting, vec![Spawn]),
            ("start while running is nothing", always, m(Running, 0), Event::Start, Running, vec![]),
            ("crash after a long run: at once", always, m(Running, 3), long(true), Starting, vec![KillGroup, Spawn]),
            ("1st quick failure: at once", always, m(Running, 0), quick(true), Starting, vec![KillGroup, Spawn]),
            ("2nd quick failure: backoff", always, m(Running, 1), quick(true), Backoff, vec![KillGroup, ArmRetry(100 * MS)]),
            ("3rd quick failure: doubled", always, m(Running, 2), quick(true), Backoff, vec![KillGroup, ArmRetry(200 * MS)]),
            ("max quick failures: crash-looping", always, m(Running, 3), quick(true), CrashLooping, vec![KillGroup, ArmRetry(Duration::from_secs(30))]),
            ("crash-looping retries", always, m(CrashLooping, 4), Event::RetryDue, Starting, vec![Spawn]),
            ("backoff retries", always, m(Backoff, 2), Event::RetryDue, Starting, vec![Spawn]),
            ("always restarts a clean exit", always, m(Running, 0), long(false), Starting, vec![KillGroup, Spawn]),
            ("on-failure leaves a clean exit", on_failure, m(Running, 0), long(false), Exited, vec![KillGroup]),
            ("on-failure restarts a failure", on_failure, m(Running, 0), long(true), Starting, vec![KillGroup, Spawn]),
            ("never leaves a failure", never, m(Running, 0), quick(true), Exited, vec![KillGroup]),
            ("stop a running one", always, m(Running, 0), Event::Stop, Stopping, vec![SignalGroup, ArmStopTimer]),
            ("main exits while stopping", always, m(Stopping, 0), long(false), Stopping, vec![AwaitGroupGone]),
            ("stop timeout kills the group", always, m(Stopping, 0), Event::StopTimeout, Stopping, vec![KillGroup, AwaitGroupGone]),
            ("group gone: stopped", always, m(Stopping, 0), Event::GroupGone, Stopped, vec![]),
            ("stop during backoff", always, m(Backoff, 2), Event::Stop, Stopped, vec![DisarmRetry]),
            ("stop an exited one", never, m(Exited, 0), Event::Stop, Stopped, vec![DisarmRetry]),
            ("restart a running one", always, m(Running, 0), Event::Restart, Stopping, vec![SignalGroup, ArmStopTimer]),
            ("restart a crash-looping one", always, m(CrashLooping, 4), Event::Restart, Starting, vec![DisarmRetry, Spawn]),
            ("restart an exited one", never, m(Exited, 0), Event::Restart, Starting, vec![DisarmRetry, Spawn]),
            ("stale retry is ignored", always, m(Running, 0), Event::RetryDue, Running, vec![]),
            ("stale stop timeout is ignored", always, m(Stopped, 0), Event::StopTimeout, Stopped, vec![]),
            ("stale exit is ignored", always, m(Stopped, 0), quick(true), Stopped, vec![]),
        ];
        for (name, policy, from, event, want_state, want_actions) in table {
            let (got, actions) = step(from, &policy, event, 1.0);
            assert_eq!((got.state, actions), (want_state, want_actions), "{name}");
        }
    }

    #[test]
    fn restart_goes_through_stop_and_starts_again() {
        let p = policy(RestartKind::Always);
        let (s, _) = step(m(Running, 2), &p, Event::Restart, 1.0);
        assert!(s.start_after_stop);
        let (s, a) = step(s, &p, long(false), 1.0);
        assert_eq!((s.state, a), (Stopping, vec![AwaitGroupGone]));
        let (s, a) = step(s, &p, Event::GroupGone, 1.0);
        assert_eq!((s.state, s.quick_failures, a), (Starting, 0, vec![Spawn]));
        // A stop request cancels a pending restart.
        let (s, _) = step(m(Running, 0), &p, Event::Restart, 1.0);
        let (s, _) = step(s, &p, Event::Stop, 1.0);
        let (s, _) = step(s, &p, Event::GroupGone, 1.0);
        assert_eq!(s.state, Stopped);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let p = policy(RestartKind::Always);
        assert_eq!(backoff_delay(&p, 2, 1.0), 100 * MS);
        assert_eq!(backoff_delay(&p, 3, 1.0), 200 * MS);
        assert_eq!(backoff_delay(&p, 5, 1.0), 800 * MS);
        assert_eq!(backoff_delay(&p, 2, 0.75), 75 * MS);
        assert_eq!(backoff_delay(&p, 40, 1.25), Duration::from_secs(30));
        // Jitter never makes a later delay shorter than an earlier one.
        for n in 2..12 {
            assert!(backoff_delay(&p, n + 1, 0.75) >= backoff_delay(&p, n, 1.25).min(p.max_delay));
        }
    }

    #[test]
    fn a_crash_loop_reaches_crash_looping_and_a_long_run_resets_it() {
        let p = policy(RestartKind::Always);
        let mut s = m(Running, 0);
        let mut states = Vec::new();
        for _ in 0..4 {
            let (next, _) = step(s, &p, quick(true), 1.0);
            states.push(next.state);
            s = Machine {
                state: Running,
                ..next
            };
        }
        assert_eq!(states, [Starting, Backoff, Backoff, CrashLooping]);
        let (s, a) = step(s, &p, long(true), 1.0);
        assert_eq!(
            (s.state, s.quick_failures, a),
            (Starting, 0, vec![KillGroup, Spawn])
        );
    }
}
