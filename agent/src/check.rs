//! `agent check`, for cron or a systemd timer: is the local agent answering on its
//! `/health`? If not, start it again, the way it was started.
//!
//! `agent run` records how it was started in `DATA_DIR/agent.run.json` ([`RunRecord`]):
//! its pid, the HTTP address it actually bound (port 0 resolved), its command line, its
//! `CORRAL_*` environment and whether systemd started it. `agent check` reads that
//! record. An agent that systemd started is restarted with `systemctl restart`, never by
//! a second copy beside the unit; any other is spawned again from the record, detached,
//! with its output appended to `DATA_DIR/agent.log`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, Permissions};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_common::health::{HEALTH_TIMEOUT, HealthError, get_health};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::datadir::{DataDirError, write_atomic};

/// The run record's file name in the data dir.
pub const RUN_FILE: &str = "agent.run.json";
/// Where a respawned agent's stdout and stderr go, in the data dir.
pub const LOG_FILE: &str = "agent.log";
/// How long a restarted agent has to answer.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(10);
/// The unit `scripts/systemd/corral-agent.service` installs.
pub const SYSTEMD_UNIT: &str = "corral-agent";
/// How long a hung agent has to exit after SIGTERM, and after SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);
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

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(
        "{path} does not exist: no agent has started with this data dir (is --data-dir right?); \
         start one with `agent run`"
    )]
    NoRecord { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid run record: {reason}")]
    BadRecord { path: PathBuf, reason: String },
    #[error(
        "the agent did not answer ({cause}) and `systemctl restart {SYSTEMD_UNIT}` failed: {reason}"
    )]
    Systemctl { cause: String, reason: String },
    #[error(
        "the agent did not answer ({cause}) and cannot be started again: cannot open {path}: {source}"
    )]
    Log {
        cause: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the agent did not answer ({cause}) and cannot be started again: cannot run {program}: {source}"
    )]
    Spawn {
        cause: String,
        program: String,
        source: std::io::Error,
    },
}

impl CheckError {
    /// 2 when there is no usable record (bad input), 1 when the agent is down.
    pub fn exit_code(&self) -> u8 {
        match self {
            CheckError::NoRecord { .. }
            | CheckError::Read { .. }
            | CheckError::BadRecord { .. } => 2,
            _ => 1,
        }
    }
}

/// How a running agent was started, so that `agent check` can reach it and start it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub pid: u32,
    /// The address its `/health` listens on, port 0 resolved.
    pub http: SocketAddr,
    /// Its full command line.
    pub argv: Vec<String>,
    /// The `CORRAL_*` variables it was started with: settings come from there too.
    pub env: BTreeMap<String, String>,
    /// Started by systemd: then systemd restarts it, so that the unit keeps tracking it.
    pub under_systemd: bool,
    /// Its working directory: relative paths in `argv` are relative to it.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Its executable, for an `argv[0]` found through a `PATH` that cron does not have.
    #[serde(default)]
    pub exe: Option<PathBuf>,
}

impl RunRecord {
    /// This process, serving `/health` on `http`.
    pub fn current(http: SocketAddr) -> RunRecord {
        let var = |k| std::env::var(k).ok();
        RunRecord {
            pid: std::process::id(),
            http,
            argv: std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with("CORRAL_"))
                .collect(),
            under_systemd: started_by_systemd(
                var("SYSTEMD_EXEC_PID").as_deref(),
                var("INVOCATION_ID").as_deref(),
                var("NOTIFY_SOCKET").as_deref(),
                std::process::id(),
            ),
            cwd: std::env::current_dir().ok(),
            exe: std::env::current_exe().ok(),
        }
    }

    /// Writes `DATA_DIR/agent.run.json` by rename, readable by its owner only (the
    /// environment may hold secrets).
    pub fn write(&self, data_dir: &Path) -> Result<(), DataDirError> {
        let path = data_dir.join(RUN_FILE);
        let err = |source| DataDirError::Write {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        write_atomic(&path, &json)?;
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).map_err(err)
    }

    pub fn read(data_dir: &Path) -> Result<RunRecord, CheckError> {
        let path = data_dir.join(RUN_FILE);
        let text = std::fs::read(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => CheckError::NoRecord { path: path.clone() },
            _ => CheckError::Read {
                path: path.clone(),
                source,
            },
        })?;
        let record: RunRecord =
            serde_json::from_slice(&text).map_err(|e| CheckError::BadRecord {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if record.argv.is_empty() {
            return Err(CheckError::BadRecord {
                path,
                reason: "argv is empty".into(),
            });
        }
        Ok(record)
    }
}

/// Whether systemd started this process as a unit's main process. `SYSTEMD_EXEC_PID`
/// (systemd 248+) says exactly that; without it, `INVOCATION_ID` or `NOTIFY_SOCKET` hint
/// at it. A process started from inside some other unit (a shell, a CI runner) has the
/// unit's `SYSTEMD_EXEC_PID`, not its own, and must not be restarted through systemd.
fn started_by_systemd(
    exec_pid: Option<&str>,
    invocation_id: Option<&str>,
    notify_socket: Option<&str>,
    own_pid: u32,
) -> bool {
    let set = |v: Option<&str>| v.is_some_and(|v| !v.is_empty());
    match exec_pid {
        Some(pid) => pid.trim().parse::<u32>().ok() == Some(own_pid),
        None => set(invocation_id) || set(notify_socket),
    }
}

/// What `agent check` found and did.
#[derive(Debug)]
pub enum Verdict {
    /// The agent answered.
    Healthy { pid: u32, http: SocketAddr },
    /// It did not answer (`cause`); `action` is what was done about it, `back` the pid
    /// that answers now or why none does.
    Down {
        cause: String,
        action: String,
        back: Result<u32, String>,
    },
}

impl Verdict {
    /// 0 only when the agent answered at once: an agent that had to be brought back is
    /// worth a cron mail.
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Healthy { .. } => 0,
            Verdict::Down { .. } => 1,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Healthy { pid, http } => {
                write!(f, "the agent (pid {pid}) answers on http://{http}/health")
            }
            Verdict::Down {
                cause,
                action,
                back,
            } => {
                write!(f, "the agent did not answer ({cause}); {action}; ")?;
                match back {
                    Ok(pid) => write!(f, "it answers again (pid {pid})"),
                    Err(why) => write!(f, "{why}"),
                }
            }
        }
    }
}

/// Checks the agent of `data_dir` and starts it again if it does not answer.
pub async fn check(data_dir: &Path) -> Result<Verdict, CheckError> {
    let record = RunRecord::read(data_dir)?;
    let cause = match answers(&record).await {
        Ok(()) => {
            return Ok(Verdict::Healthy {
                pid: record.pid,
                http: record.http,
            });
        }
        Err(e) => e.to_string(),
    };
    let (action, mut child) = restart(&record, data_dir, &cause).await?;
    let back = wait_back(data_dir, child.as_mut()).await;
    Ok(Verdict::Down {
        cause,
        action,
        back,
    })
}

/// Whether the agent of `record` answers its `/health`, as itself (same pid).
async fn answers(record: &RunRecord) -> Result<(), HealthError> {
    let body = get_health(record.http, HEALTH_TIMEOUT).await?;
    match body["pid"].as_u64() {
        Some(pid) if pid != u64::from(record.pid) => Err(HealthError {
            addr: record.http,
            reason: format!("answered by pid {pid}, not the agent's pid {}", record.pid),
        }),
        _ => Ok(()),
    }
}

/// Starts the agent again: through systemd, or from its record. What was done, and the
/// spawned process if any.
async fn restart(
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
async fn wait_back(data_dir: &Path, mut child: Option<&mut Child>) -> Result<u32, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_port() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
    }

    fn record(http: SocketAddr, argv: &[&str]) -> RunRecord {
        RunRecord {
            pid: u32::MAX,
            http,
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: BTreeMap::new(),
            under_systemd: false,
            cwd: None,
            exe: None,
        }
    }

    /// A `/health` that answers `status` with `{"pid": pid}`.
    async fn health_server(status: u16, pid: u32) -> SocketAddr {
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route(
            "/health",
            get(move || async move {
                (
                    axum::http::StatusCode::from_u16(status).expect("status"),
                    axum::Json(serde_json::json!({ "pid": pid })),
                )
            }),
        );
        tokio::spawn(axum::serve(listener, app).into_future());
        addr
    }

    #[test]
    fn the_record_round_trips_and_only_its_owner_reads_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = RunRecord::current(closed_port());
        written.write(dir.path()).expect("write");
        assert_eq!(RunRecord::read(dir.path()).expect("read"), written);
        let mode = std::fs::metadata(dir.path().join(RUN_FILE))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn no_record_is_bad_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = check(dir.path()).await.expect_err("no record");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains(RUN_FILE), "{err}");
        std::fs::write(dir.path().join(RUN_FILE), "{").expect("write");
        let err = check(dir.path()).await.expect_err("bad record");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("not a valid run record"), "{err}");
    }

    #[test]
    fn systemd_is_recognised_only_for_its_own_main_process() {
        assert!(started_by_systemd(Some("42"), Some("abc"), None, 42));
        assert!(!started_by_systemd(
            Some("41"),
            Some("abc"),
            Some("/run/x"),
            42
        ));
        assert!(started_by_systemd(None, Some("abc"), None, 42));
        assert!(started_by_systemd(None, None, Some("@notify"), 42));
        assert!(!started_by_systemd(None, Some(""), None, 42));
        assert!(!started_by_systemd(None, None, None, 42));
    }

    #[tokio::test]
    async fn health_must_answer_2xx_as_the_recorded_pid() {
        let ok = health_server(200, 7).await;
        let mut r = record(ok, &["agent"]);
        r.pid = 7;
        answers(&r).await.expect("healthy");
        r.pid = 8;
        let err = answers(&r).await.expect_err("another pid").to_string();
        assert!(err.contains("answered by pid 7"), "{err}");
        let sick = health_server(503, 7).await;
        let err = get_health(sick, HEALTH_TIMEOUT)
            .await
            .expect_err("503")
            .to_string();
        assert!(err.contains("HTTP 503"), "{err}");
        let closed = closed_port();
        let err = get_health(closed, HEALTH_TIMEOUT)
            .await
            .expect_err("closed")
            .to_string();
        assert!(err.contains(&closed.to_string()), "{err}");
    }

    #[tokio::test]
    async fn a_silent_agent_is_started_again_from_its_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = record(
            closed_port(),
            &["/bin/sh", "-c", "echo \"node=$CORRAL_NODE\"; exit 3"],
        );
        r.env.insert("CORRAL_NODE".into(), "from-record".into());
        r.write(dir.path()).expect("write");
        let verdict = check(dir.path()).await.expect("check");
        assert_eq!(verdict.exit_code(), 1);
        let Verdict::Down { action, back, .. } = &verdict else {
            panic!("expected Down: {verdict}");
        };
        assert!(action.contains("started it again"), "{verdict}");
        let why = back.as_ref().expect_err("sh exits");
        assert!(why.contains("exited"), "{verdict}");
        let log = std::fs::read_to_string(dir.path().join(LOG_FILE)).expect("log");
        assert!(log.contains("node=from-record"), "{log}");
    }
}
