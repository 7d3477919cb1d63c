//! What the runner does when told what is wanted: at its start, adopt the process a
//! previous agent left running (or report that it ended, or start); on each new desired
//! state, restart for a new spec, start, stop, rewrite configs, or restart once for a
//! restart request.

use tracing::info;

use super::Runner;
use crate::instance::install;
use crate::instance::memory::{self, Memory};
use crate::instance::process;
use crate::instance::state::{Event, Machine, State};
use crate::instance::{Desired, spec_hash};

impl Runner {
    /// Set-up: directories, then adopt what a previous agent left running, or start;
    /// then any download ahead of time.
    pub(super) fn begin(&mut self) {
        self.adopt_or_start();
        self.maybe_prefetch();
    }

    fn adopt_or_start(&mut self) {
        for sub in ["conf", "logs", "data"] {
            if let Err(e) = std::fs::create_dir_all(self.dir.join(sub)) {
                self.last_error = format!("cannot create {}: {e}", self.dir.join(sub).display());
            }
        }
        let remembered = memory::load(&self.dir);
        self.memory = remembered.clone().unwrap_or(Memory {
            acted_counter: self.desired.restart_counter,
            ..Memory::default()
        });
        self.last_exit = self.memory.last_exit.clone();
        let boot = process::boot_id();
        if let Some(m) = remembered.filter(|m| m.pid != 0) {
            let adopted = (m.boot_id == boot)
                .then(|| process::adopt(m.pid, m.start_ticks, m.started_at_ms))
                .flatten();
            match adopted {
                Some(proc) => {
                    info!(instance = %self.name, pid = proc.pid, "adopted a running process");
                    self.oom_seen = self.cgroup.as_ref().map_or(0, |cg| cg.oom_kills());
                    self.started_at_ms = proc.started_at_ms;
                    self.group = Some(proc.pid);
                    self.proc = Some(proc);
                    self.machine = Machine::new(State::Running);
                    self.publish(None);
                    if m.spec_hash != self.hash && self.desired.running {
                        self.restart_for_new_spec("the spec changed while the agent was away");
                    } else if !self.desired.running {
                        self.reason = "stop requested".into();
                        self.apply(Event::Stop);
                    } else {
                        self.take_restart_request();
                    }
                    return;
                }
                None => {
                    self.clear_cgroup();
                    // It ended while no agent watched it: report that, then apply policy.
                    self.machine = Machine::new(State::Running);
                    self.memory.pid = 0;
                    self.save();
                    if self.desired.running {
                        if m.spec_hash != self.hash {
                            // It ran an older spec: as after a crash while the new
                            // release installs, that runs again until the switch.
                            self.install_step(install::Event::Outdated {
                                why: "the spec changed while the agent was away".into(),
                            });
                        }
                        self.reason = "the process ended while the agent was away".into();
                        self.last_exit = "unknown".into();
                        self.apply(Event::Exited {
                            failed: true,
                            uptime: self.policy.min_uptime,
                        });
                    } else {
                        self.machine = Machine::new(State::Stopped);
                        self.publish(None);
                    }
                    return;
                }
            }
        }
        self.clear_cgroup();
        self.publish(None);
        if self.desired.running {
            self.reason = "deployed".into();
            self.apply(Event::Start);
        }
    }

    /// No process this agent knows of runs: whatever is in the instance's cgroup was left
    /// by one that ended (a crash, or an agent that died before it wrote what it started)
    /// and is killed; an empty cgroup is removed.
    fn clear_cgroup(&mut self) {
        let Some(cg) = &self.cgroup else {
            return;
        };
        if !cg.exists() {
            return;
        }
        if !cg.is_empty() {
            let left = cg.pids();
            info!(instance = %self.name, processes = left.len(), cgroup = %cg.path().display(), "killing what a process that ended left in its cgroup");
            if let Err(e) = cg.kill() {
                self.last_error = e;
            }
        }
        cg.remove();
    }

    /// Acts on a restart counter bumped since the last restart we did.
    fn take_restart_request(&mut self) {
        if self.desired.restart_counter > self.memory.acted_counter {
            self.memory.acted_counter = self.desired.restart_counter;
            self.save();
            if self.desired.running {
                self.reason = "restart requested".into();
                self.apply(Event::Restart);
            }
        }
    }

    /// A new desired state: restart for a new spec, start or stop, or restart once
    /// for a restart request.
    pub(super) fn update(&mut self, new: Desired) {
        let new_hash = spec_hash(&new.spec);
        let configs_changed = new.configs != self.desired.configs;
        let spec_changed = new_hash != self.hash;
        let was_running = self.desired.running;
        self.policy = new.policy;
        self.desired = new;
        self.hash = new_hash;
        if spec_changed && self.desired.running {
            // The restart request, if any, is covered by this restart.
            self.memory.acted_counter = self.memory.acted_counter.max(self.desired.restart_counter);
            self.save();
            if self.machine.state == State::Stopping {
                self.restart_for_new_spec("the spec changed");
                // A stop under way ends in a start, whatever the install does.
                self.apply(Event::Start);
            } else if self.proc.is_some() && self.memory.spec_hash == self.hash {
                // The process runs this spec already (a revert to the release it kept
                // running): nothing to restart, no switch to wait for.
                self.install_step(install::Event::SpecRuns);
            } else if self.proc.is_some() {
                self.restart_for_new_spec("the spec changed");
            } else if self.machine.state == State::Starting {
                // A start waiting for an install: for the new spec's release now.
                self.start_again("the spec changed");
            } else {
                self.reason = "the spec changed".into();
                self.apply(Event::Start);
            }
            return;
        }
        if self.desired.running != was_running {
            self.reason = if self.desired.running {
                "start requested"
            } else {
                "stop requested"
            }
            .into();
            self.apply(if self.desired.running {
                Event::Start
            } else {
                Event::Stop
            });
        }
        if configs_changed {
            self.configs_changed();
        }
        self.take_restart_request();
    }
}
