//! Whether the database can be used right now, asked by `/health` and by the registry's
//! outage watch ([`crate::outage`]).
//!
//! For SQLite, the file at the configured path must still be the one the store opened
//! (same device and inode) and be writable: an SQLite connection writes on happily to a
//! file that was deleted, and on into a file nobody will ever read again. For both
//! backends a query must be answered in time. The pool alone cannot say why it does not
//! answer (it retries a refused connection until its own timeout), so when it is slow a
//! connection of the check's own names the cause.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::AccessFlags;
use sqlx::Connection;

use super::{Store, StoreError};

/// The SQLite file a store opened, by path and identity.
#[derive(Debug)]
pub(crate) struct DbFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl DbFile {
    /// The file now at `path` (right after the store opened it).
    pub(crate) fn at(path: &str) -> Result<DbFile, StoreError> {
        let meta = std::fs::metadata(path).map_err(|source| StoreError::File {
            path: path.to_string(),
            source,
        })?;
        Ok(DbFile {
            path: PathBuf::from(path),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    /// Whether the file at the path is still the one opened.
    pub(crate) fn same(&self) -> Result<(), StoreError> {
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == (self.dev, self.ino) => Ok(()),
            Ok(_) => Err(StoreError::FileReplaced { path: self.shown() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::FileGone { path: self.shown() })
            }
            Err(source) => Err(StoreError::File {
                path: self.shown(),
                source,
            }),
        }
    }

    /// Whether this process may write the file (an immutable file or a read-only mount
    /// says no even to root).
    pub(crate) fn writable(&self) -> Result<(), StoreError> {
        writable(&self.path).map_err(|source| StoreError::NotWritable {
            path: self.shown(),
            source,
        })
    }
}

fn writable(path: &Path) -> Result<(), std::io::Error> {
    nix::unistd::access(path, AccessFlags::W_OK).map_err(std::io::Error::from)
}

impl Store {
    /// Checks that the database can be used now, within `within`: the error names what
    /// is wrong.
    pub async fn check(&self, within: Duration) -> Result<(), StoreError> {
        if let Some(file) = &self.file {
            file.same()?;
            file.writable()?;
        }
        let started = Instant::now();
        if let Ok(answered) = tokio::time::timeout(within / 2, self.ping()).await {
            return answered;
        }
        // The pool is slow: busy, or retrying a refused connection without saying so.
        let rest = within.saturating_sub(started.elapsed());
        let direct = async {
            let mut conn = sqlx::AnyConnection::connect(self.connect_url.expose()).await?;
            sqlx::query("SELECT 1").execute(&mut conn).await?;
            conn.close().await
        };
        match tokio::time::timeout(rest, direct).await {
            // The database answers; the pool was only busy.
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(StoreError::Unreachable { source }),
            Err(_) => Err(StoreError::NoAnswer { within }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_deleted_or_replaced_is_noticed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
        std::fs::write(&path, "x").expect("write");
        let file = DbFile::at(path.to_str().expect("utf8")).expect("stat");
        file.same().expect("same file");
        file.writable().expect("writable");

        let aside = dir.path().join("aside.db");
        std::fs::rename(&path, &aside).expect("move away");
        let err = file.same().expect_err("gone");
        assert!(matches!(err, StoreError::FileGone { .. }), "{err}");
        assert!(err.to_string().contains("r.db"), "{err}");

        std::fs::write(&path, "another").expect("write another");
        let err = file.same().expect_err("replaced");
        assert!(matches!(err, StoreError::FileReplaced { .. }), "{err}");

        // Moved back: the same file again.
        std::fs::rename(&aside, &path).expect("move back");
        file.same().expect("back");
    }
}
