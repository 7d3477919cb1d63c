//! Installing a release on this host:
//!
//! 1. download by streaming RPC into `DATA_DIR/cache/<sha256>.partial`, resuming from
//!    what is already there after an interruption, and verify the sha256 of the whole;
//!    rename to `cache/<sha256>` (skipped when that is already present);
//! 2. unpack, checking every entry, into `releases/<version>.partial/`; rename to
//!    `releases/<version>/` (with `releases/<version>.sha256` beside it) once the
//!    download is verified;
//! 3. [`switch`] the instance's `current` symlink by atomic rename.
//!
//! Steps 1 and 2 overlap: while the package downloads, each chunk goes to a cache
//! writer (file and sha256) and to an unpacker, each on a blocking thread of its own, so
//! the release is all but unpacked when the last chunk arrives. Nothing the unpacker
//! wrote is used before the sha256 of the whole download matches; on a mismatch it is
//! thrown away. A cached package (or a download whose stream could not be followed) is
//! unpacked from the cache file.
//!
//! One install at a time downloads a given package on this host, and one unpacks into a
//! given release directory ([`PathLocks`]): servers that ship the same bytes share the
//! cache file.
//!
//! An agent killed at any point leaves at most a `.partial` file or directory, which
//! the next attempt resumes or removes; `current` only ever points at a complete release.
//! The cache file is fsynced, and a release synced to disk (one `syncfs`), before they
//! are renamed into place, so a power cut does not leave a release marked ready with
//! files the disk never got. Both are written with
//! [`Writeback`](super::unpack::Writeback) hints, so the disk writes while the package
//! arrives and the syncs at the end have little left to wait for.
//!
//! * `download.rs` — the download into the cache, resumed and retried;
//! * `cache.rs` — the cache writer (append, hash, sync);
//! * `unpacker.rs` — unpacking as the bytes arrive, or from the cache file;
//! * `sources.rs` — where a download comes from (`Agent.Sources`): the registry or a peer,
//!   whose every chunk is checked against the registry's chunk hashes;
//! * `peers.rs` — serving packages to peers, from the cache or while still receiving;
//! * `locks.rs` — [`PathLocks`];
//! * `garbage.rs` — [`collect_garbage`]: old releases and unused cache files.

mod cache;
mod download;
mod garbage;
mod locks;
mod peers;
mod sources;
mod unpacker;

use corral_proto::v1::InstallState;
use std::path::{Path, PathBuf};

use corral_proto::v1::PackageRef;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::unpack::write_err;
use super::{Limits, PackageError};

pub use garbage::collect_garbage;
pub use locks::PathLocks;
pub use peers::{PeerCounters, PeerService, Relay};

use locks::Held;
use unpacker::{Unpacker, unpack_file};

/// Progress of an install, for status reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub version: String,
    pub state: InstallState,
    pub percent: u32,
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("package {version}: {source}")]
    Package {
        version: String,
        source: PackageError,
    },
    #[error("package {version}: sha256 mismatch: expected {expected}, got {got}")]
    Checksum {
        version: String,
        expected: String,
        got: String,
    },
    #[error("package {version}: download failed: {reason}")]
    Download { version: String, reason: String },
    #[error("package {version}: peer {peer}: {reason}")]
    Peer {
        version: String,
        peer: String,
        /// It sent bytes that do not match the registry's chunk hashes.
        corrupt: bool,
        reason: String,
    },
    #[error("package {version}: {path}: {source}")]
    Io {
        version: String,
        path: String,
        source: std::io::Error,
    },
}

/// What an install needs to know about this agent.
#[derive(Clone)]
pub struct Installer {
    pub data_dir: PathBuf,
    pub node: String,
    pub limits: Limits,
    pub keep_releases: usize,
    /// The channel of the registry session, when one is open.
    pub channel: watch::Receiver<Option<Channel>>,
    pub locks: PathLocks,
    pub peers: Peers,
}

/// This node's part in peer-assisted distribution.
#[derive(Clone, Default)]
pub struct Peers {
    /// The port this node serves packages to peers on; None: it serves none.
    pub port: Option<u16>,
    /// The downloads in progress, which the peer service relays.
    pub relay: Relay,
    pub counters: PeerCounters,
}

pub(super) fn io_err<'a>(
    version: &'a str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> InstallError + 'a {
    move |source| InstallError::Io {
        version: version.to_string(),
        path: path.display().to_string(),
        source,
    }
}

/// `releases/<version>` of an instance, if it holds exactly this package.
pub fn ready_release(instance_dir: &Path, pkg: &PackageRef) -> Option<PathBuf> {
    let dir = instance_dir.join("releases").join(&pkg.version);
    let sha = std::fs::read_to_string(sha_file(instance_dir, &pkg.version)).ok()?;
    (sha.trim() == pkg.sha256 && dir.is_dir()).then_some(dir)
}

pub(super) fn sha_file(instance_dir: &Path, version: &str) -> PathBuf {
    instance_dir
        .join("releases")
        .join(format!("{version}.sha256"))
}

impl Installer {
    /// Makes `releases/<version>` of the instance hold `pkg`; its path.
    pub async fn install(
        &self,
        app: &str,
        server: &str,
        instance_dir: &Path,
        pkg: &PackageRef,
        progress: &watch::Sender<Progress>,
    ) -> Result<PathBuf, InstallError> {
        let version = pkg.version.as_str();
        let releases = instance_dir.join("releases");
        let partial = releases.join(format!("{version}.partial"));
        let release_lock = self.locks.lock(&partial).await;
        if let Some(dir) = ready_release(instance_dir, pkg) {
            return Ok(dir);
        }
        let report = |state: InstallState, percent: u32| {
            progress.send_replace(Progress {
                version: pkg.version.clone(),
                state,
                percent,
                error: String::new(),
            });
        };
        report(InstallState::Downloading, 0);
        std::fs::create_dir_all(&releases).map_err(io_err(version, &releases))?;
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(io_err(version, &partial))?;
        }
        let mut unpacker = if self.is_cached(pkg) {
            Unpacker::Off
        } else {
            Unpacker::start(partial.clone(), self.limits, release_lock.clone())
        };
        let cached = match self
            .download(app, server, pkg, &report, &mut unpacker)
            .await
        {
            Ok(cached) => cached,
            Err(e) => {
                unpacker.abandon().await;
                let _ = std::fs::remove_dir_all(&partial);
                return Err(e);
            }
        };
        report(InstallState::Unpacking, 100);
        if unpacker.fed() != pkg.size {
            // The download did not go through it (another install had just cached the
            // package): unpack from the file.
            unpacker.abandon().await;
        }
        let unpacked = match unpacker.finish().await {
            Some(result) => result,
            None => {
                let (cached, partial, limits) = (cached.clone(), partial.clone(), self.limits);
                let held = release_lock.clone();
                tokio::task::spawn_blocking(move || {
                    let _held = held;
                    // Whatever an abandoned unpacker left goes first.
                    if partial.exists() {
                        std::fs::remove_dir_all(&partial).map_err(write_err(&partial))?;
                    }
                    unpack_file(&cached, &partial, limits)
                })
                .await
                .unwrap_or_else(|e| Err(PackageError::Corrupt(std::io::Error::other(e))))
            }
        };
        if let Err(source) = unpacked {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(InstallError::Package {
                version: pkg.version.clone(),
                source,
            });
        }
        let release = finish_release(instance_dir, version, &pkg.sha256)?;
        report(InstallState::Ready, 100);
        Ok(release)
    }

    pub(super) fn is_cached(&self, pkg: &PackageRef) -> bool {
        std::fs::metadata(self.data_dir.join("cache").join(&pkg.sha256))
            .is_ok_and(|m| m.len() == pkg.size)
    }
}

/// Makes the unpacked `releases/<version>.partial` the release `releases/<version>`.
fn finish_release(instance_dir: &Path, version: &str, sha: &str) -> Result<PathBuf, InstallError> {
    let releases = instance_dir.join("releases");
    let partial = releases.join(format!("{version}.partial"));
    let target = releases.join(version);
    if target.exists() {
        // Another package under the same version (removed and uploaded again).
        let old = releases.join(format!("{version}.old"));
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&target, &old).map_err(io_err(version, &target))?;
        let _ = std::fs::remove_dir_all(&old);
    }
    std::fs::rename(&partial, &target).map_err(io_err(version, &target))?;
    // The release is on disk before its `.sha256` says it is ready.
    std::fs::File::open(&releases)
        .and_then(|d| d.sync_all())
        .map_err(io_err(version, &releases))?;
    crate::datadir::write_atomic(&sha_file(instance_dir, version), sha.as_bytes())
        .map_err(|e| io_err(version, &target)(std::io::Error::other(e)))?;
    Ok(target)
}

/// Points the instance's `current` at `releases/<version>`, atomically.
pub fn switch(instance_dir: &Path, version: &str) -> std::io::Result<()> {
    let tmp = instance_dir.join("current.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(Path::new("releases").join(version), &tmp)?;
    std::fs::rename(&tmp, instance_dir.join("current"))
}
