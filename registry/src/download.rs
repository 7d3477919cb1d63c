//! `Agent.Download`: a package to an agent, in chunks, from any offset.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use corral_proto::v1::{DownloadChunk, DownloadRequest};
use tokio::sync::{OnceCell, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::state::Shared;
use crate::store::{PackageRow, StoreError};

type Stream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<DownloadChunk, Status>> + Send>>;

/// Checks who asks: a node with its identity, for a server assigned to it.
pub(crate) async fn authorize(shared: &Shared, req: &DownloadRequest) -> Result<(), Status> {
    let node = shared.store().get_node(&req.node).await?;
    let known = node.is_some_and(|n| crate::join::identity_hash(&req.identity) == n.identity_hash);
    if !known {
        return Err(Status::unauthenticated(format!(
            "node {} did not prove its identity",
            corral_proto::text::quoted(&req.node)
        )));
    }
    let instances = shared.store().instances_of(&req.app, &req.server).await?;
    if !instances.iter().any(|i| i.node == req.node) {
        return Err(Status::permission_denied(format!(
            "node {} runs no instance of {}.{}",
            corral_proto::text::quoted(&req.node),
            corral_proto::text::quoted(&req.app),
            corral_proto::text::quoted(&req.server)
        )));
    }
    Ok(())
}

/// Chunks kept for downloads that lag behind: at most this many (1 MiB each).
const CACHED_CHUNKS: usize = 16;

/// Package chunks shared by the downloads that run at the same time. A rollout has every
/// node of a batch download the package at once; each chunk is read from the database
/// once for all of them (the first to ask reads it, the others wait for that read), not
/// once per node. The newest [`CACHED_CHUNKS`] chunks are kept while any download runs;
/// the cache empties when the last one ends.
#[derive(Default)]
pub struct ChunkCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    /// Downloads running now.
    active: usize,
    chunks: VecDeque<(ChunkKey, Arc<OnceCell<Bytes>>)>,
}

/// A chunk of a package's content: its sha256, the chunk size and the chunk's number.
type ChunkKey = (String, u64, u64);

/// Why a chunk could not be had.
enum ChunkError {
    Missing,
    Store(StoreError),
}

/// One running download; the cache is emptied when the last one is dropped.
struct Active<'a>(&'a ChunkCache);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.active -= 1;
        if inner.active == 0 {
            inner.chunks.clear();
        }
    }
}

impl ChunkCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn start(&self) -> Active<'_> {
        self.lock().active += 1;
        Active(self)
    }

    /// The chunk, from the cache or read by `read` (once, however many ask at once).
    async fn get<F>(&self, key: ChunkKey, read: F) -> Result<Bytes, ChunkError>
    where
        F: Future<Output = Result<Option<Vec<u8>>, StoreError>>,
    {
        let cell = {
            let mut inner = self.lock();
            match inner.chunks.iter().find(|(k, _)| *k == key) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    inner.chunks.push_back((key, cell.clone()));
                    if inner.chunks.len() > CACHED_CHUNKS {
                        inner.chunks.pop_front();
                    }
                    cell
                }
            }
        };
        // A failed read leaves the cell empty: the next to ask reads again.
        cell.get_or_try_init(|| async {
            match read.await {
                Ok(Some(data)) => Ok(Bytes::from(data)),
                Ok(None) => Err(ChunkError::Missing),
                Err(e) => Err(ChunkError::Store(e)),
            }
        })
        .await
        .cloned()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().chunks.len()
    }
}

/// The package `req` asks for, once its node is authorized and its version checked, with
/// its name for messages (`app.server version`).
pub async fn authorized_package(
    shared: &Shared,
    req: &DownloadRequest,
) -> Result<(String, PackageRow), Status> {
    authorize(shared, req).await?;
    crate::spec::check_version(&req.version).map_err(Status::invalid_argument)?;
    let name = format!("{}.{} {}", req.app, req.server, req.version);
    let pkg = shared
        .store()
        .get_package(&req.app, &req.server, &req.version)
        .await?
        .ok_or_else(|| StoreError::PackageNotFound(name.clone()))?;
    Ok((name, pkg))
}

pub async fn download(shared: Arc<Shared>, req: DownloadRequest) -> Result<Stream, Status> {
    let (name, pkg) = authorized_package(&shared, &req).await?;
    let size = u64::try_from(pkg.size).unwrap_or(0);
    if req.offset > size {
        return Err(Status::out_of_range(format!(
            "offset {} is past the end of {name} ({size} bytes)",
            req.offset
        )));
    }
    let chunk = u64::try_from(pkg.chunk_size).unwrap_or(1).max(1);
    let (tx, rx) = mpsc::channel(2);
    let rate = shared.config().download_rate;
    let task_shared = shared.clone();
    shared.spawn(async move {
        let shared = task_shared;
        let _active = shared.chunks().start();
        let started = Instant::now();
        let mut sent: u64 = 0;
        let mut seq = req.offset / chunk;
        let mut skip = (req.offset % chunk) as usize;
        while seq * chunk < size {
            let read = async {
                shared.metrics().chunks_read.inc();
                shared
                    .store()
                    .read_chunk(&req.app, &req.server, &req.version, seq as i64)
                    .await
            };
            let data = match shared
                .chunks()
                .get((pkg.sha256.clone(), chunk, seq), read)
                .await
            {
                Ok(d) => d,
                Err(ChunkError::Missing) => {
                    let _ = tx
                        .send(Err(Status::data_loss(format!(
                            "{name}: chunk {seq} is missing"
                        ))))
                        .await;
                    return;
                }
                Err(ChunkError::Store(e)) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            let data = data.slice(skip.min(data.len())..);
            skip = 0;
            let len = data.len() as u64;
            sent += len;
            if tx.send(Ok(DownloadChunk { data })).await.is_err() {
                return;
            }
            shared.metrics().chunks_sent.inc();
            shared.metrics().package_bytes_sent.inc_by(len);
            if let Some(rate) = rate {
                // Pace to the configured rate: no faster than `rate` bytes per second.
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            seq += 1;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn key(seq: u64) -> ChunkKey {
        ("ab".repeat(32), 1 << 20, seq)
    }

    #[tokio::test]
    async fn concurrent_downloads_read_a_chunk_once() {
        let cache = ChunkCache::default();
        let reads = AtomicUsize::new(0);
        let read = |seq: u64| {
            let reads = &reads;
            async move {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok(Some(vec![seq as u8; 4]))
            }
        };
        let a = cache.start();
        let b = cache.start();
        let (x, y) = tokio::join!(cache.get(key(0), read(0)), cache.get(key(0), read(0)));
        assert!(matches!((&x, &y), (Ok(x), Ok(y)) if x == y && x[..] == [0; 4]));
        assert_eq!(reads.load(Ordering::SeqCst), 1, "one read for both");

        // A missing chunk or a failed read is not kept: the next ask reads again.
        assert!(matches!(
            cache.get(key(1), async { Ok(None) }).await,
            Err(ChunkError::Missing)
        ));
        assert!(matches!(
            cache
                .get(key(1), async {
                    Err(StoreError::PackageNotFound("x".into()))
                })
                .await,
            Err(ChunkError::Store(_))
        ));
        assert!(cache.get(key(1), read(1)).await.is_ok());
        assert_eq!(reads.load(Ordering::SeqCst), 2);

        // Bounded, and emptied when the last download ends.
        for seq in 2..40 {
            assert!(cache.get(key(seq), read(seq)).await.is_ok());
        }
        assert_eq!(cache.len(), CACHED_CHUNKS);
        drop(a);
        assert_eq!(cache.len(), CACHED_CHUNKS, "a download still runs");
        drop(b);
        assert_eq!(cache.len(), 0);
    }
}
