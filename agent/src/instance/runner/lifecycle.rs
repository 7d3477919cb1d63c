//! The runner's side of the lifecycle machine ([`state`](crate::instance::state)): runs
//! each event through `step`, performs the actions it returns (spawn, signal or kill the
//! process group, timers) with any events those lead to, and reports every state
//! change. Also the events the process itself gives: its exit, its group gone.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::Rng;

use super::Runner;
use crate::instance::process::{self, ExitInfo};
use crate::instance::state::{Action, Event, State, step};
use crate::instance::{reason, spec};

impl Runner {
    /// Runs one event through the state machine and performs the actions, with any
    /// events those produce, reporting every state change.
    pub(super) fn apply(&mut self, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            let before = self.machine.state;
            let jitter = rand::rng().random_range(0.75..=1.25);
            let (machine, actions) = step(self.machine, &self.policy, event, jitter);
            self.machine = machine;
            let mut reason = std::mem::take(&mut self.reason);
            let given = reason.clone();
            let queued = queue.len();
            for action in actions {
                if let Some(next) = self.perform(action, &mut reason) {
                    queue.push_back(next);
                }
            }
            if self.machine.state != before {
                let (reason, next) = reason::split(&given, reason, queue.len() > queued);
                self.publish(Some((before, reason)));
                self.reason = next;
            } else if !reason.is_empty() {
                self.reason = reason;
            }
        }
    }

    fn perform(&mut self, action: Action, reason: &mut String) -> Option<Event> {
        match action {
            Action::Spawn => self.spawn_or_install(reason),
            Action::SignalGroup => {
                // Nothing runs (an install was in progress, or the group already ended).
                if !self.anything_left() {
                    self.start_cancelled();
                    return Some(Event::GroupGone);
                }
                let sig = self.desired.stop_signal;
                // Every process of the cgroup gets the stop signal, daemons included.
                if let Some(cg) = &self.cgroup
                    && let Err(e) = cg.signal(sig)
                {
                    self.last_error = e;
                }
                if let Some(pgid) = self.group
                    && let Err(e) = process::signal_group(pgid, sig)
                {
                    self.last_error =
                        format!("cannot send {} to process group {pgid}: {e}", sig.as_str());
                }
                None
            }
            Action::KillGroup => {
                if let Some(cg) = &self.cgroup
                    && let Err(e) = cg.kill()
                {
                    self.last_error =
                        format!("cannot kill the cgroup {}: {e}", cg.path().display());
                }
                if let Some(pgid) = self.group
                    && let Err(e) = process::signal_group(pgid, Signal::SIGKILL)
                {
                    self.last_error = format!("cannot kill process group {pgid}: {e}");
                }
                None
            }
            Action::ArmStopTimer => {
                let timeout = spec::stop_timeout(&self.desired.spec);
                self.stop_deadline = Some(Instant::now() + timeout);
                None
            }
            Action::AwaitGroupGone => {
                self.awaiting_group = true;
                None
            }
            Action::ArmRetry(delay) => {
                self.retry_at = Some(Instant::now() + delay);
                if !reason.is_empty() {
                    reason.push_str(&format!(
                        "; next try in {}",
                        humantime::format_duration(round_ms(delay))
                    ));
                }
                None
            }
            Action::DisarmRetry => {
                self.retry_at = None;
                None
            }
        }
    }

    /// The main process ended.
    pub(super) fn exited(&mut self, mut info: ExitInfo) {
        if self.oom_killed() {
            let limit = self
                .desired
                .limits
                .memory_bytes
                .map_or_else(String::new, |b| {
                    format!(" (memory limit {})", bytesize::ByteSize(b).display().iec())
                });
            info.description = format!(
                "oom: killed by the kernel's OOM killer{limit}, {}",
                info.description
            );
            info.failed = true;
            self.oom_note = info.description.clone();
            self.last_error = self.oom_note.clone();
        } else {
            self.oom_note.clear();
        }
        let uptime = self
            .proc
            .as_ref()
            .map_or(Duration::ZERO, |p| p.started.elapsed());
        let pid = self.proc.as_ref().map_or(0, |p| p.pid);
        self.proc = None;
        self.memory.pid = 0;
        self.memory.last_exit = info.description.clone();
        self.last_exit = info.description.clone();
        self.reason = format!(
            "pid {pid} exited ({}) after {:.3}s",
            info.description,
            uptime.as_secs_f64()
        );
        self.apply(Event::Exited {
            failed: info.failed,
            uptime,
        });
        // A restart has already written the new pid; otherwise remember that none runs
        // (after the respawn, so a restart waits for no disk write).
        if self.proc.is_none() {
            self.save();
        }
    }

    /// Whether any process of the instance is left: of its process group, or of its
    /// cgroup (where double-forked daemons are too).
    fn anything_left(&self) -> bool {
        self.group.is_some_and(process::group_alive)
            || self.cgroup.as_ref().is_some_and(|cg| !cg.is_empty())
    }

    /// While stopping: is any process of the group (or cgroup) left?
    pub(super) fn group_check(&mut self) {
        if self.anything_left() {
            return;
        }
        self.awaiting_group = false;
        self.stop_deadline = None;
        self.group = None;
        self.apply(Event::GroupGone);
        if self.machine.state == State::Stopped
            && let Some(cg) = &self.cgroup
        {
            cg.remove();
            self.limits_written = None;
        }
    }

    /// Whether the OOM killer killed in the instance's cgroup since the last look.
    fn oom_killed(&mut self) -> bool {
        let Some(cg) = &self.cgroup else {
            return false;
        };
        let kills = cg.oom_kills();
        let new = kills.saturating_sub(self.oom_seen);
        self.oom_seen = kills;
        self.memory.oom_kills += new;
        new > 0
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}
