//! Health checks: tcp (connect to the adapter's port), http (GET a path on it, 2xx) and
//! exec (a command exits 0), run by the agent every interval while an instance runs.
//!
//! The verdict turns `healthy` after `healthy_after` successes in a row and `unhealthy`
//! after `unhealthy_after` failures in a row; failures during `start_period` after the
//! start do not count. After `restart_after` failures in a row (if set) the runner
//! restarts the instance.
//!
//! A failed probe says why, shortly, for `server status` and the events: the HTTP status
//! ("GET /health: HTTP 503 Service Unavailable"), the connection error ("connect to
//! 10.0.0.1:20001: connection refused"), a timeout, or an exec check's exit and the last
//! line of its output.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use corral_proto::v1::HealthCheck;
use http_body_util::Empty;
use hyper::body::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Unknown,
    Healthy,
    Unhealthy,
}

/// Where and how to probe one instance.
#[derive(Clone, Debug)]
pub struct Target {
    pub check: HealthCheck,
    /// Host and port for tcp and http checks.
    pub addr: Option<(String, u16)>,
    pub exec: Option<ExecCheck>,
}

/// The command of an exec check.
#[derive(Clone, Debug)]
pub struct ExecCheck {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
}

/// The results a checker sends its runner.
pub type Results = mpsc::Receiver<Result<(), String>>;

/// The counters and verdict of an instance's checks.
#[derive(Debug)]
pub struct Health {
    check: Option<HealthCheck>,
    started: Instant,
    successes: u32,
    failures: u32,
    pub verdict: Verdict,
    /// Why the last probe failed; cleared when one passes.
    pub last_error: String,
}

/// What one probe result means for the runner.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub changed: bool,
    pub restart: bool,
}

impl Health {
    pub fn new(check: Option<HealthCheck>) -> Health {
        Health {
            check,
            started: Instant::now(),
            successes: 0,
            failures: 0,
            verdict: Verdict::Unknown,
            last_error: String::new(),
        }
    }

    /// "" without a check, else the verdict.
    pub fn report(&self) -> &'static str {
        match (&self.check, self.verdict) {
            (None, _) => "",
            (_, Verdict::Unknown) => "unknown",
            (_, Verdict::Healthy) => "healthy",
            (_, Verdict::Unhealthy) => "unhealthy",
        }
    }

    /// Why the instance is not healthy, as far as the checks tell: the cause of the last
    /// failed probe while the verdict is not `healthy`; "" without a check, once healthy,
    /// and once a probe passes.
    pub fn report_error(&self) -> &str {
        match (&self.check, self.verdict) {
            (None, _) | (_, Verdict::Healthy) => "",
            _ => &self.last_error,
        }
    }

    /// A new process started (or the check changed): counting starts over.
    pub fn restart(&mut self, check: Option<HealthCheck>, started: Instant) {
        *self = Health::new(check);
        self.started = started;
    }

    pub fn record(&mut self, result: Result<(), String>, now: Instant) -> Outcome {
        let Some(check) = &self.check else {
            return Outcome {
                changed: false,
                restart: false,
            };
        };
        let before = self.verdict;
        match result {
            Ok(()) => {
                self.last_error.clear();
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                if self.successes >= check.healthy_after.max(1) {
                    self.verdict = Verdict::Healthy;
                }
            }
            Err(e) => {
                // Shown while the verdict is still unknown, but not counted yet.
                self.last_error = e;
                if now.duration_since(self.started) < Duration::from_millis(check.start_period_ms) {
                    return Outcome {
                        changed: false,
                        restart: false,
                    };
                }
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                if self.failures >= check.unhealthy_after.max(1) {
                    self.verdict = Verdict::Unhealthy;
                }
            }
        }
        let restart = check.restart_after > 0 && self.failures >= check.restart_after;
        if restart {
            self.failures = 0;
        }
        Outcome {
            changed: self.verdict != before,
            restart,
        }
    }
}

/// The reason of a health event: what the verdict changed to and why.
pub fn change_event(now: &Health) -> String {
    match now.verdict {
        Verdict::Healthy => "check passed".to_string(),
        _ if now.last_error.is_empty() => "check failed".to_string(),
        _ => now.last_error.clone(),
    }
}

/// Probes every interval and sends each result; ends when the receiver is gone.
pub fn spawn(target: Target, tx: mpsc::Sender<Result<(), String>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let interval = Duration::from_millis(target.check.interval_ms.max(10));
        let timeout = Duration::from_millis(target.check.timeout_ms.max(1));
        loop {
            let result = match tokio::time::timeout(timeout, probe(&target)).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "{} check timed out after {}",
                    target.check.kind,
                    humantime::format_duration(timeout)
                )),
            };
            if tx.send(result).await.is_err() {
                return;
            }
            tokio::time::sleep(interval).await;
        }
    })
}

async fn probe(t: &Target) -> Result<(), String> {
    match t.check.kind.as_str() {
        "tcp" => {
            let (host, port) = t.addr.as_ref().ok_or("no address to check")?;
            TcpStream::connect((host.as_str(), *port))
                .await
                .map(|_| ())
                .map_err(|e| format!("connect to {host}:{port}: {}", io_cause(&e)))
        }
        "http" => {
            let (host, port) = t.addr.as_ref().ok_or("no address to check")?;
            http_get(host, *port, &t.check.path).await
        }
        "exec" => run_exec(t.exec.as_ref().ok_or("no command to run")?).await,
        other => Err(format!("unknown check kind {other:?}")),
    }
}

/// The usual connection errors in words ("connection refused"), others as they come.
fn io_cause(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        TimedOut => "timed out".into(),
        HostUnreachable => "host unreachable".into(),
        NetworkUnreachable => "network unreachable".into(),
        AddrNotAvailable => "address not available".into(),
        _ => e.to_string(),
    }
}

/// How much of an exec check's output is kept: its end, for the last line.
const OUTPUT_TAIL: usize = 4096;
/// The longest last line reported.
const MAX_LINE: usize = 200;

/// How long an exec check's output is still read after it exited, when something it
/// started keeps the pipe open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(100);

/// Runs an exec check with stdout and stderr in one pipe; on failure, says how it ended
/// and the last line it printed.
async fn run_exec(exec: &ExecCheck) -> Result<(), String> {
    let ExecCheck {
        program,
        args,
        cwd,
        env,
    } = exec;
    let name = program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let cannot = |e: std::io::Error| format!("cannot run {}: {e}", program.display());
    let (reader, writer) = std::io::pipe().map_err(cannot)?;
    let mut child = {
        // The command (and its copies of the pipe's write end) is gone once spawned, so
        // the pipe ends when the check's processes have closed it.
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(std::process::Stdio::null())
            .stdout(writer.try_clone().map_err(cannot)?)
            .stderr(writer)
            .kill_on_drop(true);
        cmd.spawn().map_err(cannot)?
    };
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into()).map_err(cannot)?;
    let mut tail = Vec::new();
    let mut buf = [0u8; 4096];
    let mut open = true;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            n = rx.read(&mut buf), if open => match n {
                Ok(n) if n > 0 => keep_tail(&mut tail, &buf[..n]),
                _ => open = false,
            },
        }
    }
    .map_err(|e| format!("cannot wait for {name}: {e}"))?;
    // What it wrote before it ended: read until the pipe ends, or briefly when a
    // process it left behind holds it open (that one is not waited for). A bare
    // `try_read` would miss output the reactor has not seen as readable yet.
    while open {
        match tokio::time::timeout(DRAIN_AFTER_EXIT, rx.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => keep_tail(&mut tail, &buf[..n]),
            _ => open = false,
        }
    }
    if status.success() {
        return Ok(());
    }
    let ended = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(code), _) => format!("{name} exited with code {code}"),
        (None, Some(sig)) => format!(
            "{name} was killed by {}",
            nix::sys::signal::Signal::try_from(sig)
                .map_or_else(|_| sig.to_string(), |s| s.to_string())
        ),
        (None, None) => format!("{name} failed ({status})"),
    };
    Err(match last_line(&tail) {
        Some(line) => format!("{ended}: {line}"),
        None => ended,
    })
}

fn keep_tail(tail: &mut Vec<u8>, more: &[u8]) {
    tail.extend_from_slice(more);
    if tail.len() > OUTPUT_TAIL {
        tail.drain(..tail.len() - OUTPUT_TAIL);
    }
}

/// The last line with something on it, at most [`MAX_LINE`] characters.
fn last_line(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let mut out: String = line.chars().take(MAX_LINE).collect();
    if line.chars().count() > MAX_LINE {
        out.push('…');
    }
    Some(out)
}

async fn http_get(host: &str, port: u16, path: &str) -> Result<(), String> {
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect to {host}:{port}: {}", io_cause(&e)))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
    let driver = tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::USER_AGENT, "corral-agent health check")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("GET {path}: {e}"))?;
    let result = sender.send_request(request).await;
    driver.abort();
    let response = result.map_err(|e| format!("GET {path}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("GET {path}: HTTP {}", response.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        healthy_after: u32,
        unhealthy_after: u32,
        restart_after: u32,
        start_period_ms: u64,
    ) -> HealthCheck {
        HealthCheck {
            kind: "tcp".into(),
            healthy_after,
            unhealthy_after,
            restart_after,
            start_period_ms,
            ..HealthCheck::default()
        }
    }

    #[test]
    fn verdicts_follow_consecutive_results() {
        let start = Instant::now();
        let mut h = Health::new(Some(check(2, 3, 0, 0)));
        assert_eq!(h.report(), "unknown");
        assert!(!h.record(Ok(()), start).changed);
        assert!(h.record(Ok(()), start).changed);
        assert_eq!(h.report(), "healthy");
        for _ in 0..2 {
            assert!(!h.record(Err("down".into()), start).changed);
        }
        assert!(h.record(Err("down".into()), start).changed);
        assert_eq!(h.report(), "unhealthy");
        assert_eq!(Health::new(None).report(), "");
    }

    #[test]
    fn the_cause_is_reported_while_not_healthy() {
        let start = Instant::now();
        let mut h = Health::new(Some(check(1, 2, 0, 0)));
        assert_eq!(h.report_error(), "");
        h.record(Err("connection refused".into()), start);
        assert_eq!(
            (h.report(), h.report_error()),
            ("unknown", "connection refused")
        );
        h.record(Err("HTTP 503".into()), start);
        assert_eq!((h.report(), h.report_error()), ("unhealthy", "HTTP 503"));
        h.record(Ok(()), start);
        assert_eq!((h.report(), h.report_error()), ("healthy", ""));
        // Healthy until enough failures: the verdict, not the last probe, decides.
        h.record(Err("timed out".into()), start);
        assert_eq!((h.report(), h.report_error()), ("healthy", ""));
        h.record(Err("timed out".into()), start);
        assert_eq!((h.report(), h.report_error()), ("unhealthy", "timed out"));
        assert_eq!(Health::new(None).report_error(), "");
        let mut none = Health::new(None);
        none.record(Err("x".into()), start);
        assert_eq!(none.report_error(), "");
    }

    fn exec(script: &str) -> ExecCheck {
        ExecCheck {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: std::env::temp_dir(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        }
    }

    #[tokio::test]
    async fn an_exec_check_reports_its_exit_and_last_line() {
        assert_eq!(run_exec(&exec("echo fine")).await, Ok(()));
        assert_eq!(
            run_exec(&exec("echo one; echo 'disk is full' >&2; echo; exit 3")).await,
            Err("sh exited with code 3: disk is full".into())
        );
        assert_eq!(
            run_exec(&exec("exit 1")).await,
            Err("sh exited with code 1".into())
        );
        assert_eq!(
            run_exec(&exec("kill -9 $$")).await,
            Err("sh was killed by SIGKILL".into())
        );
        let long = run_exec(&exec("head -c 100000 /dev/zero | tr '\\0' x; exit 1"))
            .await
            .expect_err("fails");
        assert!(long.chars().count() < MAX_LINE + 40, "{long}");
        // A process the check leaves behind holding the output does not hold the check.
        let started = Instant::now();
        assert_eq!(
            run_exec(&exec("sleep 5 & echo left one behind; exit 2")).await,
            Err("sh exited with code 2: left one behind".into())
        );
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    #[tokio::test]
    async fn connection_errors_are_named() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let t = Target {
            check: HealthCheck {
                kind: "tcp".into(),
                ..HealthCheck::default()
            },
            addr: Some(("127.0.0.1".into(), port)),
            exec: None,
        };
        assert_eq!(
            probe(&t).await,
            Err(format!("connect to 127.0.0.1:{port}: connection refused"))
        );
    }

    #[test]
    fn start_period_failures_do_not_count_and_restart_after_fires() {
        let start = Instant::now();
        let mut h = Health::new(Some(check(1, 1, 2, 10_000)));
        h.restart(Some(check(1, 1, 2, 10_000)), start);
        assert_eq!(
            h.record(Err("early".into()), start),
            Outcome {
                changed: false,
                restart: false
            }
        );
        assert_eq!(h.report(), "unknown");
        let later = start + Duration::from_secs(11);
        assert_eq!(
            h.record(Err("down".into()), later),
            Outcome {
                changed: true,
                restart: false
            }
        );
        assert_eq!(
            h.record(Err("down".into()), later),
            Outcome {
                changed: false,
                restart: true
            }
        );
    }
}
