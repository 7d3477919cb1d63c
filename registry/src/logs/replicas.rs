//! Reaching the replica that holds a node's session.
//!
//! `registry logs` must read through the node's own session, which may be open on
//! another replica than the one the caller reached. The call is then forwarded to that
//! replica, as Nomad forwards a client's log call to the server the client is connected
//! to: relaying lines through the database would add a poll interval to every line and a
//! write per batch to the database every replica shares, while a forwarded gRPC stream
//! carries them as the session does. Each replica records its address (`--advertise`)
//! in `replicas` every [`BEAT`], and the replica a session opens on in
//! `session_replicas`; the forwarded call carries the caller's token (each replica checks
//! it) and is marked so it is never forwarded again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use corral_proto::v1::admin_client::AdminClient;
use corral_proto::v1::{LogLines, LogsRequest};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Endpoint;
use tracing::warn;

use crate::state::Shared;
use crate::store::now_ms;

/// How often a replica refreshes its row.
const BEAT: Duration = Duration::from_secs(5);
/// A replica not seen for this long is taken as gone.
pub const GONE_AFTER: Duration = Duration::from_secs(20);
/// The header that marks a forwarded call.
pub const FORWARDED: &str = "corral-forwarded";

/// The address other replicas reach this one at: `--advertise`, else the gRPC listen
/// address when it is not a wildcard.
pub fn advertise(shared: &Shared, local: Option<SocketAddr>) -> Option<String> {
    let config = shared.config();
    if let Some(a) = &config.advertise {
        return Some(a.clone());
    }
    let local = local.filter(|a| !a.ip().is_unspecified())?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{local}"))
}

/// Keeps this replica's row fresh until shutdown.
pub async fn run(shared: Arc<Shared>, address: Option<String>) {
    let Some(address) = address else {
        warn!(
            "the gRPC address is a wildcard and --advertise is not set: other replicas cannot \
             forward `registry logs` of nodes connected here"
        );
        return;
    };
    loop {
        if let Err(e) = shared
            .store()
            .replica_seen(shared.replica_id(), &address, now_ms())
            .await
        {
            warn!(cause = %e, "cannot record this replica's address");
        }
        tokio::select! {
            () = shared.shutdown().cancelled() => return,
            () = tokio::time::sleep(BEAT) => {}
        }
    }
}

/// Records that `node`'s session `session_id` is open here (for the other replicas).
pub async fn session_opened(shared: &Shared, node: &str, session_id: i64) {
    if let Err(e) = shared
        .store()
        .session_on(node, session_id, shared.replica_id())
        .await
    {
        warn!(node, cause = %e, "cannot record which replica holds the session");
    }
}

/// Calls `Logs` on the replica at `address` for one node, with the caller's token.
pub async fn forward(
    shared: &Shared,
    address: &str,
    token: Option<MetadataValue<Ascii>>,
    req: LogsRequest,
) -> Result<tonic::Streaming<LogLines>, String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot reach replica {address}: {e}");
    let mut endpoint = Endpoint::from_shared(address.to_string())
        .map_err(|e| fail(&e))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if let Some(tls) = &shared.config().tls {
        let client = corral_common::tls::ClientTls {
            ca: tls.client_ca.clone(),
            cert: Some(tls.cert.clone()),
            key: Some(tls.key.clone()),
        };
        let config = client.config().map_err(|e| fail(&e))?;
        endpoint = endpoint.tls_config(config).map_err(|e| fail(&e))?;
    }
    let channel = endpoint.connect().await.map_err(|e| fail(&e))?;
    let mut request = tonic::Request::new(req);
    if let Some(t) = token {
        request.metadata_mut().insert("authorization", t);
    }
    request
        .metadata_mut()
        .insert(FORWARDED, MetadataValue::from_static("1"));
    AdminClient::new(channel)
        .logs(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| s.message().to_string())
}
