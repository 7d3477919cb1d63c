//! Serving packages to other nodes (`corral.v1.Peer`), from the cache, or from a
//! download still in progress (a streaming relay: what has arrived is sent, then the rest
//! as it arrives).
//!
//! Only with a ticket from the registry ([`corral_common::ticket`]), keyed with this
//! node's identity hash: a node fetches only what the registry sent it here for.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use corral_proto::v1::peer_server::Peer;
use corral_proto::v1::{DownloadChunk, PeerFetch};
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

/// The downloads in progress on this node: package sha256 to how many bytes of its
/// `.partial` cache file are written. The entry goes when the download ends.
#[derive(Clone, Default)]
pub struct Relay(Arc<Mutex<HashMap<String, watch::Receiver<u64>>>>);

/// A download in progress, announced to the peer service until it is dropped.
pub(super) struct Announced {
    relay: Relay,
    sha256: String,
    pub(super) progress: Arc<watch::Sender<u64>>,
}

impl Drop for Announced {
    fn drop(&mut self) {
        let mut map = self.relay.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(&self.sha256);
    }
}

impl Relay {
    /// Announces the download of `sha256`, of which `have` bytes are written.
    pub(super) fn announce(&self, sha256: &str, have: u64) -> Announced {
        let (tx, rx) = watch::channel(have);
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(sha256.to_string(), rx);
        Announced {
            relay: self.clone(),
            sha256: sha256.to_string(),
            progress: Arc::new(tx),
        }
    }

    fn get(&self, sha256: &str) -> Option<watch::Receiver<u64>> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(sha256).cloned()
    }
}

/// What peer distribution counts on this node, for `/metrics`.
#[derive(Clone, Default)]
pub struct PeerCounters {
    /// Package bytes sent to other nodes.
    pub served: Counter,
    /// Package bytes received from other nodes.
    pub received: Counter,
    /// Peers caught sending bytes that do not match the registry's chunk hashes.
    pub corrupt: Counter,
    /// Peers given up on (unreachable, refused, died, stalled).
    pub failed: Counter,
}

/// The `Peer` service of this agent.
pub struct PeerService {
    pub data_dir: PathBuf,
    pub relay: Relay,
    pub counters: PeerCounters,
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<DownloadChunk, Status>> + Send>>;

fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl PeerService {
    fn authorize(&self, req: &PeerFetch) -> Result<(), Status> {
        let identity = crate::identity::load(&self.data_dir)
            .ok()
            .flatten()
            .ok_or_else(|| Status::unavailable("this node has no identity yet"))?;
        let key = hex::encode(Sha256::digest(identity.secret.as_bytes()));
        corral_common::ticket::check(
            &key,
            &req.sha256,
            &req.node,
            req.expires_ms,
            &req.ticket,
            crate::now_ms(),
        )
        .map_err(|e| {
            warn!(node = %corral_proto::text::quoted(&req.node), cause = %e, "a peer fetch was refused");
            Status::permission_denied(e.to_string())
        })
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    type FetchStream = FetchStream;

    async fn fetch(&self, request: Request<PeerFetch>) -> Result<Response<FetchStream>, Status> {
        let req = request.into_inner();
        if !is_sha256(&req.sha256) {
            return Err(Status::invalid_argument(
                "sha256 must be 64 lowercase hex digits",
            ));
        }
        self.authorize(&req)?;
        if req.chunk_size == 0
            || !req.offset.is_multiple_of(req.chunk_size)
            || req.offset > req.size
        {
            return Err(Status::invalid_argument(format!(
                "offset {} is not a chunk boundary of a {}-byte package in {}-byte chunks",
                req.offset, req.size, req.chunk_size
            )));
        }
        let cache = self.data_dir.join("cache");
        let done = cache.join(&req.sha256);
        let progress = self.relay.get(&req.sha256);
        let file = match &progress {
            Some(_) => std::fs::File::open(cache.join(format!("{}.partial", req.sha256)))
                .or_else(|_| std::fs::File::open(&done)),
            None => std::fs::File::open(&done),
        }
        .map_err(|_| Status::not_found("this node does not have that package"))?;
        if progress.is_none() && file.metadata().map(|m| m.len()).ok() != Some(req.size) {
            return Err(Status::not_found(
                "this node does not have that package whole",
            ));
        }
        debug!(node = %req.node, offset = req.offset, relay = progress.is_some(), "serving a package to a peer");
        let (tx, rx) = mpsc::channel(2);
        let served = self.counters.served.clone();
        tokio::spawn(send(Arc::new(file), done, progress, req, tx, served));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sends the package from `req.offset`, a chunk at a time, as far as it is written.
async fn send(
    file: Arc<std::fs::File>,
    done: PathBuf,
    mut progress: Option<watch::Receiver<u64>>,
    req: PeerFetch,
    tx: mpsc::Sender<Result<DownloadChunk, Status>>,
    served: Counter,
) {
    let mut at = req.offset;
    while at < req.size {
        let want = req.chunk_size.min(req.size - at);
        let have = match &progress {
            Some(rx) => *rx.borrow(),
            None => req.size,
        };
        if have < at + want {
            let ended = match progress.as_mut() {
                Some(rx) => rx.changed().await.is_err(),
                None => false,
            };
            if ended {
                // The download here ended: complete (renamed into the cache) or not.
                let whole = std::fs::metadata(&done).is_ok_and(|m| m.len() == req.size);
                if !whole {
                    let _ = tx
                        .send(Err(Status::unavailable(
                            "the download on this node stopped",
                        )))
                        .await;
                    return;
                }
                progress = None;
            }
            continue;
        }
        let f = file.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; want as usize];
            f.read_exact_at(&mut buf, at).map(|()| Bytes::from(buf))
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let data = match read {
            Ok(d) => d,
            Err(e) => {
                let _ = tx
                    .send(Err(Status::internal(format!("reading the package: {e}"))))
                    .await;
                return;
            }
        };
        if tx.send(Ok(DownloadChunk { data })).await.is_err() {
            return;
        }
        served.inc_by(want);
        at += want;
    }
}
