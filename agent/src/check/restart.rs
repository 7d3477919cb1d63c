//! Bringing an agent that does not answer back: `systemctl restart` for one that
//! systemd started; else stop the hung process (only if it is still the recorded one)
//! and spawn the recorded command line again, detached; then wait for it to answer.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{
    CheckError, LOG_FILE, POLL, RESTART_TIMEOUT, RUN_FILE, RunRecord, SYSTEMD_UNIT, answers,
};

/// How long a hung agent has to exit after SIGTERM, and after SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Variables that tie a process to the service manager that started it: a respawned
/// agent must not inherit those of the `agent check` that started it.
const MANAGER_VARS: [&str; 7] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "INVOCATION_ID",
    "SYSTEMD_EXEC_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
];

/// Starts the agent again: through systemd, or from its record. What was done, and the
/// spawned process if any.
pub(super) async fn restart(
    record: &RunRecord,
    data_dir: &Path,
    cause: &str,
) -> Result<(String, Option<Child>), CheckError> {
    if record.under_systemd {
        systemctl_restart().map_err(|reason| CheckError::Systemctl {
            cause: cause.to_string(),
            reason,
        })?;
        return Ok((format!("ran `systemctl restart {SYSTEMD_UNIT}`"), None));
    }
    let stopped = stop_hung(record).await;
    let child = spawn(record, data_dir, cause)?;
    let action = format!(
        "{stopped}started it again (pid {}) as `{}`, output appended to {}",
        child.id(),
        record.argv.join(" "),
        data_dir.join(LOG_FILE).display()
    );
    Ok((action, Some(child)))
}

fn systemctl_restart() -> Result<(), String> {
    let out = Command::new("systemctl")
        .args(["restart", SYSTEMD_UNIT])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Stops the recorded agent if it still runs but does not answer (it holds the data dir
/// lock, so a new one could not start): SIGTERM, then SIGKILL. Only a process with the
/// recorded pid *and* command line is signalled, never a stranger that reused the pid.
async fn stop_hung(record: &RunRecord) -> String {
    let Ok(raw) = i32::try_from(record.pid) else {
        return String::new();
    };
    if record.pid == std::process::id() || !runs_as(record.pid, &record.argv) {
        return String::new();
    }
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let _ = kill(Pid::from_raw(raw), signal);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while runs_as(record.pid, &record.argv) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        if !runs_as(record.pid, &record.argv) {
            return format!(
                "stopped the hung agent (pid {}) with {signal}, ",
                record.pid
            );
        }
    }
    format!("could not stop the hung agent (pid {}), ", record.pid)
}

/// Whether `pid` is a live process with command line `argv` (a zombie has none).
fn runs_as(pid: u32, argv: &[String]) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let args = args.strip_suffix(&[String::new()]).unwrap_or(&args);
    args == argv
}

/// Spawns the recorded command line with the recorded `CORRAL_*` environment, in a new
/// session (so it outlives this check and any terminal), output appended to the log.
fn spawn(record: &RunRecord, data_dir: &Path, cause: &str) -> Result<Child, CheckError> {
    let (argv0, args) = record
        .argv
        .split_first()
        .ok_or_else(|| CheckError::BadRecord {
            path: data_dir.join(RUN_FILE),
            reason: "argv is empty".into(),
        })?;
    let program = record
        .exe
        .clone()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(argv0));
    let log_path = data_dir.join(LOG_FILE);
    let log_err = |source| CheckError::Log {
        cause: cause.to_string(),
        path: log_path.clone(),
        source,
    };
    let stdout = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(log_err)?;
    let stderr = stdout.try_clone().map_err(log_err)?;
    let mut cmd = Command::new(&program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .current_dir(
            record
                .cwd
                .clone()
                .filter(|d| d.is_dir())
                .unwrap_or_else(|| PathBuf::from("/")),
        );
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("CORRAL_") || MANAGER_VARS.contains(&name.as_ref()) {
            cmd.env_remove(&key);
        }
    }
    cmd.envs(&record.env);
    new_session(&mut cmd);
    cmd.spawn().map_err(|source| CheckError::Spawn {
        cause: cause.to_string(),
        program: program.display().to_string(),
        source,
    })
}

/// Makes the child the leader of a new session (and so of a new process group).
#[allow(unsafe_code)]
fn new_session(cmd: &mut Command) {
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

/// Waits up to [`RESTART_TIMEOUT`] for an agent to answer as the one its (re-read)
/// record names; gives up early when the process just spawned exits.
pub(super) async fn wait_back(
    data_dir: &Path,
    mut child: Option<&mut Child>,
) -> Result<u32, String> {
    let deadline = Instant::now() + RESTART_TIMEOUT;
    loop {
        let last = match RunRecord::read(data_dir) {
            Ok(record) => match answers(&record).await {
                Ok(()) => return Ok(record.pid),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if let Some(Ok(Some(status))) = child.as_mut().map(|c| c.try_wait()) {
            return Err(format!(
                "but it exited ({status}); see {}",
                data_dir.join(LOG_FILE).display()
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "but it does not answer after {RESTART_TIMEOUT:?} ({last})"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}
