//! What an instance's runner remembers across agent restarts, in
//! `instances/APP.SERVER/state.json`: the process it started (to adopt it instead of
//! starting a second copy), the spec it runs, and the last restart request it acted on
//! (so a restart happens exactly once).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// 0 when no process runs.
    pub pid: u32,
    pub start_ticks: u64,
    pub started_at_ms: i64,
    /// The boot the pid belongs to.
    pub boot_id: String,
    /// Hash of the spec the process was started with.
    pub spec_hash: String,
    /// The restart counter last acted on.
    pub acted_counter: u64,
    pub restarts: u64,
    /// How the last process ended, to report after a restart of the agent.
    #[serde(default)]
    pub last_exit: String,
    /// The release the process runs.
    #[serde(default)]
    pub version: String,
    /// The spec the process was started with (protobuf, hex): the previous release to
    /// start again when a new one cannot be installed (see `fallback`).
    #[serde(default)]
    pub spec: String,
    /// Processes of the instance the OOM killer killed, since it was deployed.
    #[serde(default)]
    pub oom_kills: u64,
    /// The instance's ordinal: its cgroup is `.../APP.SERVER/ORDINAL`.
    #[serde(default)]
    pub ordinal: u32,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// The remembered state; None when there is none (or it cannot be read: then the
/// instance is treated as new, and the problem logged).
pub fn load(dir: &Path) -> Option<Memory> {
    let text = std::fs::read_to_string(path(dir)).ok()?;
    match serde_json::from_str(&text) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(path = %path(dir).display(), cause = %e, "ignoring a damaged instance state file");
            None
        }
    }
}

/// Writes by rename, so a crashed agent leaves the old or the new file, never half of
/// one. Not synced to disk: the file only matters to the next agent on this boot (a
/// machine that goes down takes the processes it names with it), and an fsync here would
/// sit on every restart's path.
pub fn store(dir: &Path, memory: &Memory) -> std::io::Result<()> {
    let text = serde_json::to_vec(memory).map_err(std::io::Error::other)?;
    let path = path(dir);
    let tmp = dir.join(".state.json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)
}

pub fn forget(dir: &Path) {
    let _ = std::fs::remove_file(path(dir));
}
