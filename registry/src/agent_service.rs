//! The `Agent.Session` RPC: one long-lived stream per joined agent.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use corral_proto::v1::agent_message::Body as AgentBody;
use corral_proto::v1::agent_server::Agent;
use corral_proto::v1::registry_message::Body as RegistryBody;
use corral_proto::v1::{
    AgentMessage, DownloadChunk, DownloadRequest, LoadReport, RegistryMessage, SourcesReply,
    SourcesRequest, Welcome,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::desired::desired_state;
use crate::join;
use crate::logs::routes::Routed;
use crate::sessions::Opened;
use crate::state::Shared;
use crate::store::{LoadRow, now_ms};

/// How long a new session may take to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AgentService {
    pub shared: Arc<Shared>,
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<RegistryMessage, Status>> + Send>>;
type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadChunk, Status>> + Send>>;

fn load_row(load: &LoadReport) -> LoadRow {
    LoadRow {
        cpu_percent: f64::from(load.cpu_percent),
        load1: load.load1,
        load5: load.load5,
        load15: load.load15,
        memory_used_bytes: i64::try_from(load.memory_used_bytes).unwrap_or(i64::MAX),
        disk_free_bytes: i64::try_from(load.disk_free_bytes).unwrap_or(i64::MAX),
        instance_usage: crate::usage::to_json(&load.usage),
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    type SessionStream = SessionStream;
    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        request: Request<DownloadRequest>,
    ) -> Result<Response<DownloadStream>, Status> {
        crate::download::download(self.shared.clone(), request.into_inner())
            .await
            .map(Response::new)
    }

    async fn sources(
        &self,
        request: Request<SourcesRequest>,
    ) -> Result<Response<SourcesReply>, Status> {
        crate::sources::sources(self.shared.clone(), request.into_inner())
            .await
            .map(Response::new)
    }

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        if let Err(status) = require_client_cert(&self.shared, &request) {
            join_refused(&self.shared, &peer, "", &status);
            return Err(status);
        }
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no Hello within 10s of opening the session")
            })??;
        let Some(AgentMessage {
            body: Some(AgentBody::Hello(hello)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message of a session must be a Hello",
            ));
        };
        let shared = &self.shared;
        if let Err(status) = join::check_hello(&hello) {
            warn!(%peer, node = %hello.node, cause = %status.message(), "refused agent");
            join_refused(shared, &peer, &hello.node, &status);
            return Err(status);
        }
        let now = now_ms();
        let admitted = match join::admit(
            shared.store(),
            &hello,
            shared.config().join_token.as_deref(),
            now,
        )
        .await
        {
            Ok(a) => a,
            Err(status) => {
                warn!(%peer, node = %hello.node, cause = %status.message(), "refused agent");
                join_refused(shared, &peer, &hello.node, &status);
                return Err(status);
            }
        };
        let opened = shared
            .sessions()
            .open(&admitted.node, admitted.session_id, now);
        info!(node = %admitted.node, %peer, session = admitted.session_id, "node up");
        crate::actual::session_opened(shared, &admitted.node, admitted.session_id).await;
        shared.discovery_changed();

        let (tx, rx) = mpsc::channel(16);
        let welcome = RegistryMessage {
            body: Some(RegistryBody::Welcome(Welcome {
                heartbeat_interval_ms: shared.config().heartbeat_interval.as_millis() as u64,
                registry_version: env!("CARGO_PKG_VERSION").to_string(),
            })),
        };
        // The channel is new and empty; this cannot fail.
        let _ = tx.try_send(Ok(welcome));
        let shared = shared.clone();
        self.shared.spawn(async move {
            run_session(shared, admitted, inbound, tx, opened).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Why a session ended, for the log.
enum End {
    Closed,
    Broken(Status),
    Silent,
    Replaced,
    Shutdown,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => write!(f, "the agent closed the session"),
            End::Broken(status) => write!(f, "the connection broke: {}", status.message()),
            End::Silent => write!(f, "no heartbeat within the node timeout"),
            End::Replaced => write!(f, "a newer session of the same node replaced it"),
            End::Shutdown => write!(f, "the registry is shutting down"),
        }
    }
}

/// Records an agent refused at its join in the audit log, when the refusal is about who
/// it is or what it sent (not a database that does not answer: the agent retries).
fn join_refused(shared: &Shared, peer: &str, node: &str, status: &Status) {
    use tonic::Code;
    if !matches!(
        status.code(),
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::InvalidArgument
            | Code::FailedPrecondition
    ) {
        return;
    }
    let mut row = crate::audit::entry(
        None,
        peer,
        "Join",
        &if node.is_empty() {
            String::new()
        } else {
            format!("node {}", corral_proto::text::quoted(node))
        },
        crate::audit::Outcome::Refused,
        status.message(),
    );
    row.caller = "(agent)".to_string();
    crate::gate::refused_row(shared, row, status);
}

/// With mutual TLS on, agents must present a certificate the client CA signed (TLS has
/// checked it is valid; here we check there is one).
fn require_client_cert<T>(shared: &Shared, request: &Request<T>) -> Result<(), Status> {
    let mtls = shared
        .config()
        .tls
        .as_ref()
        .is_some_and(|t| t.client_ca.is_some());
    if mtls && request.peer_certs().is_none_or(|c| c.is_empty()) {
        return Err(Status::unauthenticated(
            "this registry requires agents to present a client certificate (mutual TLS): start the agent with --tls-cert and --tls-key",
        ));
    }
    Ok(())
}

/// Sends the node's desired state; false when the agent's stream is gone.
async fn send_desired(
    shared: &Shared,
    node: &str,
    tx: &mpsc::Sender<Result<RegistryMessage, Status>>,
) -> bool {
    match desired_state(shared, node).await {
        Ok(desired) => {
            let msg = RegistryMessage {
                body: Some(RegistryBody::Desired(desired)),
            };
            shared.metrics().desired_sent.inc();
            tx.send(Ok(msg)).await.is_ok()
        }
        Err(err) => {
            // The agent keeps what it has; the next change or session sends it again.
            warn!(node, cause = %err, "could not read the desired state");
            true
        }
    }
}

async fn run_session(
    shared: Arc<Shared>,
    admitted: join::Admitted,
    mut inbound: Streaming<AgentMessage>,
    tx: mpsc::Sender<Result<RegistryMessage, Status>>,
    opened: Opened,
) {
    let node = admitted.node.as_str();
    let id = admitted.session_id;
    shared.metrics().sessions_open.inc();
    shared.logs().attach(node, id, tx.clone());
    let (place, at) = (shared.clone(), node.to_string());
    shared.spawn(async move { crate::logs::replicas::session_opened(&place, &at, id).await });
    // The database calls a session makes now and then (the desired state, the node's
    // down) are boxed: kept inline, their futures would size every session's task for
    // its whole life (see docs/benchmarks.md, "10,000 sessions").
    let mut end = if Box::pin(send_desired(&shared, node, &tx)).await {
        None
    } else {
        Some(End::Closed)
    };
    while end.is_none() {
        tokio::select! {
            () = shared.shutdown().cancelled() => end = Some(End::Shutdown),
            () = opened.replaced.cancelled() => end = Some(End::Replaced),
            () = opened.changed.notified() => {
                // Instances may have been added or reset: their next reports are written.
                shared.actual().forget(node);
                if !Box::pin(send_desired(&shared, node, &tx)).await {
                    end = Some(End::Closed);
                }
            }
            next = tokio::time::timeout(shared.config().node_timeout, inbound.message()) => {
                match next {
                    Err(_) => end = Some(End::Silent),
                    Ok(Ok(None)) => end = Some(End::Closed),
                    Ok(Err(status)) => end = Some(End::Broken(status)),
                    Ok(Ok(Some(msg))) => match msg.body {
                        Some(AgentBody::Heartbeat(hb)) => {
                            shared.sessions().touch(node, id, now_ms(), hb.load.as_ref().map(load_row));
                        }
                        Some(AgentBody::Reports(r)) => {
                            shared.sessions().touch(node, id, now_ms(), None);
                            crate::actual::received(&shared, node, id, r.events, r.statuses);
                        }
                        Some(AgentBody::Status(status)) => {
                            shared.sessions().touch(node, id, now_ms(), None);
                            crate::actual::received(&shared, node, id, vec![], vec![status]);
                        }
                        Some(AgentBody::Event(event)) => {
                            shared.sessions().touch(node, id, now_ms(), None);
                            crate::actual::received(&shared, node, id, vec![event], vec![]);
                        }
                        Some(AgentBody::LogBatch(batch)) => {
                            shared.logs().deliver(node, batch.id, Routed::Batch(batch));
                        }
                        Some(AgentBody::LogEnd(end)) => {
                            shared.logs().deliver(node, end.id, Routed::End(end.error));
                        }
                        Some(AgentBody::Hello(_)) | None => {
                            warn!(node, "ignoring an unexpected message in an open session");
                        }
                    },
                }
            }
        }
    }
    let end = end.unwrap_or(End::Closed);
    shared.logs().detach(node, id);
    drop(tx);
    shared.metrics().sessions_open.dec();
    if shared.sessions().close(node, id) {
        Box::pin(crate::actual::session_ended(&shared, node, id, &end)).await;
    } else {
        info!(node, session = id, reason = %end, "session replaced");
    }
}
