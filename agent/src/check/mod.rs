//! `agent check`, for cron or a systemd timer: is the local agent answering on its
//! `/health`? If not, start it again, the way it was started.
//!
//! `agent run` records how it was started in `DATA_DIR/agent.run.json` ([`RunRecord`]):
//! its pid, the HTTP address it actually bound (port 0 resolved), its command line, its
//! `CORRAL_*` environment and whether systemd started it. `agent check` reads that
//! record. An agent that systemd started is restarted with `systemctl restart`, never by
//! a second copy beside the unit; any other is spawned again from the record, detached,
//! with its output appended to `DATA_DIR/agent.log`.
//!
//! * `record.rs` — the run record;
//! * `restart.rs` — starting an agent that does not answer again, and waiting for it;
//! * the GET of `/health` is `corral_common::health` (the registry's `dev` waits on it too).

mod record;
mod restart;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use corral_common::health::{HEALTH_TIMEOUT, HealthError, get_health, wait_healthy};
pub use record::RunRecord;

/// The run record's file name in the data dir.
pub const RUN_FILE: &str = "agent.run.json";
/// Where a respawned agent's stdout and stderr go, in the data dir.
pub const LOG_FILE: &str = "agent.log";
/// How long a restarted agent has to answer.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(10);
/// The unit `scripts/systemd/corral-agent.service` installs.
pub const SYSTEMD_UNIT: &str = "corral-agent";
/// How often `agent check` looks again: at a process it stopped, at an agent to answer.
const POLL: Duration = Duration::from_millis(100);

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
    let (action, mut child) = restart::restart(&record, data_dir, &cause).await?;
    let back = restart::wait_back(data_dir, child.as_mut()).await;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

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
