//! The cache writer: a download appended to its `.partial` cache file and hashed as it
//! arrives, on a blocking thread.

use std::io::{Read, Write};
use std::sync::Arc;

use tokio::sync::watch;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::Held;
use crate::package::unpack::Writeback;

/// Chunks queued between the download and the cache writer.
const WRITE_QUEUE: usize = 4;

/// Appends a download to its `.partial` cache file and hashes it, on a blocking thread,
/// so that disk writes, the final fsync and sha256 keep off the runtime's workers.
pub(super) struct CacheWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<std::io::Result<String>>,
}

impl CacheWriter {
    /// Hashes the first `offset` bytes already in `file`, then appends what it is
    /// given, holding `held` until it ends; `written` follows the file's length, for the
    /// peers this node relays the download to.
    pub(super) fn start(
        file: std::fs::File,
        offset: u64,
        held: Held,
        written: Arc<watch::Sender<u64>>,
    ) -> CacheWriter {
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
            let mut at = offset;
            while let Some(data) = rx.blocking_recv() {
                hasher.update(&data);
                out.write_all(&data)?;
                at += data.len() as u64;
                written.send_replace(at);
            }
            file.sync_all()?;
            Ok(hex::encode(hasher.finalize()))
        });
        CacheWriter { tx, task }
    }

    /// Queues `data`; false if the writer stopped on an error.
    pub(super) async fn write(&self, data: Bytes) -> bool {
        self.tx.send(data).await.is_ok()
    }

    /// Waits until everything queued is written and synced; the sha256 of the file.
    pub(super) async fn finish(self) -> std::io::Result<String> {
        drop(self.tx);
        self.task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::install::PathLocks;

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
        let progress = || Arc::new(watch::channel(0).0);
        let writer = CacheWriter::start(open(), 1_000_000, locks.lock(&path).await, progress());
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
        let writer = CacheWriter::start(open(), 40_000_000, locks.lock(&path).await, progress());
        let err = writer.finish().await.expect_err("shrank");
        assert!(err.to_string().contains("shrank"), "{err}");

        // A file it cannot write to: the write stops being taken and finish says why.
        let read_only = std::fs::File::open(&path).expect("open");
        let writer = CacheWriter::start(read_only, 0, locks.lock(&path).await, progress());
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
}
