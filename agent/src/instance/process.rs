//! Processes of instances: spawn in a session and process group of their own, adopt after
//! an agent restart (pid plus `/proc` start time, watched through a pidfd), signal the
//! whole group.

use std::ffi::CString;
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
    /// The user to run as; None: the agent's.
    pub user: Option<ServiceUser>,
}

/// Who a service runs as: the user's uid, primary gid and every group it belongs to
/// (as `initgroups(3)` gives a login, and systemd's `User=` a service).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl ServiceUser {
    /// Looks the user up by name.
    pub fn lookup(name: &str) -> Result<(ServiceUser, nix::unistd::User), String> {
        let u = nix::unistd::User::from_name(name)
            .map_err(|e| format!("cannot look up user {name:?}: {e}"))?
            .ok_or_else(|| format!("unknown user {name:?}"))?;
        let cname =
            CString::new(name).map_err(|_| format!("user name {name:?} contains a NUL byte"))?;
        let groups = nix::unistd::getgrouplist(&cname, u.gid)
            .map_err(|e| format!("cannot list the groups of user {name:?}: {e}"))?;
        Ok((
            ServiceUser {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                groups: groups.iter().map(|g| g.as_raw()).collect(),
            },
            u,
        ))
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

/// Makes the child the leader of a new session (and so of a new process group); for the
/// fork path only (services with a `user`).
#[allow(unsafe_code)]
fn new_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
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

/// Where `program` is: itself when it names a path, else the first executable file of that
/// name in the service's `PATH` (not the agent's, which `posix_spawnp` would search).
fn resolve_program(program: &Path, env: &[(String, String)]) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    if program.as_os_str().as_encoded_bytes().contains(&b'/') {
        return Ok(program.to_path_buf());
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or("", |(_, v)| v.as_str());
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))
}

fn c_string(text: impl Into<Vec<u8>>) -> std::io::Result<CString> {
    CString::new(text).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an argument, environment variable or path contains a NUL byte",
        )
    })
}

/// The attributes and file actions of one `posix_spawn`, destroyed on drop.
#[allow(unsafe_code)]
struct SpawnSetup {
    attr: libc::posix_spawnattr_t,
    actions: libc::posix_spawn_file_actions_t,
}

#[allow(unsafe_code)]
impl Drop for SpawnSetup {
    fn drop(&mut self) {
        // SAFETY: both were initialised by `SpawnSetup::new` and are destroyed once.
        unsafe {
            libc::posix_spawnattr_destroy(&mut self.attr);
            libc::posix_spawn_file_actions_destroy(&mut self.actions);
        }
    }
}

fn os_result(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// Starts `program` as the leader of a new session with posix_spawn(3) and
/// `POSIX_SPAWN_SETSID`. glibc starts the child with `clone(CLONE_VM | CLONE_VFORK)`, whose
/// cost does not grow with the agent, where fork(2) copies the page tables of a
/// multi-threaded agent first: about 0.5 ms more per restart on a small VM. stdin is
/// /dev/null, stdout and stderr the log files, SIGPIPE back to its default (Rust ignores
/// it in the agent), no signal blocked. glibc reports a failed exec as the error.
#[allow(unsafe_code)]
fn posix_spawn_session(
    program: &Path,
    plan: &SpawnPlan,
    stdout: &File,
    stderr: &File,
) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd as _;
    let c_program = c_string(program.as_os_str().as_encoded_bytes())?;
    let c_cwd = c_string(plan.cwd.as_os_str().as_encoded_bytes())?;
    let mut args = vec![c_string(plan.program.as_os_str().as_encoded_bytes())?];
    for a in &plan.args {
        args.push(c_string(a.as_str())?);
    }
    let mut env = Vec::with_capacity(plan.env.len());
    for (k, v) in &plan.env {
        env.push(c_string(format!("{k}={v}"))?);
    }
    let argv: Vec<*mut libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    let envp: Vec<*mut libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    // SAFETY: every libc call below gets pointers to live, initialised values: the
    // attribute and file-action objects are initialised before use and destroyed by
    // `SpawnSetup`'s drop; the C strings and the null-terminated argv/envp arrays outlive
    // the posix_spawn call; the log files stay open until it returns.
    unsafe {
        let mut setup = SpawnSetup {
            attr: std::mem::zeroed(),
            actions: std::mem::zeroed(),
        };
        os_result(libc::posix_spawnattr_init(&mut setup.attr))?;
        os_result(libc::posix_spawn_file_actions_init(&mut setup.actions))?;
        let actions = &mut setup.actions;
        os_result(libc::posix_spawn_file_actions_addopen(
            actions,
            0,
            c"/dev/null".as_ptr(),
            libc::O_RDONLY,
            0,
        ))?;
        os_result(libc::posix_spawn_file_actions_adddup2(
            actions,
            stdout.as_raw_fd(),
            1,
        ))?;
        os_result(libc::posix_spawn_file_actions_adddup2(
            actions,
            stderr.as_raw_fd(),
            2,
        ))?;
        os_result(libc::posix_spawn_file_actions_addchdir_np(
            actions,
            c_cwd.as_ptr(),
        ))?;
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        os_result(libc::posix_spawnattr_setsigmask(&mut setup.attr, &none))?;
        let mut default: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut default);
        libc::sigaddset(&mut default, libc::SIGPIPE);
        os_result(libc::posix_spawnattr_setsigdefault(
            &mut setup.attr,
            &default,
        ))?;
        let flags = libc::POSIX_SPAWN_SETSID
            | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
            | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short;
        os_result(libc::posix_spawnattr_setflags(&mut setup.attr, flags))?;
        let mut pid: libc::pid_t = 0;
        os_result(libc::posix_spawn(
            &mut pid,
            c_program.as_ptr(),
            &setup.actions,
            &setup.attr,
            argv.as_ptr(),
            envp.as_ptr(),
        ))?;
        Ok(pid as u32)
    }
}

/// Starts a service that runs as another user: posix_spawn cannot change the user, so
/// this forks (std's `Command`). In the child, before the exec: setsid(2), then the
/// user's groups, gid and uid, then the working directory, entered as that user.
#[allow(unsafe_code)]
fn fork_as_user(
    program: &Path,
    plan: &SpawnPlan,
    user: &ServiceUser,
    stdout: File,
    stderr: File,
) -> std::io::Result<u32> {
    use std::os::unix::process::CommandExt as _;
    let cwd = c_string(plan.cwd.as_os_str().as_encoded_bytes())?;
    let groups: Vec<libc::gid_t> = user.groups.clone();
    let (uid, gid) = (user.uid, user.gid);
    let mut cmd = std::process::Command::new(program);
    cmd.arg0(&plan.program)
        .args(&plan.args)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    new_session(&mut cmd);
    // std's `uid()` would drop every supplementary group (its `groups()` is unstable), so
    // the ids are set here. SAFETY: the closure runs in the forked child before exec and
    // only calls setgroups(2), setgid(2), setuid(2) and chdir(2), which are
    // async-signal-safe, on memory made before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::setgroups(groups.len(), groups.as_ptr()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))?;
            check(libc::chdir(cwd.as_ptr()))
        });
    }
    // Dropping a std Child neither waits nor kills: the pidfd watches it from here on.
    Ok(cmd.spawn()?.id())
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
    let exec_error = |source| SpawnError::Exec {
        program: plan.program.display().to_string(),
        source,
    };
    let program = resolve_program(&plan.program, &plan.env).map_err(exec_error)?;
    let pid = match plan.user {
        Some(ref user) => fork_as_user(&program, plan, user, stdout, stderr),
        None => posix_spawn_session(&program, plan, &stdout, &stderr),
    }
    .map_err(exec_error)?;
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

/// Reaps our child `pid` if it has ended (waitpid with WNOHANG): its exit status, or None
/// while it runs.
fn reap(pid: u32) -> std::io::Result<Option<ExitStatus>> {
    let mut status: libc::c_int = 0;
    #[allow(unsafe_code)]
    // SAFETY: waitpid writes the status of the given child into a live c_int.
    let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    match rc {
        0 => Ok(None),
        r if r < 0 => Err(std::io::Error::last_os_error()),
        _ => Ok(Some(ExitStatus::from_raw(status))),
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
