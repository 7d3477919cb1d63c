//! The agent's DNS server for the `corral.` zone (hickory-server), on UDP and TCP at the
//! same address (default `127.0.0.1:8600`), answered from the watch cache
//! ([`super::answer`] says what each name means). TCP is hickory's server with the
//! handler below; UDP answers from encoded answers ([`super::dns_udp`]) and hands the
//! rest to the same handler.
//!
//! Over UDP an answer is cut to the client's buffer (512 bytes without EDNS) with the TC
//! bit set, so the client asks again over TCP and gets all of it. A name asked for the
//! first time waits for the registry (up to [`super::cache::FIRST_ANSWER`]); SERVFAIL if
//! none answers by then. Questions outside `corral.` are REFUSED: this is no recursor.

use std::iter;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{Name, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::answer::{self, Answer, Question};
use super::cache::Cache;
use super::dns_udp::Udp;
use super::{LookupError, State};

/// The largest UDP answer, whatever buffer a client offers (the DNS flag day's 1232
/// bytes: no fragmentation on any common path).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Tasks answering on the UDP socket at once. One: an answer costs about a microsecond
/// besides its share of the system calls (one read and one send per batch of questions),
/// and a second loop on the same socket only adds contention (measured on 2 cores: p99
/// 0.13 ms with one, 0.4 ms with two).
const UDP_LOOPS: usize = 1;
/// A TCP connection that sends no query for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Binds UDP and TCP on the same address. With port 0, TCP picks a free port and UDP
/// takes the same one (trying again if that one is taken for UDP).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        let tcp = TcpListener::bind(addr).await?;
        let udp = UdpSocket::bind(addr).await?;
        return Ok((udp, tcp));
    }
    let mut last = std::io::Error::other("no port was free for both UDP and TCP");
    for _ in 0..20 {
        let tcp = TcpListener::bind(addr).await?;
        match UdpSocket::bind(tcp.local_addr()?).await {
            Ok(udp) => return Ok((udp, tcp)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Answers DNS questions from the cache.
pub struct Dns {
    pub(super) cache: Arc<Cache>,
    pub(super) ttl: u32,
    /// Moves on every answer: where the next list of addresses starts.
    rotate: AtomicUsize,
}

/// Serves DNS on the bound sockets until `shutdown`.
pub async fn serve(
    cache: Arc<Cache>,
    (udp, tcp): (UdpSocket, TcpListener),
    ttl: Duration,
    shutdown: CancellationToken,
) {
    let addr = udp
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    let dns = Arc::new(Dns {
        cache,
        ttl: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
        rotate: AtomicUsize::new(0),
    });
    let mut server = Server::new(Shared(dns.clone()));
    server.register_listener(tcp, TCP_IDLE, 64);
    let fast = Arc::new(Udp::new(dns));
    let socket = Arc::new(udp);
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..UDP_LOOPS {
        loops.spawn(super::dns_udp::serve(fast.clone(), socket.clone()));
    }
    info!(dns = %addr, "DNS serving the corral. zone (UDP and TCP)");
    tokio::select! {
        () = shutdown.cancelled() => {
            if let Err(e) = server.shutdown_gracefully().await {
                warn!(cause = %e, "DNS server stopped with an error");
            }
        }
        result = server.block_until_done() => {
            if let Err(e) = result {
                warn!(cause = %e, "DNS server stopped");
            }
        }
    }
    loops.shutdown().await;
}

/// The handler as hickory's TCP server holds it, shared with the UDP loops.
struct Shared(Arc<Dns>);

#[tonic::async_trait]
impl RequestHandler for Shared {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        self.0.handle_request::<R, T>(request, response).await
    }
}

impl Dns {
    /// The answer to one question.
    async fn answer(&self, labels: &[&str], name: &Name, t: RecordType) -> Answer {
        let q = answer::question(labels);
        let service = match &q {
            Question::Service(s) | Question::Srv(s) => s,
            Question::Instance { service, .. } => service,
            _ => return answer::answer(&q, name, Some(&[]), t, self.ttl, 0),
        };
        let rotate = self.rotate.fetch_add(1, Ordering::Relaxed);
        match self.cache.snapshot(service, true).await {
            Ok(snap) => match &snap.state {
                State::Known(eps) => answer::answer(&q, name, Some(eps), t, self.ttl, rotate),
                State::Unknown => Answer::nxdomain(self.ttl),
                State::Pending => Answer::code(ResponseCode::ServFail),
            },
            Err(LookupError::NotFound(_) | LookupError::BadName(_)) => Answer::nxdomain(self.ttl),
            Err(LookupError::Unavailable(_)) => Answer::code(ResponseCode::ServFail),
        }
    }
}

#[tonic::async_trait]
impl RequestHandler for Dns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = false;
        let edns = request.edns.as_ref().map(|theirs| {
            let mut ours = Edns::new();
            ours.set_max_payload(theirs.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            ours
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let found = match request.request_info() {
            Err(_) => Answer::code(ResponseCode::FormErr),
            Ok(_) if request.metadata.op_code != OpCode::Query => {
                Answer::code(ResponseCode::NotImp)
            }
            Ok(info) => {
                let lower = info.query.name();
                let labels: Vec<&str> = lower
                    .iter()
                    .map(|l| std::str::from_utf8(l).unwrap_or("\u{fffd}"))
                    .collect();
                let name = info.query.original().name().clone();
                self.answer(&labels, &name, info.query.query_type()).await
            }
        };
        metadata.response_code = found.code;
        let message = builder.build(
            metadata,
            found.answers.iter(),
            found.authority.iter(),
            iter::empty(),
            found.additionals.iter(),
        );
        match response.send_response(message).await {
            Ok(info) => info,
            Err(e) => {
                warn!(cause = %e, "DNS: cannot send an answer");
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: failed,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
