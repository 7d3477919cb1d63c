//! The agent's data dir: created on start, locked so that two agents never manage the
//! same services, with the agent's pid in `agent.pid`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data dir {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data dir {path} is in use by another agent (pid {pid}); each agent needs its own --data-dir"
    )]
    Locked { path: PathBuf, pid: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An open, locked data dir. The lock is held until this is dropped.
pub struct DataDir {
    pid_path: PathBuf,
    _lock: Flock<File>,
}

impl DataDir {
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        std::fs::create_dir_all(path).map_err(|source| DataDirError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let lock_path = path.join("agent.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| DataDirError::Write {
                path: lock_path.clone(),
                source,
            })?;
        let pid_path = path.join("agent.pid");
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            DataDirError::Locked {
                path: path.to_path_buf(),
                pid: std::fs::read_to_string(&pid_path)
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "unknown".into()),
            }
        })?;
        write_atomic(&pid_path, format!("{}\n", std::process::id()).as_bytes())?;
        Ok(DataDir {
            pid_path,
            _lock: lock,
        })
    }

    /// Removes the pid file (if it is still ours) and releases the lock.
    pub fn release(self) {
        let ours = std::fs::read_to_string(&self.pid_path)
            .is_ok_and(|s| s.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.pid_path);
        }
    }
}

/// Writes a file by writing a temporary beside it and renaming it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let err = |source| DataDirError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = File::create(&tmp).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Writes `bytes` to `path` by rename with these permission bits (whatever the umask)
/// and, when given, this owner (uid, gid): the file never exists with other bits or
/// another owner, not even as the temporary file.
pub fn write_private(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), DataDirError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |source| DataDirError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    // A temporary file left by a crash keeps its bits: start from none.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(err)?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_agent_is_refused_the_same_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDir::open(dir.path()).expect("first");
        let pid = std::fs::read_to_string(dir.path().join("agent.pid")).expect("pid");
        assert_eq!(pid.trim(), std::process::id().to_string());
        let err = DataDir::open(dir.path())
            .err()
            .expect("second must fail")
            .to_string();
        assert!(err.contains("in use by another agent"), "{err}");
        first.release();
        assert!(!dir.path().join("agent.pid").exists());
        DataDir::open(dir.path()).expect("free again");
    }
}
