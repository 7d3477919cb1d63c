//! The `corral.` DNS zone: which question names what, and the records that answer it.
//! Pure functions over a name's list, so every case is tested without a socket.
//!
//! | question | answer |
//! | --- | --- |
//! | `ADAPTER.SERVER.APP.corral.` A/AAAA | the healthy endpoints' addresses, rotated per answer |
//! | `_ADAPTER._tcp.SERVER.APP.corral.` SRV | one record per endpoint (priority 1, its weight and port, target `NODE.ADAPTER.SERVER.APP.corral.`), the targets' addresses as additional records |
//! | `NODE.ADAPTER.SERVER.APP.corral.` A/AAAA | that node's endpoint |
//!
//! A name no server has is NXDOMAIN; a known name with no healthy endpoint (or none of
//! the type asked for) is an empty NOERROR; both carry the zone's SOA, whose minimum is
//! the TTL, so resolvers cache the negative answer as long as a positive one. Names are
//! matched without regard to case.

use std::net::IpAddr;

use corral_proto::v1::Endpoint;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};

/// The zone Corral answers for.
pub const ZONE: &str = "corral";

/// What a question's name refers to.
#[derive(Debug, PartialEq, Eq)]
pub enum Question {
    /// `corral.` itself.
    Apex,
    /// `ADAPTER.SERVER.APP.corral.`: the service `app.server.adapter` (lower case).
    Service(String),
    /// `_ADAPTER._tcp.SERVER.APP.corral.`
    Srv(String),
    /// `NODE.ADAPTER.SERVER.APP.corral.`: one node's endpoint of a service.
    Instance { node: String, service: String },
    /// Under `corral.` but nothing Corral names.
    NoSuchName,
    /// Not in the `corral.` zone.
    NotOurs,
}

/// Reads a question's labels (lower case, without the root).
pub fn question(labels: &[&str]) -> Question {
    let Some((last, rest)) = labels.split_last() else {
        return Question::NotOurs;
    };
    if *last != ZONE {
        return Question::NotOurs;
    }
    let service = |adapter: &str, server: &str, app: &str| format!("{app}.{server}.{adapter}");
    match rest {
        [] => Question::Apex,
        [adapter, server, app] if !adapter.starts_with('_') => {
            Question::Service(service(adapter, server, app))
        }
        [adapter, proto, server, app] if adapter.len() > 1 && adapter.starts_with('_') => {
            if *proto == "_tcp" {
                Question::Srv(service(&adapter[1..], server, app))
            } else {
                Question::NoSuchName
            }
        }
        [node, adapter, server, app] if !node.starts_with('_') && !adapter.starts_with('_') => {
            Question::Instance {
                node: (*node).to_string(),
                service: service(adapter, server, app),
            }
        }
        _ => Question::NoSuchName,
    }
}

/// An answer: its code and its sections.
#[derive(Debug, Default)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// The SOA of the zone, as the authority of negative answers.
pub fn soa(ttl: u32) -> Option<Record> {
    let zone = Name::from_ascii("corral.").ok()?;
    let soa = SOA::new(
        Name::from_ascii("ns.corral.").ok()?,
        Name::from_ascii("hostmaster.corral.").ok()?,
        1,
        3600,
        600,
        86400,
        ttl,
    );
    Some(Record::from_rdata(zone, ttl, RData::SOA(soa)))
}

impl Answer {
    /// NXDOMAIN with the SOA.
    pub fn nxdomain(ttl: u32) -> Answer {
        Answer {
            code: ResponseCode::NXDomain,
            authority: soa(ttl).into_iter().collect(),
            ..Answer::default()
        }
    }

    /// An empty NOERROR (the name exists, nothing of that type) with the SOA.
    pub fn nodata(ttl: u32) -> Answer {
        Answer {
            code: ResponseCode::NoError,
            authority: soa(ttl).into_iter().collect(),
            ..Answer::default()
        }
    }

    pub fn code(code: ResponseCode) -> Answer {
        Answer {
            code,
            ..Answer::default()
        }
    }
}

fn address(name: &Name, ip: IpAddr, ttl: u32) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, rdata)
}

/// Whether an address answers a question of type `t`.
fn wanted(ip: &IpAddr, t: RecordType) -> bool {
    matches!(
        (ip, t),
        (IpAddr::V4(_), RecordType::A | RecordType::ANY)
            | (IpAddr::V6(_), RecordType::AAAA | RecordType::ANY)
    )
}

/// The A/AAAA records of `eps` for `name`, starting at `rotate` (mod their count).
pub fn addresses(name: &Name, eps: &[Endpoint], t: RecordType, ttl: u32, rotate: usize) -> Answer {
    let mut ips: Vec<IpAddr> = Vec::with_capacity(eps.len());
    for ip in eps.iter().filter_map(|e| e.host.parse::<IpAddr>().ok()) {
        if wanted(&ip, t) && !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        return Answer::nodata(ttl);
    }
    let shift = rotate % ips.len();
    ips.rotate_left(shift);
    Answer {
        answers: ips.into_iter().map(|ip| address(name, ip, ttl)).collect(),
        ..Answer::default()
    }
}

/// The SRV records of `eps` for `name` (`_adapter._tcp.server.app.corral.`), with the
/// targets' addresses as additional records, starting at `rotate`.
pub fn srv(name: &Name, eps: &[Endpoint], t: RecordType, ttl: u32, rotate: usize) -> Answer {
    if !matches!(t, RecordType::SRV | RecordType::ANY) || eps.is_empty() {
        return Answer::nodata(ttl);
    }
    // _adapter._tcp.server.app.corral. -> adapter.server.app.corral.
    let labels: Vec<String> = name
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    let base = match labels.as_slice() {
        [adapter, _, rest @ ..] => format!("{}.{}.", &adapter[1..], rest.join(".")),
        _ => return Answer::nodata(ttl),
    };
    let mut out = Answer::default();
    let shift = rotate % eps.len();
    for e in eps[shift..].iter().chain(&eps[..shift]) {
        let port = u16::try_from(e.port).unwrap_or(0);
        let weight = u16::try_from(e.weight).unwrap_or(u16::MAX);
        let (target, ip) = match e.host.parse::<IpAddr>() {
            Ok(ip) => (Name::from_ascii(format!("{}.{base}", e.node)), Some(ip)),
            // An external service named by host name: that name is the target.
            Err(_) => (Name::from_ascii(format!("{}.", e.host)), None),
        };
        let Ok(target) = target else {
            continue;
        };
        out.answers.push(Record::from_rdata(
            name.clone(),
            ttl,
            RData::SRV(SRV::new(1, weight, port, target.clone())),
        ));
        if let Some(ip) = ip {
            out.additionals.push(address(&target, ip, ttl));
        }
    }
    out
}

/// The answer for a service whose list is `eps` (None: no server has it).
pub fn answer(
    q: &Question,
    name: &Name,
    eps: Option<&[Endpoint]>,
    t: RecordType,
    ttl: u32,
    rotate: usize,
) -> Answer {
    let Some(eps) = eps else {
        return Answer::nxdomain(ttl);
    };
    match q {
        Question::Service(_) => addresses(name, eps, t, ttl, rotate),
        Question::Srv(_) => srv(name, eps, t, ttl, rotate),
        Question::Instance { node, .. } => {
            let mine: Vec<Endpoint> = eps
                .iter()
                .filter(|e| e.node.eq_ignore_ascii_case(node))
                .cloned()
                .collect();
            if mine.is_empty() {
                Answer::nxdomain(ttl)
            } else {
                addresses(name, &mine, t, ttl, 0)
            }
        }
        Question::Apex if matches!(t, RecordType::SOA | RecordType::ANY) => Answer {
            answers: soa(ttl).into_iter().collect(),
            ..Answer::default()
        },
        Question::Apex => Answer::nodata(ttl),
        Question::NoSuchName => Answer::nxdomain(ttl),
        Question::NotOurs => Answer::code(ResponseCode::Refused),
    }
}

#[cfg(test)]
mod tests;
