//! The unpacker: a package's bytes unpacked as they arrive (or from the cache file), on
//! a blocking thread, with every entry checked.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::Held;
use crate::package::unpack::unpack;
use crate::package::{Limits, PackageError};

/// Chunks queued between the download and the unpacker (1 MiB each, as the registry
/// sends them): enough to keep both busy, little enough to keep memory flat.
const UNPACK_QUEUE: usize = 4;

/// Feeds the unpacker the bytes of `file` before `end` that it has not seen.
pub(super) async fn feed_from_file(
    unpacker: &mut Unpacker,
    file: &Path,
    end: u64,
) -> std::io::Result<()> {
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
pub(super) enum Unpacker {
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
    pub(super) fn start(dest: PathBuf, limits: Limits, held: Held) -> Unpacker {
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
    pub(super) fn fed(&self) -> u64 {
        match self {
            Unpacker::Streaming { fed, .. } => *fed,
            Unpacker::Off => 0,
        }
    }

    /// The next bytes of the package. When the unpacker has stopped (a refused entry,
    /// or the end of the archive), the rest is not needed: it is dropped.
    pub(super) async fn feed(&mut self, data: Bytes) {
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
    pub(super) async fn abandon(&mut self) {
        if let Unpacker::Streaming { tx, task, .. } = std::mem::replace(self, Unpacker::Off) {
            drop(tx);
            let _ = task.await;
        }
    }

    /// The end of the download: what the unpacking came to, or None if it was not
    /// following the download.
    pub(super) async fn finish(self) -> Option<Result<u64, PackageError>> {
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
pub(super) fn unpack_file(cached: &Path, dest: &Path, limits: Limits) -> Result<u64, PackageError> {
    let file = std::fs::File::open(cached).map_err(PackageError::Corrupt)?;
    unpack(
        std::io::BufReader::with_capacity(1 << 20, file),
        dest,
        limits,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::install::PathLocks;

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
