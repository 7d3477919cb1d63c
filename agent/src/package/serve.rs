//! The listener other nodes fetch packages from: this node's advertise IP, at the
//! configured port (`--peer-port`; 0: any free one, which the agent tells the registry
//! with each `Agent.Sources`), serving [`install::PeerService`].

use std::net::SocketAddr;
use std::path::PathBuf;

use corral_proto::v1::peer_server::PeerServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::install::{self, Peers};
use crate::AgentConfig;

/// Binds the peer listener; without one (off, or the address cannot be bound), this node
/// serves no peer and downloads as before: the registry gives it peers all the same.
pub async fn bind(config: &AgentConfig) -> (Option<TcpListener>, Peers) {
    let Some(port) = config.peer_port else {
        return (None, Peers::default());
    };
    let addr = SocketAddr::new(config.advertise_ip, port);
    match TcpListener::bind(addr).await {
        Ok(listener) => {
            let port = listener.local_addr().map(|a| a.port()).ok();
            info!(%addr, port, "serving packages to peers");
            let peers = Peers {
                port,
                ..Peers::default()
            };
            (Some(listener), peers)
        }
        Err(e) => {
            warn!(%addr, cause = %e, "cannot listen for peers (--peer-port): this node serves no package to others");
            (None, Peers::default())
        }
    }
}

/// Serves peers until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    data_dir: PathBuf,
    peers: Peers,
    shutdown: CancellationToken,
) {
    let service = install::PeerService {
        data_dir,
        relay: peers.relay,
        counters: peers.counters,
    };
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let served = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(PeerServer::new(service))
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        warn!(cause = %e, "the peer service stopped");
    }
}
