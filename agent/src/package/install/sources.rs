//! Where a download comes from: the registry's answer to `Agent.Sources`, and the
//! transfer from a peer it names, each chunk checked against the registry's chunk hashes
//! before it is written or unpacked.

use std::time::Duration;

use corral_proto::v1::agent_client::AgentClient;
use corral_proto::v1::peer_client::PeerClient;
use corral_proto::v1::{InstallState, PackageRef, PeerFetch, PeerSource, SourcesRequest};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::cache::{CacheWriter, Chunks};
use super::unpacker::Unpacker;
use super::{InstallError, Installer};

/// How long to wait for a peer to accept a connection.
const PEER_CONNECT: Duration = Duration::from_secs(2);
/// A peer that sends nothing for this long is given up on (a relay waits for its own
/// source, so this is generous).
const PEER_IDLE: Duration = Duration::from_secs(10);

/// Where one download attempt gets its bytes, and the registry's chunk hashes to check
/// them by (None: a registry without `Agent.Sources`, or without the hashes of this
/// package; the sha256 of the whole is checked).
pub(super) enum Plan {
    Registry(Option<Chunks>),
    Peer(Chunks, Box<PeerSource>),
}

impl Plan {
    pub(super) fn chunks(&self) -> Option<Chunks> {
        match self {
            Plan::Registry(chunks) => chunks.clone(),
            Plan::Peer(chunks, _) => Some(chunks.clone()),
        }
    }
}

/// Peers that failed this download, for the next question to the registry.
#[derive(Default)]
pub(super) struct Tried {
    pub(super) failed: Vec<String>,
    pub(super) corrupt: Vec<String>,
}

/// Progress in steps of 5 %: each report is a status message the registry writes to its
/// database.
pub(super) fn progress(
    report: &impl Fn(InstallState, u32),
    received: u64,
    size: u64,
    last: &mut u32,
) {
    let percent = (received * 100 / size.max(1)) as u32 / 5 * 5;
    if percent != *last {
        *last = percent;
        report(InstallState::Downloading, percent);
    }
}

impl Installer {
    pub(super) fn identity_secret(&self) -> String {
        crate::identity::load(&self.data_dir)
            .ok()
            .flatten()
            .map(|i| i.secret)
            .unwrap_or_default()
    }

    /// Asks the registry where to download `pkg` from. A registry without `Sources`
    /// (older) serves the download itself.
    pub(super) async fn plan(
        &self,
        app: &str,
        server: &str,
        pkg: &PackageRef,
        tried: &Tried,
    ) -> Result<Plan, InstallError> {
        let failed = |reason: String| InstallError::Download {
            version: pkg.version.clone(),
            reason,
        };
        let channel = self
            .channel
            .borrow()
            .clone()
            .ok_or_else(|| failed("no registry session".into()))?;
        let request = SourcesRequest {
            node: self.node.clone(),
            identity: self.identity_secret(),
            app: app.to_string(),
            server: server.to_string(),
            version: pkg.version.clone(),
            peer_port: self.peers.port.map_or(0, u32::from),
            failed: tried.failed.clone(),
            corrupt: tried.corrupt.clone(),
        };
        let reply = match AgentClient::new(channel).sources(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(Plan::Registry(None)),
            Err(s) => return Err(failed(s.message().to_string())),
        };
        if reply.sha256 != pkg.sha256 || reply.size != pkg.size {
            return Err(InstallError::Checksum {
                version: pkg.version.clone(),
                expected: pkg.sha256.clone(),
                got: format!(
                    "{} (the registry's package under this version now)",
                    reply.sha256
                ),
            });
        }
        let whole = reply.size.div_ceil(reply.chunk_size.max(1)) * 32;
        let chunks =
            (reply.chunk_size > 0 && reply.chunk_sha256.len() as u64 == whole).then(|| Chunks {
                size: reply.size,
                chunk: reply.chunk_size,
                sha256: reply.chunk_sha256.into(),
            });
        match (chunks, reply.peer) {
            (Some(chunks), Some(peer)) => Ok(Plan::Peer(chunks, Box::new(peer))),
            (chunks, _) => Ok(Plan::Registry(chunks)),
        }
    }

    /// Streams the package from `offset` (a chunk boundary) to its end from `peer`,
    /// checking each chunk before it goes to the cache writer and the unpacker.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn stream_peer(
        &self,
        pkg: &PackageRef,
        chunks: &Chunks,
        peer: &PeerSource,
        offset: u64,
        report: &impl Fn(InstallState, u32),
        unpacker: &mut Unpacker,
        writer: &CacheWriter,
    ) -> Result<(), InstallError> {
        let version = pkg.version.as_str();
        let quoted = corral_proto::text::quoted(&peer.node);
        let err = |corrupt: bool, reason: String| {
            let counter = if corrupt {
                &self.peers.counters.corrupt
            } else {
                &self.peers.counters.failed
            };
            counter.inc();
            if corrupt {
                warn!(peer = %quoted, %reason, "a peer sent corrupt bytes: skipping it");
            } else {
                info!(peer = %quoted, %reason, "a peer failed: asking for another source");
            }
            InstallError::Peer {
                version: version.to_string(),
                peer: peer.node.clone(),
                corrupt,
                reason,
            }
        };
        let (size, chunk) = (chunks.size, chunks.chunk);
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", peer.address))
            .map_err(|e| err(false, format!("address {}: {e}", peer.address)))?
            .connect_timeout(PEER_CONNECT)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| err(false, format!("cannot connect to {}: {e}", peer.address)))?;
        let limit = usize::try_from(chunk)
            .unwrap_or(usize::MAX)
            .saturating_add(1 << 16);
        let mut client = PeerClient::new(channel).max_decoding_message_size(limit);
        let request = PeerFetch {
            sha256: pkg.sha256.clone(),
            size,
            chunk_size: chunk,
            offset,
            node: self.node.clone(),
            ticket: peer.ticket.clone(),
            expires_ms: peer.expires_ms,
        };
        let mut stream = match tokio::time::timeout(PEER_IDLE, client.fetch(request)).await {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(s)) => return Err(err(false, s.message().to_string())),
            Err(_) => return Err(err(false, "no answer".into())),
        };
        info!(peer = %quoted, offset, "downloading from a peer");
        let mut at = offset;
        let mut last = u32::MAX;
        while at < size {
            let data = match tokio::time::timeout(PEER_IDLE, stream.message()).await {
                Ok(Ok(Some(c))) => c.data,
                Ok(Ok(None)) => return Err(err(false, format!("the stream ended at byte {at}"))),
                Ok(Err(s)) => return Err(err(false, s.message().to_string())),
                Err(_) => {
                    return Err(err(
                        false,
                        format!("nothing for {PEER_IDLE:?} at byte {at}"),
                    ));
                }
            };
            let want = chunk.min(size - at);
            let seq = at / chunk;
            if data.len() as u64 != want {
                return Err(err(
                    true,
                    format!("{} bytes at byte {at}, not a chunk of {want}", data.len()),
                ));
            }
            // Checked here, to know whom to blame; the cache writer does not hash it again.
            if chunks.expected(seq) != Some(&Sha256::digest(&data)[..]) {
                return Err(err(
                    true,
                    format!("chunk {seq} does not match the registry's sha256"),
                ));
            }
            if !writer.write_checked(data.clone()).await {
                return Err(InstallError::Download {
                    version: version.to_string(),
                    reason: "the cache writer stopped".into(),
                });
            }
            unpacker.feed(data).await;
            self.peers.counters.received.inc_by(want);
            at += want;
            progress(report, at, size, &mut last);
        }
        Ok(())
    }
}
