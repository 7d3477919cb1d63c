//! Health checks: tcp (connect to the adapter's port), http (GET a path on it, 2xx) and
//! exec (a command exits 0), run by the agent every interval while an instance runs.
//!
//! The verdict turns `healthy` after `healthy_after` successes in a row and `unhealthy`
//! after `unhealthy_after` failures in a row; failures during `start_period` after the
//! start do not count. After `restart_after` failures in a row (if set) the runner
//! restarts the instance.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use corral_proto::v1::HealthCheck;
use http_body_util::Empty;
use hyper::body::Bytes;
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
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                if self.successes >= check.healthy_after.max(1) {
                    self.verdict = Verdict::Healthy;
                }
            }
            Err(e) => {
                if now.duration_since(self.started) < Duration::from_millis(check.start_period_ms) {
                    return Outcome {
                        changed: false,
                        restart: false,
                    };
                }
                self.last_error = e;
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

/// Probes every interval and sends each result; ends when the receiver is gone.
pub fn spawn(target: Target, tx: mpsc::Sender<Result<(), String>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let interval = Duration::from_millis(target.check.interval_ms.max(10));
        let timeout = Duration::from_millis(target.check.timeout_ms.max(1));
        loop {
            let result = match tokio::time::timeout(timeout, probe(&target)).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "{} check timed out after {timeout:?}",
                    target.check.kind
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
                .map_err(|e| format!("tcp {host}:{port}: {e}"))
        }
        "http" => {
            let (host, port) = t.addr.as_ref().ok_or("no address to check")?;
            http_get(host, *port, &t.check.path).await
        }
        "exec" => {
            let ExecCheck {
                program,
                args,
                cwd,
                env,
            } = t.exec.as_ref().ok_or("no command to run")?;
            let status = tokio::process::Command::new(program)
                .args(args)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .current_dir(cwd)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("{} exited with {status}", program.display()))
            }
        }
        other => Err(format!("unknown check kind {other:?}")),
    }
}

async fn http_get(host: &str, port: u16, path: &str) -> Result<(), String> {
    let where_ = format!("http://{host}:{port}{path}");
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("{where_}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("{where_}: {e}"))?;
    let driver = tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::USER_AGENT, "corral-agent health check")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{where_}: {e}"))?;
    let result = sender.send_request(request).await;
    driver.abort();
    let response = result.map_err(|e| format!("{where_}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{where_}: HTTP {}", response.status()))
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
