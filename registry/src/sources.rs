//! `Agent.Sources`: where a node downloads a package from, with what to check it by.
//!
//! The answer carries the package's size, the sha256 of each of its chunks (computed once
//! per package by this replica, from the database) and, unless the registry serves this
//! node itself, a peer chosen by [`crate::swarm`] with a ticket for it
//! ([`corral_common::ticket`]). Reports of failed and corrupt peers arrive here too: they
//! are logged and counted, and those peers are not given again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use corral_proto::text::quoted;
use corral_proto::v1::{DownloadRequest, PeerSource, SourcesReply, SourcesRequest};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tonic::Status;
use tracing::{info, warn};

use crate::state::Shared;
use crate::store::PackageRow;
use crate::swarm::{Ask, Source, Swarms};

/// How long a ticket is good for: a transfer must start within it (it may last longer).
const TICKET_LIFE: Duration = Duration::from_secs(300);
/// Packages whose chunk hashes are kept.
const HASHED_PACKAGES: usize = 32;

/// The swarms and the chunk hashes of the packages being distributed.
#[derive(Default)]
pub struct Distribution {
    swarms: Mutex<Swarms>,
    hashes: Mutex<VecDeque<(String, Arc<OnceCell<Bytes>>)>>,
}

impl Distribution {
    /// Keeps the chunk hashes of a package just uploaded.
    pub fn remember(&self, sha256: &str, chunk_sha256: Vec<u8>) {
        let _ = self.hashes_of(sha256).set(Bytes::from(chunk_sha256));
    }

    fn hashes_of(&self, sha256: &str) -> Arc<OnceCell<Bytes>> {
        let mut hashes = self.hashes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, cell)) = hashes.iter().find(|(k, _)| k == sha256) {
            return cell.clone();
        }
        let cell = Arc::new(OnceCell::new());
        hashes.push_back((sha256.to_string(), cell.clone()));
        if hashes.len() > HASHED_PACKAGES {
            hashes.pop_front();
        }
        cell
    }
}

/// The sha256 of each chunk of `pkg`, concatenated, read once per package. Read back
/// from the database, the chunks must also hash to the package's sha256: agents check a
/// download by these hashes alone, so they stand for the package's. When they do not
/// (a chunk damaged in the database), there are none: the registry serves the package and
/// the agent checks the sha256 of the whole, which fails.
async fn chunk_hashes(shared: &Shared, pkg: &PackageRow) -> Result<Bytes, Status> {
    let cell = shared.distribution().hashes_of(&pkg.sha256);
    let hashes = cell
        .get_or_try_init(|| async {
            let chunk = pkg.chunk_size.max(1);
            let count = (pkg.size + chunk - 1) / chunk;
            let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0) * 32);
            let mut whole = Sha256::new();
            for seq in 0..count {
                let data = shared
                    .store()
                    .read_chunk(&pkg.app, &pkg.server, &pkg.version, seq)
                    .await?
                    .ok_or_else(|| {
                        Status::data_loss(format!(
                            "{}.{} {}: chunk {seq} is missing",
                            pkg.app, pkg.server, pkg.version
                        ))
                    })?;
                let (digest, hasher) = tokio::task::spawn_blocking(move || {
                    whole.update(&data);
                    (Sha256::digest(&data), whole)
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
                whole = hasher;
                out.extend_from_slice(&digest);
            }
            let got = hex::encode(whole.finalize());
            if got != pkg.sha256 {
                warn!(
                    package = %format!("{}.{} {}", pkg.app, pkg.server, pkg.version),
                    expected = %pkg.sha256, %got,
                    "the package's chunks do not hash to its sha256: no chunk hashes are given for it"
                );
                out.clear();
            }
            Ok::<_, Status>(Bytes::from(out))
        })
        .await?;
    Ok(hashes.clone())
}

pub async fn sources(shared: Arc<Shared>, req: SourcesRequest) -> Result<SourcesReply, Status> {
    let as_download = DownloadRequest {
        node: req.node.clone(),
        identity: req.identity.clone(),
        app: req.app.clone(),
        server: req.server.clone(),
        version: req.version.clone(),
        offset: 0,
    };
    let (name, pkg) = crate::download::authorized_package(&shared, &as_download).await?;
    for peer in &req.corrupt {
        warn!(node = %req.node, peer = %quoted(peer), package = %name, "a peer sent corrupt bytes; it is skipped");
        shared.metrics().peer_reports("corrupt").inc();
    }
    for peer in &req.failed {
        info!(node = %req.node, peer = %quoted(peer), package = %name, "a peer failed; another source is given");
        shared.metrics().peer_reports("failed").inc();
    }
    let hashes = chunk_hashes(&shared, &pkg).await?;
    let address = match u16::try_from(req.peer_port) {
        Ok(0) => None,
        Ok(port) => shared
            .store()
            .get_node(&req.node)
            .await?
            .and_then(|n| n.address.parse::<std::net::IpAddr>().ok())
            .map(|ip| std::net::SocketAddr::new(ip, port).to_string()),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "peer port {} is not a port",
                req.peer_port
            )));
        }
    };
    let source = shared
        .distribution()
        .swarms
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .choose(
            &Ask {
                sha256: &pkg.sha256,
                node: &req.node,
                address,
                failed: &req.failed,
                corrupt: &req.corrupt,
            },
            Instant::now(),
        );
    let peer = match source {
        Source::Registry => {
            shared.metrics().peer_reports("registry").inc();
            None
        }
        Source::Peer { node, address } => {
            let key = shared
                .store()
                .get_node(&node)
                .await?
                .map(|n| n.identity_hash)
                .unwrap_or_default();
            let expires_ms = crate::store::now_ms() + TICKET_LIFE.as_millis() as i64;
            shared.metrics().peer_reports("peer").inc();
            Some(PeerSource {
                ticket: corral_common::ticket::issue(&key, &pkg.sha256, &req.node, expires_ms),
                node,
                address,
                expires_ms,
            })
        }
    };
    Ok(SourcesReply {
        sha256: pkg.sha256,
        size: u64::try_from(pkg.size).unwrap_or(0),
        chunk_size: u64::try_from(pkg.chunk_size).unwrap_or(1),
        chunk_sha256: hashes.to_vec(),
        peer,
    })
}
