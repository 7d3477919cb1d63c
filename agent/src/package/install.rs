//! Installing a release on this host:
//!
//! 1. download by streaming RPC into `DATA_DIR/cache/<sha256>.partial`, resuming from
//!    what is already there after an interruption, and verify the sha256 of the whole;
//!    rename to `cache/<sha256>` (skipped when that is already present);
//! 2. unpack, checking every entry, into `releases/<version>.partial/`; rename to
//!    `releases/<version>/` (with `releases/<version>.sha256` beside it);
//! 3. [`switch`] the instance's `current` symlink by atomic rename.
//!
//! An agent killed at any point leaves at most a `.partial` file or directory, which
//! the next attempt resumes or removes; `current` only ever points at a complete release.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_proto::v1::agent_client::AgentClient;
use corral_proto::v1::{DownloadRequest, PackageRef};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tonic::transport::Channel;

use super::{Limits, PackageError, unpack::unpack};

/// Progress of an install, for status reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub version: String,
    /// "downloading", "unpacking", "ready" or "failed".
    pub state: String,
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
}

fn io_err<'a>(
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

fn sha_file(instance_dir: &Path, version: &str) -> PathBuf {
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
        if let Some(dir) = ready_release(instance_dir, pkg) {
            return Ok(dir);
        }
        let report = |state: &str, percent: u32| {
            progress.send_replace(Progress {
                version: pkg.version.clone(),
                state: state.into(),
                percent,
                error: String::new(),
            });
        };
        report("downloading", 0);
        let cached = self.download(app, server, pkg, &report).await?;
        report("unpacking", 100);
        let (dir, version, limits, sha) = (
            instance_dir.to_path_buf(),
            pkg.version.clone(),
            self.limits,
            pkg.sha256.clone(),
        );
        let release = tokio::task::spawn_blocking(move || {
            unpack_release(&cached, &dir, &version, &sha, limits)
        })
        .await
        .map_err(|e| InstallError::Download {
            version: pkg.version.clone(),
            reason: e.to_string(),
        })??;
        report("ready", 100);
        Ok(release)
    }

    /// Downloads into the cache, resuming a partial file; returns the verified file.
    async fn download(
        &self,
        app: &str,
        server: &str,
        pkg: &PackageRef,
        report: &impl Fn(&str, u32),
    ) -> Result<PathBuf, InstallError> {
        let cache = self.data_dir.join("cache");
        std::fs::create_dir_all(&cache).map_err(io_err(&pkg.version, &cache))?;
        let done = cache.join(&pkg.sha256);
        if std::fs::metadata(&done).is_ok_and(|m| m.len() == pkg.size) {
            return Ok(done);
        }
        let partial = cache.join(format!("{}.partial", pkg.sha256));
        let mut attempts = 0;
        loop {
            match self.fetch(app, server, pkg, &partial, report).await {
                Ok(()) => break,
                Err(e @ InstallError::Checksum { .. }) => {
                    let _ = std::fs::remove_file(&partial);
                    return Err(e);
                }
                Err(e) => {
                    attempts += 1;
                    if attempts >= 20 {
                        return Err(e);
                    }
                    tracing::warn!(version = %pkg.version, cause = %e, "download interrupted; resuming");
                    tokio::time::sleep(Duration::from_millis(200 * attempts.min(10))).await;
                }
            }
        }
        std::fs::rename(&partial, &done).map_err(io_err(&pkg.version, &done))?;
        Ok(done)
    }

    /// One download attempt, from wherever the partial file ends.
    async fn fetch(
        &self,
        app: &str,
        server: &str,
        pkg: &PackageRef,
        partial: &Path,
        report: &impl Fn(&str, u32),
    ) -> Result<(), InstallError> {
        let version = pkg.version.as_str();
        let failed = |reason: String| InstallError::Download {
            version: version.to_string(),
            reason,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(partial)
            .map_err(io_err(version, partial))?;
        let mut offset = file.metadata().map_err(io_err(version, partial))?.len();
        if offset > pkg.size {
            file.set_len(0).map_err(io_err(version, partial))?;
            offset = 0;
        }
        // The hash covers the whole file: what an earlier attempt wrote, then the rest.
        let mut hasher = Sha256::new();
        let mut existing = std::fs::File::open(partial).map_err(io_err(version, partial))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut hashed = 0;
        while hashed < offset {
            let n = existing.read(&mut buf).map_err(io_err(version, partial))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            hashed += n as u64;
        }
        drop(buf);
        if offset > 0 {
            tracing::info!(version, offset, "resuming a download");
        }
        let channel = self
            .channel
            .borrow()
            .clone()
            .ok_or_else(|| failed("no registry session".into()))?;
        let identity = crate::identity::load(&self.data_dir)
            .ok()
            .flatten()
            .map(|i| i.secret)
            .unwrap_or_default();
        let request = DownloadRequest {
            node: self.node.clone(),
            identity,
            app: app.to_string(),
            server: server.to_string(),
            version: version.to_string(),
            offset,
        };
        let mut client = AgentClient::new(channel).max_decoding_message_size(8 << 20);
        let mut stream = client
            .download(request)
            .await
            .map_err(|s| failed(s.message().to_string()))?
            .into_inner();
        let mut received = offset;
        let mut last_percent = u32::MAX;
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| failed(s.message().to_string()))?
        {
            received += chunk.data.len() as u64;
            if received > pkg.size {
                return Err(failed(format!(
                    "the registry sent more than the {} bytes announced",
                    pkg.size
                )));
            }
            hasher.update(&chunk.data);
            file.write_all(&chunk.data)
                .map_err(io_err(version, partial))?;
            // Progress in steps of 5 %: each report is a status message the registry
            // writes to its database.
            let percent = (received * 100 / pkg.size.max(1)) as u32 / 5 * 5;
            if percent != last_percent {
                last_percent = percent;
                report("downloading", percent);
            }
        }
        file.sync_all().map_err(io_err(version, partial))?;
        if received != pkg.size {
            return Err(failed(format!("got {received} of {} bytes", pkg.size)));
        }
        let got = hex::encode(hasher.finalize());
        if got != pkg.sha256 {
            return Err(InstallError::Checksum {
                version: version.to_string(),
                expected: pkg.sha256.clone(),
                got,
            });
        }
        Ok(())
    }
}

/// Unpacks a cached package into `releases/<version>` by way of a `.partial` directory.
fn unpack_release(
    cached: &Path,
    instance_dir: &Path,
    version: &str,
    sha: &str,
    limits: Limits,
) -> Result<PathBuf, InstallError> {
    let releases = instance_dir.join("releases");
    let partial = releases.join(format!("{version}.partial"));
    let target = releases.join(version);
    std::fs::create_dir_all(&releases).map_err(io_err(version, &releases))?;
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io_err(version, &partial))?;
    }
    let file = std::fs::File::open(cached).map_err(io_err(version, cached))?;
    if let Err(source) = unpack(std::io::BufReader::new(file), &partial, limits) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(InstallError::Package {
            version: version.to_string(),
            source,
        });
    }
    if target.exists() {
        // Another package under the same version (removed and uploaded again).
        let old = releases.join(format!("{version}.old"));
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&target, &old).map_err(io_err(version, &target))?;
        let _ = std::fs::remove_dir_all(&old);
    }
    std::fs::rename(&partial, &target).map_err(io_err(version, &target))?;
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

/// Keeps the newest `keep` releases of an instance (and any in `protect`); removes the
/// rest, and cache files no release on this host was unpacked from.
pub fn collect_garbage(data_dir: &Path, instance_dir: &Path, keep: usize, protect: &[&str]) {
    let releases = instance_dir.join("releases");
    let Ok(entries) = std::fs::read_dir(&releases) else {
        return;
    };
    let mut versions: Vec<(std::time::SystemTime, String)> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            (!name.ends_with(".partial") && !name.ends_with(".old"))
                .then_some((e.metadata().ok()?.modified().ok()?, name))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    for (_, version) in versions.iter().skip(keep) {
        if protect.contains(&version.as_str()) {
            continue;
        }
        let _ = std::fs::remove_dir_all(releases.join(version));
        let _ = std::fs::remove_file(sha_file(instance_dir, version));
    }
    // Cache files still referenced by a release of any instance stay.
    let mut referenced = std::collections::HashSet::new();
    if let Ok(instances) = std::fs::read_dir(data_dir.join("instances")) {
        for inst in instances.flatten() {
            if let Ok(files) = std::fs::read_dir(inst.path().join("releases")) {
                for f in files
                    .flatten()
                    .filter(|f| f.file_name().to_string_lossy().ends_with(".sha256"))
                {
                    if let Ok(sha) = std::fs::read_to_string(f.path()) {
                        referenced.insert(sha.trim().to_string());
                    }
                }
            }
        }
    }
    // Young files may be about to be unpacked by another instance's install.
    let old_enough = |f: &std::fs::DirEntry| {
        f.metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(600))
    };
    if let Ok(cache) = std::fs::read_dir(data_dir.join("cache")) {
        for f in cache.flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            if !name.ends_with(".partial") && !referenced.contains(&name) && old_enough(&f) {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}
