//! The end-to-end test harness: real `registry` and `agent` processes on loopback.
//!
//! Fixtures own their temp dirs and kill their process groups on `Drop`, so a failing
//! test leaves nothing running. Waiting is always polling with a deadline.

pub mod browser;
pub mod cgroups;
pub mod db;
pub mod exits;
pub mod fleet;
pub mod lookup;
pub mod packages;
pub mod procs;
pub mod proxy;
pub mod secrets;
pub mod sim;

pub use db::{Backend, TestDb};
pub use procs::{
    Agent, Registry, RespawnedAgent, bin, free_port, kill_services, start_on_free_ports,
};

use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` naming
/// `what` and the last thing `describe` said.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    let mut last;
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` loopback addresses of a /24 of their own (127.R.S.2, .3, ...), so tests that
/// run at the same time never share the ports of a node address.
pub fn test_ips(n: usize) -> Vec<String> {
    let (r, s) = (rand::random_range(10..250u8), rand::random_range(1..250u8));
    (0..n).map(|i| format!("127.{r}.{s}.{}", i + 2)).collect()
}

/// Live (not zombie) processes whose command line contains `marker`: to count copies.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(marker)
                && alive(*pid)
        })
        .collect()
}

/// Whether `pid` is a live process (a zombie has ended).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Checks what every service process starts with: leader of its own session and process
/// group, stdin on /dev/null, no signal blocked and SIGPIPE not ignored (the agent, being
/// a Rust program, ignores it itself). Panics naming what is wrong.
pub fn assert_service_process(pid: u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    // After the command name: state, ppid, pgrp, session.
    assert_eq!(
        fields[2],
        pid.to_string(),
        "pid {pid} leads its process group: {stat}"
    );
    assert_eq!(
        fields[3],
        pid.to_string(),
        "pid {pid} leads its session: {stat}"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let mask = |name: &str| {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {status}"));
        u64::from_str_radix(line[name.len()..].trim(), 16).expect("hex mask")
    };
    assert_eq!(mask("SigBlk:"), 0, "pid {pid} blocks no signal");
    let sigpipe = 1u64 << (nix::libc::SIGPIPE - 1);
    assert_eq!(
        mask("SigIgn:") & sigpipe,
        0,
        "pid {pid} does not ignore SIGPIPE"
    );
    let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).expect("fd 0");
    assert_eq!(
        stdin,
        std::path::Path::new("/dev/null"),
        "pid {pid}'s stdin"
    );
}

/// The one element of a JSON array whose `key` equals `value`.
pub fn find<'a>(
    list: &'a serde_json::Value,
    key: &str,
    value: &str,
) -> Option<&'a serde_json::Value> {
    list.as_array()?.iter().find(|v| v[key] == value)
}

/// Runs the same test body once per backend: `backend_tests!(body_fn, ...)` makes
/// `body_fn::sqlite` and `body_fn::mysql`, each calling `body_fn(backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($body:ident),* $(,)?) => {
        $(
            mod $body {
                #[test]
                fn sqlite() {
                    super::$body($crate::Backend::Sqlite);
                }
                #[test]
                fn mysql() {
                    super::$body($crate::Backend::MySql);
                }
            }
        )*
    };
}

/// A plain HTTP/1.1 GET; the body when the answer is 200.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<String, String> {
    let (status, head, body) = http_get_any(addr, path)?;
    if status == 200 {
        Ok(body)
    } else {
        Err(format!("GET {path}: {head}"))
    }
}

/// A plain HTTP/1.1 GET; the status code, the status line and the body, whatever the
/// status.
pub fn http_get_any(
    addr: std::net::SocketAddr,
    path: &str,
) -> Result<(u16, String, String), String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP answer: {answer:?}"))?;
    let status_line = head.lines().next().unwrap_or_default().to_string();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {status_line:?}"))?;
    Ok((status, status_line, body.to_string()))
}
