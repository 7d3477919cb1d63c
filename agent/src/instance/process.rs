//! Processes of instances: spawn in a session and process group of their own, adopt after
//! an agent restart (pid plus `/proc` start time, watched through a pidfd), signal the
//! whole group.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

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

/// What `spawn` needs; built by the runner from the spec.
pub struct SpawnPlan {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// uid and gid to run as; None: the agent's own.
    pub user: Option<(u32, u32)>,
}

enum Watch {
    Child(tokio::process::Child),
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

/// Start time of `pid` in clock ticks since boot, from `/proc/PID/stat` field 22.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The process group of `pid`, from `/proc/PID/stat` field 5, if `pid` is alive: a
/// zombie (state Z or X) has ended, even though its entry is still there.
fn live_process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    if matches!(fields.next()?, "Z" | "X") {
        return None;
    }
    fields.nth(1)?.parse().ok()
}

/// Seconds the system has been up, and clock ticks per second: to tell a process's age.
fn age_of(start_ticks: u64) -> Option<std::time::Duration> {
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    let started = start_ticks as f64 / hz as f64;
    Some(std::time::Duration::from_secs_f64(
        (uptime - started).max(0.0),
    ))
}

/// This boot's id: a pid and start time only name a process within one boot.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
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

/// Makes the child the leader of a new session (and so of a new process group).
#[allow(unsafe_code)]
fn new_session(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2),
    // which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
}

/// Opens a pidfd for `pid` (pidfd_open(2)); readable once the process has ended.
#[allow(unsafe_code)]
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1;
    // on success we take sole ownership of that descriptor.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd as i32))
    }
}

pub fn spawn(plan: &SpawnPlan) -> Result<Proc, SpawnError> {
    let stdout = open_log(&plan.stdout)?;
    let stderr = open_log(&plan.stderr)?;
    let mut cmd = tokio::process::Command::new(&plan.program);
    cmd.args(&plan.args)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&plan.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(false);
    if let Some((uid, gid)) = plan.user {
        cmd.uid(uid).gid(gid);
    }
    new_session(&mut cmd);
    let child = cmd.spawn().map_err(|source| SpawnError::Exec {
        program: plan.program.display().to_string(),
        source,
    })?;
    let pid = child.id().unwrap_or(0);
    Ok(Proc {
        pid,
        start_ticks: start_ticks(pid).unwrap_or(0),
        started_at_ms: crate::now_ms(),
        started: Instant::now(),
        watch: Watch::Child(child),
    })
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
    })
}

/// Registers a pidfd with the reactor.
#[allow(unsafe_code)]
fn watch_fd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is a valid open descriptor whose `as_raw_fd` never changes, and
    // it is owned by the AsyncFd from here on, so it stays open as long as that lives.
    unsafe { AsyncFd::register(fd).map_err(|e| e.into_parts().1) }
}

impl Proc {
    /// Waits for the main process to end.
    pub async fn wait(&mut self) -> ExitInfo {
        match &mut self.watch {
            Watch::Child(child) => match child.wait().await {
                Ok(status) => ExitInfo::from_status(status),
                Err(e) => ExitInfo {
                    description: format!("unknown ({e})"),
                    failed: true,
                },
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

/// Sends `signal` to the process group `pgid`. A group that is already gone is fine.
pub fn signal_group(pgid: u32, signal: Signal) -> Result<(), Errno> {
    match killpg(Pid::from_raw(pgid as i32), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether any live process of the group `pgid` is left. Zombies do not count: they
/// have ended, and whether they are reaped is up to their parent (often init).
pub fn group_alive(pgid: u32) -> bool {
    if matches!(killpg(Pid::from_raw(pgid as i32), None), Err(Errno::ESRCH)) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
        pgrp == Some(pgid) && state != Some("Z") && state != Some("X")
    })
}
