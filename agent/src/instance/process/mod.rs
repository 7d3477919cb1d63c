//! Processes of instances: spawn in a session and process group of their own, adopt after
//! an agent restart (pid plus `/proc` start time, watched through a pidfd), signal the
//! whole group.
//!
//! * `exec.rs` — posix_spawn, or a fork for another user, into a new session;
//! * `clone3.rs` — clone3(CLONE_INTO_CGROUP): created inside the instance's v2 cgroup;
//! * `clone.rs` — clone(CLONE_VM | CLONE_VFORK), then moved into the cgroups, then exec;
//! * `child.rs` — what a cloned child does before it execs;
//! * `plan.rs` — what a spawn needs ([`SpawnPlan`], [`ServiceUser`]);
//! * `pidfd.rs` — watching a process end, reaping our children;
//! * `procfs.rs` — start time, group, age and boot id from `/proc`;
//! * `group.rs` — signalling a process group, and whether any of it is left.

mod child;
mod clone;
mod clone3;
mod exec;
mod group;
mod pidfd;
mod plan;
mod procfs;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Instant;

use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;

pub use group::{group_alive, signal_group};
pub use plan::{ServiceUser, SpawnPlan};
pub use procfs::{boot_id, start_ticks};

use exec::{fork_as_user, posix_spawn_session, resolve_program};
use pidfd::{pidfd_open, reap, watch_fd};
use procfs::{age_of, live_process_group};

/// How a main process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    /// "code 3", "signal SIGKILL", or "unknown" (an adopted process: not our child).
    pub description: String,
    /// A non-zero code, a signal, or unknown.
    pub failed: bool,
}

impl ExitInfo {
    fn from_status(status: ExitStatus) -> ExitInfo {
        if let Some(code) = status.code() {
            ExitInfo {
                description: format!("code {code}"),
                failed: code != 0,
            }
        } else if let Some(sig) = status.signal() {
            let name = Signal::try_from(sig).map_or_else(
                |_| format!("signal {sig}"),
                |s| format!("signal {}", s.as_str()),
            );
            ExitInfo {
                description: name,
                failed: true,
            }
        } else {
            ExitInfo {
                description: "unknown".into(),
                failed: true,
            }
        }
    }
}

enum Watch {
    /// Our child: its pidfd turns readable when it ends, then `waitpid` reaps it.
    Child(AsyncFd<OwnedFd>),
    /// A process a previous agent started: not ours to reap.
    Adopted(AsyncFd<OwnedFd>),
}

/// A running main process.
pub struct Proc {
    pub pid: u32,
    /// `/proc/PID/stat` start time, in clock ticks since boot: with the pid, it names
    /// this process and no later one that reuses the pid.
    pub start_ticks: u64,
    pub started_at_ms: i64,
    /// When it started, on this agent's monotonic clock (for adopted ones: when adopted,
    /// corrected by how long it had been running).
    pub started: Instant,
    watch: Watch,
    /// Set once `wait` reaped our child: its pid may name another process from then on.
    reaped: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot open log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Exec {
        program: String,
        source: std::io::Error,
    },
}

fn open_log(path: &Path) -> Result<File, SpawnError> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| SpawnError::Log {
            path: path.to_path_buf(),
            source,
        })
}

pub fn spawn(plan: &SpawnPlan) -> Result<Proc, SpawnError> {
    let stdout = open_log(&plan.stdout)?;
    let stderr = open_log(&plan.stderr)?;
    let exec_error = |source| SpawnError::Exec {
        program: plan.program.display().to_string(),
        source,
    };
    let program = resolve_program(&plan.program, &plan.env).map_err(exec_error)?;
    let mut created = None;
    if let Some(dir) = plan.cgroup_dir.as_ref().filter(|_| clone3::available()) {
        let user = plan.user.as_ref();
        created = clone3::spawn_in_cgroup(&program, plan, &stdout, &stderr, dir, user)
            .map_err(exec_error)?;
    }
    let pid = match created {
        Some(pid) => pid,
        None => spawn_moving(&program, plan, stdout, stderr).map_err(exec_error)?,
    };
    // Our child stays a zombie until reaped, so its pidfd cannot name a later process.
    let fd = pidfd_open(pid).and_then(watch_fd).map_err(exec_error)?;
    Ok(Proc {
        pid,
        start_ticks: start_ticks(pid).unwrap_or(0),
        started_at_ms: crate::now_ms(),
        started: Instant::now(),
        watch: Watch::Child(fd),
        reaped: false,
    })
}

/// Starts a process that moves into its cgroups (if any) itself, by writing to their
/// `cgroup.procs` before it execs: v1 hierarchies, or a kernel without CLONE_INTO_CGROUP.
fn spawn_moving(
    program: &Path,
    plan: &SpawnPlan,
    stdout: File,
    stderr: File,
) -> std::io::Result<u32> {
    let mut procs: Vec<OwnedFd> = Vec::new();
    if let Some(dir) = &plan.cgroup_dir {
        procs.push(open_procs(dir)?);
    }
    let procs = if procs.is_empty() {
        &plan.cgroup_procs
    } else {
        &procs
    };
    match plan.user {
        Some(ref user) => fork_as_user(program, plan, user, stdout, stderr, procs),
        None if !procs.is_empty() => {
            clone::clone_into_cgroup(program, plan, &stdout, &stderr, procs)
        }
        None => posix_spawn_session(program, plan, &stdout, &stderr),
    }
}

/// The `cgroup.procs` file of the cgroup directory `dir`, open for writing.
fn open_procs(dir: &OwnedFd) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsFd as _;
    let fd = nix::fcntl::openat(
        dir.as_fd(),
        "cgroup.procs",
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    Ok(fd)
}

/// Takes over a process a previous agent started, if `pid` still names it (same start
/// time, leader of its own group). None if it is gone.
pub fn adopt(pid: u32, expected_ticks: u64, started_at_ms: i64) -> Option<Proc> {
    if start_ticks(pid)? != expected_ticks || live_process_group(pid)? != pid {
        return None;
    }
    let fd = pidfd_open(pid).ok()?;
    // The pidfd pins the process: if it still matches now, it is ours.
    if start_ticks(pid)? != expected_ticks || live_process_group(pid)? != pid {
        return None;
    }
    let age = age_of(expected_ticks).unwrap_or_default();
    Some(Proc {
        pid,
        start_ticks: expected_ticks,
        started_at_ms,
        started: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
        watch: Watch::Adopted(watch_fd(fd).ok()?),
        reaped: false,
    })
}

impl Proc {
    /// Waits for the main process to end.
    pub async fn wait(&mut self) -> ExitInfo {
        match &mut self.watch {
            Watch::Child(fd) => loop {
                let Ok(mut ready) = fd.readable().await else {
                    return ExitInfo {
                        description: "unknown (cannot watch its pidfd)".into(),
                        failed: true,
                    };
                };
                match reap(self.pid) {
                    Ok(Some(status)) => {
                        self.reaped = true;
                        return ExitInfo::from_status(status);
                    }
                    // Not ended after all: keep watching rather than start a second copy.
                    Ok(None) => ready.clear_ready(),
                    // Someone else reaped it (it has ended either way).
                    Err(e) => {
                        self.reaped = true;
                        return ExitInfo {
                            description: format!("unknown ({e})"),
                            failed: true,
                        };
                    }
                }
            },
            Watch::Adopted(fd) => {
                // A pidfd turns readable when the process ends; it is not our child, so
                // its exit status is not ours to read.
                let _ = fd.readable().await;
                ExitInfo {
                    description: "unknown".into(),
                    failed: true,
                }
            }
        }
    }
}

impl Drop for Proc {
    /// A child that ended but was never waited for (its runner went away) is reaped here,
    /// so it does not stay a zombie; one still running is left alone.
    fn drop(&mut self) {
        if matches!(self.watch, Watch::Child(_)) && !self.reaped {
            let _ = reap(self.pid);
        }
    }
}

#[cfg(test)]
mod tests;
