//! The end-to-end test harness: real `registry` and `agent` processes on loopback.
//!
//! Fixtures own their temp dirs and kill their process groups on `Drop`, so a failing
//! test leaves nothing running. Waiting is always polling with a deadline.

pub mod db;
pub mod packages;
pub mod procs;

pub use db::{Backend, TestDb};
pub use procs::{Agent, Registry, bin, free_port, kill_services};

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
