//! Discovery as clients see it: HTTP requests with headers, a server-sent-events reader,
//! `dig` against an agent's DNS, and where an agent serves HTTP and DNS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{Agent, wait_until};

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// `X-Corral-Index`, which every list answer carries.
    pub fn index(&self) -> u64 {
        self.header("x-corral-index")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no X-Corral-Index in {self:?}"))
    }
}

fn request(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut text = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    stream
        .write_all(text.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    Ok(stream)
}

fn head(reader: &mut impl BufRead) -> Result<(u16, Vec<(String, String)>), String> {
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .map_err(|e| e.to_string())?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let line = line.trim_end();
        if line.is_empty() {
            return Ok((status, headers));
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
}

/// A GET with extra headers; the whole answer (chunked bodies are joined).
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
    send(addr, path, headers)?.answer()
}

/// A request sent, its answer not read yet (a blocking query on its way).
pub struct Pending(TcpStream);

/// Sends a GET; [`Pending::answer`] reads what comes back.
pub fn send(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Pending, String> {
    request(addr, path, headers).map(Pending)
}

impl Pending {
    pub fn answer(self) -> Result<Answer, String> {
        let addr = self.0.peer_addr().map_err(|e| e.to_string())?;
        read_answer(addr, self.0)
    }
}

fn read_answer(addr: SocketAddr, stream: TcpStream) -> Result<Answer, String> {
    let mut reader = BufReader::new(stream);
    let (status, headers) = head(&mut reader)?;
    let mut raw = String::new();
    reader
        .read_to_string(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { unchunk(&raw) } else { raw };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn unchunk(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// One server-sent event.
#[derive(Debug, Default, Clone)]
pub struct Event {
    pub event: String,
    pub id: String,
    pub data: String,
}

/// A server-sent-events stream being read.
pub struct Events {
    reader: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Events {
    pub fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Events, String> {
        let stream = request(addr, path, headers)?;
        let mut reader = BufReader::new(stream);
        let (status, headers) = head(&mut reader)?;
        Ok(Events {
            reader,
            status,
            headers,
        })
    }

    /// The next event (comments and keep-alives skipped); Err on timeout or end.
    pub fn next(&mut self, timeout: Duration) -> Result<Event, String> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let mut event = Event::default();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| format!("no event within {timeout:?}: {e}"))?;
            if n == 0 {
                return Err("the stream ended".into());
            }
            let line = line.trim_end_matches(['\r', '\n']);
            // A chunk-size line of the chunked encoding: not part of the stream.
            if !line.is_empty() && line.chars().all(|c| c.is_ascii_hexdigit()) {
                continue;
            }
            if line.is_empty() {
                if !event.event.is_empty() || !event.data.is_empty() {
                    return Ok(event);
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("event:") {
                event.event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("id:") {
                event.id = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                event.data.push_str(v.trim_start());
            }
        }
    }
}

/// The agent's HTTP address, from the run record it writes in its data dir.
pub fn agent_http(agent: &Agent) -> SocketAddr {
    let path = agent.data_dir.join("agent.run.json");
    wait_until("the agent's run record", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        v["http"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("no HTTP address in {v}"))
    })
}

/// Where the agent serves DNS, from its `/health`.
pub fn agent_dns(agent: &Agent) -> SocketAddr {
    let http = agent_http(agent);
    wait_until("the agent's DNS address", Duration::from_secs(20), || {
        let health = get(http, "/health", &[])?.json();
        health["dns"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("no DNS address in {health}"))
    })
}

/// Runs `dig` against `server` with `args`; its standard output.
pub fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=5", "+tries=1"])
        .args(args)
        .output()
        .expect("run dig (Debian's dnsutils; scripts/deps.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dig {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The records of dig's answer section with `+noall +answer` (or another section):
/// each line split into its fields.
pub fn records(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The status (`NOERROR`, `NXDOMAIN`, ...) and flags of a full dig output.
pub fn status_and_flags(text: &str) -> (String, String) {
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_default()
        .to_string();
    let flags = text
        .split(";; flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or_default()
        .to_string();
    (status, flags)
}
