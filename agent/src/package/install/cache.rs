//! The cache writer: a download appended to its `.partial` cache file and checked as it
//! arrives, on a blocking thread: against the registry's sha256 of each chunk when it gave
//! them, else against the sha256 of the whole.

use std::io::{Read, Write};
use std::sync::Arc;

use tokio::sync::watch;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::Held;
use crate::package::unpack::Writeback;

/// Chunks queued between the download and the cache writer.
const WRITE_QUEUE: usize = 4;

/// The registry's sha256 of each chunk of a package (`Agent.Sources`), concatenated.
/// The registry computed them from the bytes whose sha256 is the package's (at upload,
/// or checked against it when it read them back), so a file whose every chunk matches is
/// the package: checking the chunks is checking the whole, in one pass over the bytes,
/// and the chunks a peer sent (checked on arrival) are not hashed again.
#[derive(Clone, Debug)]
pub(super) struct Chunks {
    pub(super) size: u64,
    pub(super) chunk: u64,
    pub(super) sha256: Arc<[u8]>,
}

impl Chunks {
    /// The registry's sha256 of chunk `seq`.
    pub(super) fn expected(&self, seq: u64) -> Option<&[u8]> {
        let at = usize::try_from(seq).ok()?.checked_mul(32)?;
        self.sha256.get(at..at.checked_add(32)?)
    }

    /// Chunk `seq` of the package: where it starts and how long it is.
    fn span(&self, seq: u64) -> (u64, u64) {
        let start = seq.saturating_mul(self.chunk);
        (start, self.chunk.min(self.size.saturating_sub(start)))
    }
}

/// What the cache writer checks the file by.
pub(super) enum Check {
    /// The sha256 of the whole file: the package's sha256 is what it must come to.
    Whole(Sha256),
    /// Each chunk's sha256 against the registry's.
    Chunks {
        chunks: Chunks,
        /// The chunk being hashed and where its hashing stands (bytes hashed).
        seq: u64,
        hashed: u64,
        hasher: Sha256,
    },
}

/// The end of a check: the file is the package, or why not (for the error).
#[derive(Debug)]
pub(super) enum Verdict {
    /// The sha256 of the whole file, hex.
    Whole(String),
    /// Every chunk matched the registry's.
    Chunks,
    /// A chunk did not (which).
    Mismatch(String),
    /// Every chunk so far matched, but the file is shorter than the package.
    Short(String),
}

impl Check {
    pub(super) fn new(chunks: Option<Chunks>) -> Check {
        match chunks {
            Some(chunks) => Check::Chunks {
                chunks,
                seq: 0,
                hashed: 0,
                hasher: Sha256::new(),
            },
            None => Check::Whole(Sha256::new()),
        }
    }

    /// Takes the next bytes of the file, from where the last ended; `checked`: they are
    /// whole chunks from a chunk boundary that the caller checked against the registry's
    /// hashes already. Err: a chunk that does not match.
    fn update(&mut self, mut data: &[u8], checked: bool) -> Result<(), String> {
        match self {
            Check::Whole(h) => {
                h.update(data);
                Ok(())
            }
            Check::Chunks {
                chunks,
                seq,
                hashed,
                hasher,
            } => {
                while !data.is_empty() {
                    let (_, len) = chunks.span(*seq);
                    if len == 0 {
                        return Err(format!("more than the {} bytes announced", chunks.size));
                    }
                    if checked && *hashed == 0 && data.len() as u64 >= len {
                        // A chunk checked on arrival.
                        data = &data[len as usize..];
                        *seq += 1;
                        continue;
                    }
                    let take = (len - *hashed).min(data.len() as u64) as usize;
                    hasher.update(&data[..take]);
                    data = &data[take..];
                    *hashed += take as u64;
                    if *hashed == len {
                        let got = std::mem::take(hasher).finalize();
                        if chunks.expected(*seq) != Some(&got[..]) {
                            return Err(format!(
                                "chunk {seq} does not match the registry's sha256 of it"
                            ));
                        }
                        *seq += 1;
                        *hashed = 0;
                    }
                }
                Ok(())
            }
        }
    }

    fn finish(self) -> Verdict {
        match self {
            Check::Whole(h) => Verdict::Whole(hex::encode(h.finalize())),
            Check::Chunks {
                chunks,
                seq,
                hashed,
                ..
            } => {
                let (start, _) = chunks.span(seq);
                if hashed != 0 || start < chunks.size {
                    Verdict::Short(format!("{} of {} bytes", start + hashed, chunks.size))
                } else {
                    Verdict::Chunks
                }
            }
        }
    }
}

/// Appends a download to its `.partial` cache file and checks it, on a blocking thread,
/// so that disk writes, the final fsync and sha256 keep off the runtime's workers.
pub(super) struct CacheWriter {
    tx: tokio::sync::mpsc::Sender<(Bytes, bool)>,
    task: tokio::task::JoinHandle<std::io::Result<Verdict>>,
}

impl CacheWriter {
    /// Checks the first `offset` bytes already in `file`, then appends what it is
    /// given, holding `held` until it ends; `written` follows the file's length, for the
    /// peers this node relays the download to. A chunk that does not match stops it
    /// (nothing more is written): [`CacheWriter::finish`] says which.
    pub(super) fn start(
        file: std::fs::File,
        offset: u64,
        held: Held,
        written: Arc<watch::Sender<u64>>,
        mut check: Check,
    ) -> CacheWriter {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Bytes, bool)>(WRITE_QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let _held = held;
            let mut existing = 0u64;
            let mut reader = (&file).take(offset);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                if let Err(why) = check.update(&buf[..n], false) {
                    return Ok(Verdict::Mismatch(why));
                }
                existing += n as u64;
            }
            if existing != offset {
                return Err(std::io::Error::other(format!(
                    "the file shrank to {existing} bytes while it was read"
                )));
            }
            drop(buf);
            let mut out = Writeback::new(&file, offset);
            let mut at = offset;
            while let Some((data, checked)) = rx.blocking_recv() {
                if let Err(why) = check.update(&data, checked) {
                    // The download throws the file away.
                    return Ok(Verdict::Mismatch(why));
                }
                out.write_all(&data)?;
                at += data.len() as u64;
                written.send_replace(at);
            }
            file.sync_all()?;
            Ok(check.finish())
        });
        CacheWriter { tx, task }
    }

    /// Queues `data`; false if the writer stopped (an error, or a chunk that does not
    /// match).
    pub(super) async fn write(&self, data: Bytes) -> bool {
        self.tx.send((data, false)).await.is_ok()
    }

    /// Queues whole chunks from a chunk boundary already checked against the
    /// registry's hashes: they are not hashed again.
    pub(super) async fn write_checked(&self, data: Bytes) -> bool {
        self.tx.send((data, true)).await.is_ok()
    }

    /// Waits until everything queued is written and synced; what the check came to.
    pub(super) async fn finish(self) -> std::io::Result<Verdict> {
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
        let whole = || Check::new(None);
        let writer = CacheWriter::start(
            open(),
            1_000_000,
            locks.lock(&path).await,
            progress(),
            whole(),
        );
        assert!(locks.is_locked(&path), "the writer holds the file's lock");
        for piece in data[1_000_000..].chunks(700_000) {
            assert!(writer.write(Bytes::copy_from_slice(piece)).await);
        }
        let got = writer.finish().await.expect("written");
        assert!(!locks.is_locked(&path), "released when it ends");
        assert!(
            matches!(&got, Verdict::Whole(h) if *h == hex::encode(Sha256::digest(&data))),
            "the sha256 of the whole file"
        );
        assert_eq!(std::fs::read(&path).expect("read"), data);

        // A file shorter than the offset it was started with is an error, not a hash
        // of the wrong bytes.
        let writer = CacheWriter::start(
            open(),
            40_000_000,
            locks.lock(&path).await,
            progress(),
            whole(),
        );
        let err = writer.finish().await.expect_err("shrank");
        assert!(err.to_string().contains("shrank"), "{err}");

        // A file it cannot write to: the write stops being taken and finish says why.
        let read_only = std::fs::File::open(&path).expect("open");
        let writer = CacheWriter::start(read_only, 0, locks.lock(&path).await, progress(), whole());
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

    /// The registry's chunk hashes of `data` in `chunk`-byte chunks.
    fn chunks_of(data: &[u8], chunk: usize) -> Chunks {
        let hashes: Vec<u8> = data.chunks(chunk).flat_map(Sha256::digest).collect();
        Chunks {
            size: data.len() as u64,
            chunk: chunk as u64,
            sha256: hashes.into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn by_chunk_hashes_the_writer_checks_every_byte_once() {
        let data: Vec<u8> = (0..2_500_000).map(|i| (i % 241) as u8).collect();
        let chunk = 1 << 20;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pkg.partial");
        let locks = PathLocks::default();
        let progress = || Arc::new(watch::channel(0).0);
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&path)
                .expect("open")
        };
        let start = async |offset: u64, chunks: Chunks| {
            let held = locks.lock(&path).await;
            CacheWriter::start(open(), offset, held, progress(), Check::new(Some(chunks)))
        };

        // Resumed from 300,000 bytes on disk, the rest in pieces across chunk boundaries
        // (the registry resumes at any byte).
        std::fs::write(&path, &data[..300_000]).expect("write");
        let writer = start(300_000, chunks_of(&data, chunk)).await;
        for piece in data[300_000..].chunks(700_000) {
            assert!(writer.write(Bytes::copy_from_slice(piece)).await);
        }
        assert!(matches!(
            writer.finish().await.expect("written"),
            Verdict::Chunks
        ));
        assert_eq!(std::fs::read(&path).expect("read"), data);

        // Whole chunks checked by the caller (a peer's) are taken as they are: a chunk
        // it vouches for is not hashed again, the others are.
        std::fs::write(&path, b"").expect("truncate");
        let mut lying = chunks_of(&data, chunk);
        let mut hashes = lying.sha256.to_vec();
        hashes[0] ^= 1;
        lying.sha256 = hashes.into();
        let writer = start(0, lying.clone()).await;
        assert!(
            writer
                .write_checked(Bytes::copy_from_slice(&data[..chunk]))
                .await
        );
        for piece in data[chunk..].chunks(chunk) {
            assert!(writer.write(Bytes::copy_from_slice(piece)).await);
        }
        assert!(matches!(
            writer.finish().await.expect("written"),
            Verdict::Chunks
        ));

        // ... but not by this writer: resumed from the file, chunk 0 is checked and
        // refused, naming it.
        let writer = start(data.len() as u64, lying).await;
        match writer.finish().await.expect("read") {
            Verdict::Mismatch(why) => assert!(why.contains("chunk 0"), "{why}"),
            _ => panic!("chunk 0 does not match"),
        }

        // A damaged byte in the stream: the chunk is refused and the writer stops.
        std::fs::write(&path, b"").expect("truncate");
        let writer = start(0, chunks_of(&data, chunk)).await;
        let mut bad = data.clone();
        bad[chunk + 5] ^= 0xff;
        for piece in bad.chunks(chunk) {
            if !writer.write(Bytes::copy_from_slice(piece)).await {
                break;
            }
        }
        match writer.finish().await.expect("stopped") {
            Verdict::Mismatch(why) => assert!(why.contains("chunk 1"), "{why}"),
            _ => panic!("chunk 1 does not match"),
        }
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            chunk as u64,
            "nothing after the last good chunk is written"
        );

        // Cut short: every chunk so far matched, but it is not the package.
        std::fs::write(&path, b"").expect("truncate");
        let writer = start(0, chunks_of(&data, chunk)).await;
        assert!(writer.write(Bytes::copy_from_slice(&data[..chunk])).await);
        assert!(matches!(
            writer.finish().await.expect("written"),
            Verdict::Short(_)
        ));
    }
}
