//! The agent's side of the session: find a registry that answers, join, heartbeat, and
//! come back after any failure.

use std::sync::Arc;
use std::time::Duration;

use corral_proto::PROTOCOL_VERSION;
use corral_proto::v1::agent_client::AgentClient;
use corral_proto::v1::agent_message::Body as AgentBody;
use corral_proto::v1::registry_message::Body as RegistryBody;
use corral_proto::v1::{AgentMessage, Heartbeat, Hello, Reports};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Endpoint, Uri};
use tonic::{Code, Status};
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::facts::Sampler;
use crate::identity::{self, Identity};
use crate::{AgentError, Context};

/// Log batches queued for the session at most; past that, lines are skipped.
const LOG_QUEUE: usize = 32;

/// How long the registry has to answer a Hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection is pinged after this long without a frame from the registry.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may go unanswered before the session is given up. Not 5 s: a
/// registry busy for a few seconds (a whole fleet rejoining after its restart) answers
/// late, and agents that dropped healthy sessions then would all join again, making it
/// busier still. A registry process that ends closes the connection, which is seen at
/// once; only a host that vanished without a word takes the interval plus this.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Reports are paced by [`crate::pace::Pace`]: up to `REPORT_BURST` batches go at once
/// after a quiet spell, then one per `REPORT_WINDOW`, each carrying everything that
/// changed meanwhile (each instance's latest status, every event); so a crash-looping
/// fleet costs the registry a message per node per window rather than one per
/// transition. A batch waits `REPORT_GATHER` for the changes right behind the first (a
/// start's `starting` and `running` go in one message).
const REPORT_WINDOW: Duration = Duration::from_millis(100);
const REPORT_BURST: u32 = 4;
const REPORT_GATHER: Duration = Duration::from_millis(2);

/// Statuses and events in one `Reports` message at most: a big node's full report after
/// a reconnect is several messages, each well under the gRPC message size limit.
const REPORTS_PER_MESSAGE: usize = 500;

/// Why a session attempt ended.
enum Outcome {
    /// Shutdown was requested.
    Shutdown,
    /// The session was established and later lost; reconnect at once.
    Lost(String),
    /// No session could be established with this registry; try the next one.
    Failed(String),
}

/// Statuses that mean "this agent may not join", which retrying cannot fix.
fn is_refusal(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::FailedPrecondition
            | Code::InvalidArgument
            | Code::Unauthenticated
            | Code::PermissionDenied
    )
}

/// Keeps a session open with one of the locator's registries until shutdown.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) -> Result<(), AgentError> {
    let config = &ctx.config;
    let mut backoff = Backoff::new(config.reconnect_initial, config.reconnect_max);
    let mut sampler = Sampler::new(
        &config.data_dir,
        ctx.cgroups.clone(),
        ctx.cgroups_error.clone(),
    );
    let mut index = 0;
    loop {
        let uri = config.locators[index].clone();
        let outcome = tokio::select! {
            () = shutdown.cancelled() => Outcome::Shutdown,
            o = session(&ctx, &uri, &mut sampler, &shutdown) => o?,
        };
        ctx.connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        ctx.metrics.connected.set(0);
        ctx.channel.send_replace(None);
        match outcome {
            Outcome::Shutdown => return Ok(()),
            Outcome::Lost(why) => {
                warn!(registry = %uri, cause = %why, "session lost; reconnecting");
                backoff.reset();
            }
            Outcome::Failed(why) => {
                index = (index + 1) % config.locators.len();
                let delay = backoff.next_delay();
                warn!(registry = %uri, cause = %why, retry_in = ?delay, "registry unavailable");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

fn hello(ctx: &Context, sampler: &Sampler) -> Result<Hello, AgentError> {
    let identity = own_identity(&ctx.config.data_dir, &ctx.config.node)?;
    Ok(Hello {
        protocol_version: PROTOCOL_VERSION,
        node: ctx.config.node.clone(),
        new_identity: !identity.admitted,
        identity: identity.secret,
        advertise_ip: ctx.config.advertise_ip.to_string(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        facts: Some(sampler.facts()),
        join_token: ctx.config.join_token.clone().unwrap_or_default(),
    })
}

/// The identity this agent joins with: the stored one when it is for this node name,
/// else a new one, stored (synced) before any registry hears of it.
fn own_identity(data_dir: &std::path::Path, node: &str) -> Result<Identity, AgentError> {
    match identity::load(data_dir)? {
        Some(id) if id.node == node => return Ok(id),
        Some(id) => {
            warn!(stored = %id.node, %node, "the stored identity is for another node name; joining as a new node");
        }
        None => {}
    }
    let id = Identity::generate(node);
    identity::store(data_dir, &id)?;
    Ok(id)
}

/// One session with one registry.
async fn session(
    ctx: &Context,
    uri: &Uri,
    sampler: &mut Sampler,
    shutdown: &CancellationToken,
) -> Result<Outcome, AgentError> {
    let config = &ctx.config;
    let mut endpoint = Endpoint::from(uri.clone());
    if ctx.config.tls.is_set() || uri.scheme_str() == Some("https") {
        let tls = ctx
            .config
            .tls
            .config()
            .map_err(|e| AgentError::Tls(e.to_string()))?;
        endpoint = match endpoint.tls_config(tls) {
            Ok(e) => e,
            Err(e) => return Ok(Outcome::Failed(format!("TLS: {e}"))),
        };
    }
    let channel = match endpoint
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect()
        .await
    {
        Ok(c) => c,
        Err(e) => return Ok(Outcome::Failed(format!("connect: {e}"))),
    };
    let (tx, rx) = mpsc::channel(16);
    // Log batches wait in their own bounded queue, sent only when `tx` is empty.
    let (log_tx, log_rx) = mpsc::channel(LOG_QUEUE);
    let first = AgentMessage {
        body: Some(AgentBody::Hello(hello(ctx, sampler)?)),
    };
    // The channel is new and empty; this cannot fail.
    let _ = tx.try_send(first);
    let mut client = AgentClient::new(channel.clone());
    let mut inbound = match client
        .session(crate::logs::streams::Outbound::new(rx, log_rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) if is_refusal(&status) => {
            return Err(AgentError::Refused {
                registry: uri.to_string(),
                message: status.message().to_string(),
            });
        }
        Err(status) => return Ok(Outcome::Failed(format!("join: {}", status.message()))),
    };
    let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(corral_proto::v1::RegistryMessage {
            body: Some(RegistryBody::Welcome(w)),
        }))) => w,
        Ok(Err(status)) if is_refusal(&status) => {
            return Err(AgentError::Refused {
                registry: uri.to_string(),
                message: status.message().to_string(),
            });
        }
        other => {
            return Ok(Outcome::Failed(format!(
                "no welcome from the registry: {other:?}"
            )));
        }
    };
    if let Some(mut id) = identity::load(&config.data_dir)?.filter(|id| !id.admitted) {
        id.admitted = true;
        identity::store(&config.data_dir, &id)?;
        info!(node = %config.node, "joined as a new node");
    }
    ctx.connected
        .store(true, std::sync::atomic::Ordering::Relaxed);
    ctx.metrics.connected.set(1);
    ctx.channel.send_replace(Some(channel));
    ctx.metrics.sessions.inc();
    info!(registry = %uri, node = %config.node, "session open");

    let interval = Duration::from_millis(welcome.heartbeat_interval_ms.max(100));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Every status once (the registry may have missed changes), then each change.
    let mut sent_seq = 0;
    let mut logs = crate::logs::streams::Streams::new(ctx.logs.clone(), log_tx);
    if !send_status(ctx, &tx, &mut sent_seq).await {
        return Ok(Outcome::Lost("the request stream closed".into()));
    }
    // When the changes waiting on the board go (None: nothing waits).
    let mut flush: Option<tokio::time::Instant> = None;
    let mut pace = crate::pace::Pace::new(
        REPORT_BURST,
        REPORT_WINDOW,
        REPORT_GATHER,
        tokio::time::Instant::now(),
    );
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(Outcome::Shutdown),
            () = ctx.board.changed.notified(), if flush.is_none() => {
                flush = Some(pace.due(tokio::time::Instant::now()));
            }
            () = tokio::time::sleep_until(flush.unwrap_or_else(tokio::time::Instant::now)), if flush.is_some() => {
                flush = None;
                pace.spent(tokio::time::Instant::now());
                if !send_status(ctx, &tx, &mut sent_seq).await {
                    return Ok(Outcome::Lost("the request stream closed".into()));
                }
            }
            _ = tick.tick() => {
                let beat = AgentMessage {
                    body: Some(AgentBody::Heartbeat(Heartbeat { load: Some(sampler.load()) })),
                };
                if tx.send(beat).await.is_err() {
                    return Ok(Outcome::Lost("the request stream closed".into()));
                }
                ctx.metrics.heartbeats.inc();
            }
            msg = inbound.message() => match msg {
                Ok(Some(corral_proto::v1::RegistryMessage { body: Some(RegistryBody::Desired(desired)) })) => {
                    ctx.desired.send_replace(Some(desired));
                }
                Ok(Some(corral_proto::v1::RegistryMessage { body: Some(RegistryBody::LogOpen(open)) })) => {
                    logs.open(open);
                }
                Ok(Some(corral_proto::v1::RegistryMessage { body: Some(RegistryBody::LogCancel(c)) })) => {
                    logs.cancel(c.id);
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(Outcome::Lost("the registry closed the session".into())),
                Err(status) if is_refusal(&status) => {
                    return Err(AgentError::Refused {
                        registry: uri.to_string(),
                        message: status.message().to_string(),
                    });
                }
                Err(status) => return Ok(Outcome::Lost(status.message().to_string())),
            },
        }
    }
}

/// Sends the statuses changed since `sent_seq` and the pending events, events first, in
/// `Reports` of at most [`REPORTS_PER_MESSAGE`]; false when the stream is gone (the events
/// not sent go back to the board for the next session).
async fn send_status(ctx: &Context, tx: &mpsc::Sender<AgentMessage>, sent_seq: &mut u64) -> bool {
    let (statuses, seq, events) = ctx.board.changes(*sent_seq);
    let (mut events, mut statuses) = (events.into_iter(), statuses.into_iter());
    loop {
        let batch_events: Vec<_> = events.by_ref().take(REPORTS_PER_MESSAGE).collect();
        let room = REPORTS_PER_MESSAGE - batch_events.len();
        let batch_statuses: Vec<_> = statuses.by_ref().take(room).collect();
        if batch_events.is_empty() && batch_statuses.is_empty() {
            break;
        }
        let sent = tx
            .send(AgentMessage {
                body: Some(AgentBody::Reports(Reports {
                    statuses: batch_statuses,
                    events: batch_events,
                })),
            })
            .await;
        if let Err(mpsc::error::SendError(msg)) = sent {
            let mut rest = match msg.body {
                Some(AgentBody::Reports(r)) => r.events,
                _ => Vec::new(),
            };
            rest.extend(events);
            ctx.board.requeue(rest);
            return false;
        }
    }
    *sent_seq = seq;
    true
}
