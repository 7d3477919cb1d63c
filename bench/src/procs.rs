//! Processes the benchmarks start: each in a process group of its own, killed with the
//! whole group on `Drop` (also when a benchmark fails half-way), plus the small waits
//! and look-ups around them.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Process groups of live [`Group`]s and temp dirs in use, for [`kill_groups_on_signal`]:
/// a Ctrl-C reaches only the terminal's foreground group, not the groups the benchmark
/// made, and `Drop` does not run when a signal ends the process.
static LIVE_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());
static LIVE_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live_groups() -> std::sync::MutexGuard<'static, Vec<i32>> {
    LIVE_GROUPS.lock().unwrap_or_else(|e| e.into_inner())
}

fn live_dirs() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE_DIRS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temp dir to remove if a signal ends the benchmark; [`untrack_dir`] when done.
pub fn track_dir(dir: &Path) {
    live_dirs().push(dir.to_path_buf());
}

pub fn untrack_dir(dir: &Path) {
    live_dirs().retain(|d| d != dir);
}

/// On SIGINT, SIGTERM or SIGHUP, SIGKILLs every live [`Group`] and exits (130): `Drop`
/// does not run when a signal ends the process. The signals are caught by a handler
/// (tokio's) rather than blocked and waited for, because a blocked mask would be
/// inherited by every process the benchmark starts, and change how they behave.
pub fn kill_groups_on_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered here, before returning, so that no early signal is missed.
    let (mut int, mut term, mut hup) = {
        let _in_rt = rt.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        )
    };
    std::thread::spawn(move || {
        let name = rt.block_on(async {
            tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
                _ = hup.recv() => "SIGHUP",
            }
        });
        for &pgid in live_groups().iter() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        // Children left by a killed supervisor notice within a second and end.
        reap_orphans(Duration::from_secs(2));
        for dir in live_dirs().iter() {
            let _ = std::fs::remove_dir_all(dir);
        }
        eprintln!("{name}: killed the benchmark's processes and removed its temp dirs");
        std::process::exit(130);
    });
    Ok(())
}

/// A started process, leader of its own process group; the group is SIGKILLed on drop.
pub struct Group {
    child: Child,
    /// The program, to name it in errors.
    name: String,
    /// Where its stdout and stderr go: shown when something goes wrong.
    pub log: PathBuf,
}

impl Group {
    /// Starts `cmd` in a new process group with stdout and stderr appended to `log`.
    pub fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Group> {
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {:?}", cmd.get_program()))?;
        live_groups().push(child.id() as i32);
        Ok(Group {
            child,
            name: cmd.get_program().to_string_lossy().into_owned(),
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with the end of its log, if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); end of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 20)
            );
        }
        Ok(())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        let _ = self.child.wait();
        live_groups().retain(|&g| g != pgid);
    }
}

/// The last `n` lines of a log file (empty if it cannot be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// SIGKILLs `pid` and its process group, but only if it still runs `exe`: a pid read
/// from a record file may have been reused by an unrelated process since.
pub fn kill_if_running(pid: u32, exe: &Path) {
    let Ok(running) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return;
    };
    if running != exe {
        return;
    }
    let pid = Pid::from_raw(pid as i32);
    let _ = killpg(pid, Signal::SIGKILL);
    let _ = kill(pid, Signal::SIGKILL);
}

/// Makes this process the reaper of orphans from the processes it starts: a child
/// killed after its supervisor died is then ours to reap, instead of a zombie left to
/// an init that may not reap (as in some containers).
pub fn become_subreaper() -> anyhow::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).context("prctl(PR_SET_CHILD_SUBREAPER)")
}

/// Reaps every ended orphan, waiting up to `timeout` for ones still ending. Call it
/// only once every [`Group`] is dropped or killed: it would reap those too.
pub fn reap_orphans(timeout: Duration) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The full path of `program` on `$PATH`, if there is one.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Installs Debian packages (after `apt-get update`) unless each of `needed` is on
/// `$PATH` already: the peers we compare with are not part of the build.
pub fn ensure_installed(needed: &[&str], packages: &[&str]) -> anyhow::Result<()> {
    if needed.iter().all(|p| on_path(p).is_some()) {
        return Ok(());
    }
    eprintln!("installing {} with apt-get", packages.join(" "));
    run_checked(Command::new("apt-get").arg("update"))?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if let Some(missing) = needed.iter().find(|p| on_path(p).is_none()) {
        bail!("{missing} is still not on PATH after installing {packages:?}");
    }
    Ok(())
}

/// Runs a command to completion; fails with its stderr if it does not succeed.
pub fn run_checked(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
