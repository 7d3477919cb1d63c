//! The UDP side of the agent's DNS. Every question is answered from encoded answers kept
//! per (name, type, buffer size): an answer is encoded (with hickory) once per change of
//! the name's list, in every rotation of its records, and each question then costs a
//! parse of its header and question, a map lookup and a copy, with the question's id,
//! RD bit and spelling put into the copy. A question this path does not take (several
//! questions, EDNS options it cannot skip, a name asked for the first time) goes to the
//! full handler ([`super::dns::Dns`]) in a task of its own. The socket is read and
//! written in batches ([`batch`]): every question waiting in one system call, and their
//! answers in one more.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hickory_server::net::NetError;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_server::proto::rr::{Name, Record, RecordType};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::net::UdpSocket;
use tracing::debug;

use super::State;
use super::answer::{self, Question};
use super::dns::{Dns, MAX_UDP_PAYLOAD};

/// Encoded answers kept at most; past this the map starts again (names asked for once
/// must not grow it for ever).
const MAX_ENCODED: usize = 10_000;
/// Rotations kept per answer: with more records, answers start at one of the first 64.
const MAX_ROTATIONS: usize = 64;

/// One question, read without copying.
struct Parsed<'a> {
    /// Lower-case name in wire form, the type and the buffer size: the map's key.
    key: Vec<u8>,
    /// The question as sent (name, type, class): copied into the answer.
    question: &'a [u8],
    labels: Vec<String>,
    qtype: RecordType,
    /// The client's UDP buffer; None without EDNS.
    edns: Option<u16>,
}

/// Reads a plain query: one question of class IN, no records but an optional OPT
/// (version 0; its options are skipped). None for anything else.
fn parse(q: &[u8]) -> Option<Parsed<'_>> {
    if q.len() < 17 || q[2] & 0xf8 != 0 {
        return None; // a response, or not a QUERY
    }
    let count = |i: usize| u16::from_be_bytes([q[i], q[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    let mut at = 12;
    let mut key = Vec::with_capacity(64);
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(at)?);
        if len & 0xc0 != 0 || key.len() + len > 255 {
            return None; // no compression in a question
        }
        key.push(len as u8);
        at += 1;
        if len == 0 {
            break;
        }
        let label = q.get(at..at + len)?.to_ascii_lowercase();
        key.extend_from_slice(&label);
        labels.push(String::from_utf8(label).ok()?);
        at += len;
    }
    let fixed = q.get(at..at + 4)?;
    if fixed[2..4] != [0, 1] {
        return None; // class IN only
    }
    let qtype = RecordType::from(u16::from_be_bytes([fixed[0], fixed[1]]));
    let question = &q[12..at + 4];
    at += 4;
    let edns = if count(10) == 1 {
        // OPT: root name, type 41, class = payload size, TTL = rcode/version/flags.
        let opt = q.get(at..at + 11)?;
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[6] != 0 || q.len() != at + 11 + rdlen {
            return None;
        }
        Some(u16::from_be_bytes([opt[3], opt[4]]))
    } else if at == q.len() {
        None
    } else {
        return None;
    };
    let limit = edns.map_or(512, |p| p.clamp(512, MAX_UDP_PAYLOAD));
    key.extend_from_slice(&u16::from(qtype).to_be_bytes());
    key.extend_from_slice(&limit.to_be_bytes());
    key.push(u8::from(edns.is_some()));
    Some(Parsed {
        key,
        question,
        labels,
        qtype,
        edns,
    })
}

/// An answer encoded in every rotation, for one snapshot of its name's list.
struct Encoded {
    /// The name whose list it was made from (None: it depends on no list).
    service: Option<String>,
    index: u64,
    rotations: Vec<Vec<u8>>,
    next: AtomicUsize,
}

/// Encodes `found` as the answer to `question` (id 0, RD clear: patched per query).
fn encode(
    question: Query,
    found: answer::Answer,
    edns: Option<u16>,
    limit: u16,
) -> Result<Vec<u8>, hickory_server::proto::ProtoError> {
    let mut m = Message::new(0, MessageType::Response, OpCode::Query);
    m.metadata.authoritative = true;
    m.metadata.response_code = found.code;
    m.add_query(question);
    m.add_answers(found.answers);
    m.add_authorities(found.authority);
    m.add_additionals(found.additionals);
    if edns.is_some() {
        let mut ours = Edns::new();
        ours.set_max_payload(limit);
        m.set_edns(ours);
    }
    let mut buf = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(limit);
    hickory_server::proto::serialize::binary::BinEncodable::emit(&m, &mut encoder)?;
    Ok(buf)
}

/// The UDP loop's state: the handler and the encoded answers.
pub struct Udp {
    pub dns: Arc<Dns>,
    encoded: Mutex<HashMap<Vec<u8>, Arc<Encoded>>>,
}

impl Udp {
    pub fn new(dns: Arc<Dns>) -> Udp {
        Udp {
            dns,
            encoded: Mutex::default(),
        }
    }

    /// The answer to `query` from the encoded ones, made if missing or stale; None when
    /// the full handler must answer.
    fn fast(&self, query: &[u8]) -> Option<Vec<u8>> {
        let p = parse(query)?;
        let hit = self
            .encoded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&p.key)
            .cloned();
        let current = |e: &Encoded| match &e.service {
            None => true,
            Some(s) => self
                .dns
                .cache
                .peek(s, true)
                .is_some_and(|snap| snap.index == e.index),
        };
        let encoded = match hit {
            Some(e) if current(&e) => e,
            _ => self.build(&p)?,
        };
        let n = encoded.next.fetch_add(1, Ordering::Relaxed) % encoded.rotations.len();
        let mut out = encoded.rotations[n].clone();
        let qlen = p.question.len();
        if out.len() < 12 + qlen {
            return None;
        }
        out[0..2].copy_from_slice(&query[0..2]);
        out[2] = (out[2] & !0x01) | (query[2] & 0x01);
        out[12..12 + qlen].copy_from_slice(p.question);
        Some(out)
    }

    /// Encodes the answer to `p` in each rotation and keeps it; None when the name's
    /// list is not there yet (the full handler waits for it).
    fn build(&self, p: &Parsed<'_>) -> Option<Arc<Encoded>> {
        let labels: Vec<&str> = p.labels.iter().map(String::as_str).collect();
        let q = answer::question(&labels);
        let name = Name::from_ascii(format!("{}.", labels.join("."))).ok()?;
        let ttl = self.dns.ttl;
        let service = match &q {
            Question::Service(s) | Question::Srv(s) => Some(s.clone()),
            Question::Instance { service, .. } => Some(service.clone()),
            _ => None,
        };
        let (index, eps): (u64, Option<Arc<Vec<_>>>) = match &service {
            None => (0, Some(Arc::new(Vec::new()))),
            Some(s) => {
                let snap = self.dns.cache.peek(s, true)?;
                match snap.state {
                    State::Known(eps) => (snap.index, Some(eps)),
                    State::Unknown => (snap.index, None),
                    State::Pending => return None,
                }
            }
        };
        let count = match (&q, &eps) {
            (Question::Service(_) | Question::Srv(_), Some(eps)) => eps.len().max(1),
            _ => 1,
        };
        let limit = u16::from_be_bytes([p.key[p.key.len() - 3], p.key[p.key.len() - 2]]);
        let mut rotations = Vec::new();
        for k in 0..count.min(MAX_ROTATIONS) {
            let found = answer::answer(
                &q,
                &name,
                eps.as_deref().map(Vec::as_slice),
                p.qtype,
                ttl,
                k,
            );
            let question = Query::query(name.clone(), p.qtype);
            match encode(question, found, p.edns, limit) {
                Ok(bytes) => rotations.push(bytes),
                Err(e) => {
                    debug!(cause = %e, "DNS: cannot encode an answer; the full handler answers");
                    return None;
                }
            }
        }
        let encoded = Arc::new(Encoded {
            service,
            index,
            rotations,
            next: AtomicUsize::new(0),
        });
        let mut map = self.encoded.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_ENCODED {
            map.clear();
        }
        map.insert(p.key.clone(), encoded.clone());
        Some(encoded)
    }
}

/// Answers UDP questions on `socket` for ever; `udp` is shared by the loops. Questions
/// are read and answered in batches ([`batch`]): every question waiting is read at once,
/// and the answers of the fast path go out together.
pub async fn serve(udp: Arc<Udp>, socket: Arc<UdpSocket>) {
    let mut io = batch::Batch::default();
    let mut answers = Vec::with_capacity(batch::BATCH);
    loop {
        let n = match io.receive(&socket).await {
            Ok(n) => n,
            Err(e) => {
                debug!(cause = %e, "DNS: UDP receive failed");
                continue;
            }
        };
        for i in 0..n {
            let Some((query, from)) = io.question(i) else {
                continue;
            };
            match udp.fast(query) {
                Some(answer) => answers.push((answer, from)),
                None => {
                    let Some(from) = batch::std_addr(&from) else {
                        continue;
                    };
                    let raw = query.to_vec();
                    let (udp, socket) = (udp.clone(), socket.clone());
                    tokio::spawn(async move { full(&udp.dns, raw, from, socket).await });
                }
            }
        }
        batch::send(&socket, &answers).await;
        answers.clear();
    }
}

/// The full handler, for what the fast path does not take.
async fn full(dns: &Dns, raw: Vec<u8>, from: SocketAddr, socket: Arc<UdpSocket>) {
    let Ok(request) = Request::from_bytes(raw, from, Protocol::Udp) else {
        return; // not even a header: no answer, as hickory's own loop does
    };
    dns.handle_request::<Reply, hickory_server::net::runtime::TokioTime>(
        &request,
        Reply { socket, to: from },
    )
    .await;
}

/// Sends one answer of the full handler on the UDP socket, cut to the client's buffer.
#[derive(Clone)]
struct Reply {
    socket: Arc<UdpSocket>,
    to: SocketAddr,
}

#[tonic::async_trait]
impl ResponseHandler for Reply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let limit = response.edns().map_or(512, Edns::max_payload);
        let mut buf = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_max_size(limit);
        let info = response.destructive_emit(&mut encoder)?;
        self.socket.send_to(&buf, self.to).await?;
        Ok(info)
    }
}

mod batch;
#[cfg(test)]
mod tests;
