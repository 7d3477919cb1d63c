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
//! files the disk never got. Both are written with [`Writeback`] hints, so the disk
//! writes while the package arrives and the syncs at the end have little left to wait
//! for.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use corral_proto::v1::agent_client::AgentClient;
use corral_proto::v1::{DownloadRequest, PackageRef};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tonic::transport::Channel;

use super::unpack::{Writeback, unpack, write_err};
use super::{Limits, PackageError};

/// Chunks queued between the download and the unpacker (1 MiB each, as the registry
/// sends them): enough to keep both busy, little enough to keep memory flat.
const UNPACK_QUEUE: usize = 4;

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

/// Locks on the paths installs write to: one download per package on this host (two
/// servers may ship the same bytes), one unpack per release directory. A lock is held
/// until the last thread writing under it has ended, even when the install that took it
/// was cancelled.
#[derive(Clone, Default)]
pub struct PathLocks(Arc<std::sync::Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>);

/// A held lock, shared by the install and the threads it writes with.
type Held = Arc<tokio::sync::OwnedMutexGuard<()>>;

impl PathLocks {
    async fn lock(&self, path: &Path) -> Held {
        let mutex = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            // Locks nobody holds or waits for are dropped.
            map.retain(|_, m| Arc::strong_count(m) > 1);
            map.entry(path.to_path_buf()).or_default().clone()
        };
        Arc::new(mutex.lock_owned().await)
    }

    #[cfg(test)]
    fn is_locked(&self, path: &Path) -> bool {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(path).is_some_and(|m| m.try_lock().is_err())
    }
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
        let version = pkg.version.as_str();
        let releases = instance_dir.join("releases");
        let partial = releases.join(format!("{version}.partial"));
        let release_lock = self.locks.lock(&partial).await;
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
        report("unpacking", 100);
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
        report("ready", 100);
        Ok(release)
    }

    fn is_cached(&self, pkg: &PackageRef) -> bool {
        std::fs::metadata(self.data_dir.join("cache").join(&pkg.sha256))
            .is_ok_and(|m| m.len() == pkg.size)
    }

    /// Downloads into the cache, resuming a partial file; returns the verified file.
    async fn download(
        &self,
        app: &str,
        server: &str,
        pkg: &PackageRef,
        report: &impl Fn(&str, u32),
        unpacker: &mut Unpacker,
    ) -> Result<PathBuf, InstallError> {
        let cache = self.data_dir.join("cache");
        std::fs::create_dir_all(&cache).map_err(io_err(&pkg.version, &cache))?;
        let done = cache.join(&pkg.sha256);
        // Another install of the same package may be downloading it: wait for it.
        let cache_lock = self.locks.lock(&done).await;
        if self.is_cached(pkg) {
            return Ok(done);
        }
        let partial = cache.join(format!("{}.partial", pkg.sha256));
        let mut attempts = 0;
        loop {
            match self
                .fetch(app, server, pkg, &partial, report, unpacker, &cache_lock)
                .await
            {
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
    #[allow(clippy::too_many_arguments)]
    async fn fetch(
        &self,
        app: &str,
        server: &str,
        pkg: &PackageRef,
        partial: &Path,
        report: &impl Fn(&str, u32),
        unpacker: &mut Unpacker,
        cache_lock: &Held,
    ) -> Result<(), InstallError> {
        let version = pkg.version.as_str();
        let file = std::fs::OpenOptions::new()
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
        if unpacker.fed() > offset {
            // It has seen bytes the file no longer holds: unpack from the file instead.
            unpacker.abandon().await;
        }
        // The unpacker gets what it has not seen of the file (all of it, after a restart
        // of the agent), while the writer hashes the file from its start.
        let writer = CacheWriter::start(file, offset, cache_lock.clone());
        let resumed = feed_from_file(unpacker, partial, offset).await;
        let streamed = match resumed {
            Ok(()) => {
                self.stream(app, server, pkg, offset, report, unpacker, &writer)
                    .await
            }
            Err(e) => Err(io_err(version, partial)(e)),
        };
        // Whatever happened, the file is complete and synced before anyone opens it again.
        // A writer's error comes first: it is why a stream was cut short.
        let got = writer.finish().await.map_err(io_err(version, partial))?;
        streamed?;
        if got != pkg.sha256 {
            return Err(InstallError::Checksum {
                version: version.to_string(),
                expected: pkg.sha256.clone(),
                got,
            });
        }
        Ok(())
    }

    /// Streams the package from `offset` to its end into the cache writer and the
    /// unpacker.
    #[allow(clippy::too_many_arguments)]
    async fn stream(
        &self,
        app: &str,
        server: &str,
        pkg: &PackageRef,
        offset: u64,
        report: &impl Fn(&str, u32),
        unpacker: &mut Unpacker,
        writer: &CacheWriter,
    ) -> Result<(), InstallError> {
        let version = pkg.version.as_str();
        let failed = |reason: String| InstallError::Download {
            version: version.to_string(),
            reason,
        };
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
            if !writer.write(chunk.data.clone()).await {
                // Finishing the writer returns the error it stopped on.
                return Err(failed("the cache writer stopped".into()));
            }
            unpacker.feed(chunk.data).await;
            // Progress in steps of 5 %: each report is a status message the registry
            // writes to its database.
            let percent = (received * 100 / pkg.size.max(1)) as u32 / 5 * 5;
            if percent != last_percent {
                last_percent = percent;
                report("downloading", percent);
            }
        }
        if received != pkg.size {
            return Err(failed(format!("got {received} of {} bytes", pkg.size)));
        }
        Ok(())
    }
}

/// Chunks queued between the download and the cache writer.
const WRITE_QUEUE: usize = 4;

/// Appends a download to its `.partial` cache file and hashes it, on a blocking thread,
/// so that disk writes, the final fsync and sha256 keep off the runtime's workers.
struct CacheWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<std::io::Result<String>>,
}

impl CacheWriter {
    /// Hashes the first `offset` bytes already in `file`, then appends what it is
    /// given, holding `held` until it ends.
    fn start(file: std::fs::File, offset: u64, held: Held) -> CacheWriter {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let _held = held;
            let mut hasher = Sha256::new();
            let existing = std::io::copy(&mut (&file).take(offset), &mut hasher)?;
            if existing != offset {
                return Err(std::io::Error::other(format!(
                    "the file shrank to {existing} bytes while it was read"
                )));
            }
            let mut out = Writeback::new(&file, offset);
            while let Some(data) = rx.blocking_recv() {
                hasher.update(&data);
                out.write_all(&data)?;
            }
            file.sync_all()?;
            Ok(hex::encode(hasher.finalize()))
        });
        CacheWriter { tx, task }
    }

    /// Queues `data`; false if the writer stopped on an error.
    async fn write(&self, data: Bytes) -> bool {
        self.tx.send(data).await.is_ok()
    }

    /// Waits until everything queued is written and synced; the sha256 of the file.
    async fn finish(self) -> std::io::Result<String> {
        drop(self.tx);
        self.task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Feeds the unpacker the bytes of `file` before `end` that it has not seen.
async fn feed_from_file(unpacker: &mut Unpacker, file: &Path, end: u64) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut at = unpacker.fed();
    if at >= end || matches!(unpacker, Unpacker::Off) {
        return Ok(());
    }
    let mut f = tokio::fs::File::open(file).await?;
    f.seek(std::io::SeekFrom::Start(at)).await?;
    while at < end {
        let want = usize::try_from(end - at).unwrap_or(usize::MAX).min(1 << 20);
        let mut buf = bytes::BytesMut::zeroed(want);
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.truncate(n);
        unpacker.feed(buf.freeze()).await;
        at += n as u64;
    }
    Ok(())
}

/// Unpacks a package's bytes as they arrive: fed the whole package in order, from its
/// first byte, it unpacks into the `.partial` directory on a blocking thread.
enum Unpacker {
    Streaming {
        tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
        fed: u64,
        task: tokio::task::JoinHandle<Result<u64, PackageError>>,
    },
    /// Not following the download: the release is unpacked from the cache file.
    Off,
}

impl Unpacker {
    /// Unpacks into `dest`, holding `held` until it ends.
    fn start(dest: PathBuf, limits: Limits, held: Held) -> Unpacker {
        let (tx, rx) = tokio::sync::mpsc::channel(UNPACK_QUEUE);
        let reader = ChannelReader {
            rx,
            buf: Bytes::new(),
            pos: 0,
        };
        let task = tokio::task::spawn_blocking(move || {
            let _held = held;
            unpack(reader, &dest, limits)
        });
        Unpacker::Streaming {
            tx: Some(tx),
            fed: 0,
            task,
        }
    }

    /// How many bytes of the package it has been given.
    fn fed(&self) -> u64 {
        match self {
            Unpacker::Streaming { fed, .. } => *fed,
            Unpacker::Off => 0,
        }
    }

    /// The next bytes of the package. When the unpacker has stopped (a refused entry,
    /// or the end of the archive), the rest is not needed: it is dropped.
    async fn feed(&mut self, data: Bytes) {
        if let Unpacker::Streaming { tx, fed, .. } = self {
            *fed += data.len() as u64;
            if let Some(sender) = tx
                && sender.send(data).await.is_err()
            {
                *tx = None;
            }
        }
    }

    /// Stops following the download; whatever it unpacked is left for the caller to
    /// remove or redo.
    async fn abandon(&mut self) {
        if let Unpacker::Streaming { tx, task, .. } = std::mem::replace(self, Unpacker::Off) {
            drop(tx);
            let _ = task.await;
        }
    }

    /// The end of the download: what the unpacking came to, or None if it was not
    /// following the download.
    async fn finish(self) -> Option<Result<u64, PackageError>> {
        let Unpacker::Streaming { tx, task, .. } = self else {
            return None;
        };
        drop(tx);
        Some(
            task.await
                .unwrap_or_else(|e| Err(PackageError::Corrupt(std::io::Error::other(e)))),
        )
    }
}

/// The package's bytes, as the download hands them over; the end when it stops.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    buf: Bytes,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let have = self.fill_buf()?;
            let n = out.len().min(have.len());
            out[..n].copy_from_slice(&have[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

/// The gunzip reads the chunks in place: no copy into a buffer of its own.
impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(next) => {
                    self.buf = next;
                    self.pos = 0;
                }
                None => break,
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }
}

/// Unpacks a cached package into `dest`.
fn unpack_file(cached: &Path, dest: &Path, limits: Limits) -> Result<u64, PackageError> {
    let file = std::fs::File::open(cached).map_err(PackageError::Corrupt)?;
    unpack(
        std::io::BufReader::with_capacity(1 << 20, file),
        dest,
        limits,
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A .tar.gz holding `data.bin` with `data`.
    fn package(data: &[u8]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "data.bin", data).expect("append");
        b.into_inner().expect("tar").finish().expect("gz")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_unpacker_follows_a_download_piece_by_piece() {
        let data: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        let pkg = package(&data);
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("1.0.0.partial");
        let locks = PathLocks::default();
        let mut u = Unpacker::start(dest.clone(), Limits::default(), locks.lock(&dest).await);
        assert!(
            locks.is_locked(&dest),
            "the unpacker holds its directory's lock"
        );
        for piece in pkg.chunks(100_000) {
            u.feed(Bytes::copy_from_slice(piece)).await;
        }
        assert_eq!(u.fed(), pkg.len() as u64);
        assert_eq!(u.finish().await.expect("following").expect("unpacks"), 1);
        assert!(!locks.is_locked(&dest), "released when it ends");
        assert_eq!(std::fs::read(dest.join("data.bin")).expect("data"), data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cache_writer_hashes_what_was_there_and_appends_the_rest() {
        // Past the writeback step twice, so the writes between hints are checked too.
        let data: Vec<u8> = (0..20_000_000).map(|i| (i % 253) as u8).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pkg.partial");
        std::fs::write(&path, &data[..1_000_000]).expect("write");
        let open = || {
            std::fs::OpenOptions::new()
                .append(true)
                .read(true)
                .open(&path)
                .expect("open")
        };
        let locks = PathLocks::default();
        let writer = CacheWriter::start(open(), 1_000_000, locks.lock(&path).await);
        assert!(locks.is_locked(&path), "the writer holds the file's lock");
        for piece in data[1_000_000..].chunks(700_000) {
            assert!(writer.write(Bytes::copy_from_slice(piece)).await);
        }
        let got = writer.finish().await.expect("written");
        assert!(!locks.is_locked(&path), "released when it ends");
        assert_eq!(got, hex::encode(Sha256::digest(&data)));
        assert_eq!(std::fs::read(&path).expect("read"), data);

        // A file shorter than the offset it was started with is an error, not a hash
        // of the wrong bytes.
        let writer = CacheWriter::start(open(), 40_000_000, locks.lock(&path).await);
        let err = writer.finish().await.expect_err("shrank");
        assert!(err.to_string().contains("shrank"), "{err}");

        // A file it cannot write to: the write stops being taken and finish says why.
        let read_only = std::fs::File::open(&path).expect("open");
        let writer = CacheWriter::start(read_only, 0, locks.lock(&path).await);
        let mut refused = false;
        for _ in 0..100 {
            if !writer.write(Bytes::from_static(b"more")).await {
                refused = true;
                break;
            }
        }
        assert!(refused, "the writer stopped taking chunks");
        assert!(writer.finish().await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cut_download_or_a_refused_entry_is_an_error_and_abandon_stops_it() {
        let pkg = package(&vec![7u8; 1 << 20]);
        let dir = tempfile::tempdir().expect("tempdir");

        let locks = PathLocks::default();
        let mut cut = Unpacker::start(
            dir.path().join("cut"),
            Limits::default(),
            locks.lock(&dir.path().join("cut")).await,
        );
        cut.feed(Bytes::copy_from_slice(&pkg[..pkg.len() / 2]))
            .await;
        let err = cut.finish().await.expect("following").expect_err("cut");
        assert!(matches!(err, PackageError::Corrupt(_)), "{err}");

        // Too big: the unpacker stops early; the rest of the download is still counted
        // (it is hashed and cached) but not copied to it.
        let limits = Limits {
            max_unpacked_bytes: 1000,
            max_entries: 10,
        };
        let mut big = Unpacker::start(
            dir.path().join("big"),
            limits,
            locks.lock(&dir.path().join("big")).await,
        );
        for piece in pkg.chunks(4096) {
            big.feed(Bytes::copy_from_slice(piece)).await;
        }
        assert_eq!(big.fed(), pkg.len() as u64);
        let err = big.finish().await.expect("following").expect_err("too big");
        assert!(matches!(err, PackageError::TooBig { .. }), "{err}");

        let mut gone = Unpacker::start(
            dir.path().join("gone"),
            Limits::default(),
            locks.lock(&dir.path().join("gone")).await,
        );
        gone.feed(Bytes::copy_from_slice(&pkg[..1000])).await;
        gone.abandon().await;
        assert_eq!(gone.fed(), 0);
        assert!(gone.finish().await.is_none(), "no longer following");
    }
}
