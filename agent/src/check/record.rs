//! The run record: how a running agent was started (`DATA_DIR/agent.run.json`), written
//! by `agent run` once its data dir is its own, read by `agent check`.

use std::collections::BTreeMap;
use std::fs::Permissions;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{CheckError, RUN_FILE};
use crate::datadir::{DataDirError, write_atomic};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
