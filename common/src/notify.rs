//! Telling a service manager (systemd, `Type=notify`) how the daemon is doing:
//! `READY=1` once it serves, `WATCHDOG=1` pings while it runs, `STOPPING=1` when it
//! shuts down (see sd_notify(3)). Both binaries use it.
//!
//! Written on std's `UnixDatagram` rather than the `sd-notify` crate: that crate reads
//! the socket only from the environment (so it cannot be tested without `set_var`, which
//! is `unsafe` in Rust 2024) and cannot reach sockets in the abstract namespace (`@...`).
//! Without `NOTIFY_SOCKET` every call is a no-op.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The shortest time between two watchdog pings, however short `WATCHDOG_USEC` is.
const MIN_PING_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET {socket:?} is not a usable socket address: {source}")]
    Address {
        socket: String,
        source: std::io::Error,
    },
    #[error("cannot send {message:?} to NOTIFY_SOCKET {socket:?}: {source}")]
    Send {
        socket: String,
        message: String,
        source: std::io::Error,
    },
}

/// Where to send notifications, and how often the service manager wants a ping.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    /// `NOTIFY_SOCKET`: a path, or `@name` for the abstract namespace. None: no-op.
    socket: Option<OsString>,
    /// `WATCHDOG_USEC`, when it is meant for this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, as systemd sets them.
    pub fn from_env() -> Notifier {
        let var = |name| std::env::var(name).ok();
        Notifier::new(
            std::env::var_os("NOTIFY_SOCKET"),
            watchdog_timeout(
                var("WATCHDOG_USEC").as_deref(),
                var("WATCHDOG_PID").as_deref(),
                std::process::id(),
            ),
        )
    }

    /// An explicit socket (empty: none) and watchdog timeout.
    pub fn new(socket: Option<OsString>, watchdog: Option<Duration>) -> Notifier {
        Notifier {
            socket: socket.filter(|s| !s.is_empty()),
            watchdog: watchdog.filter(|d| !d.is_zero()),
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// How often to ping: half the watchdog timeout, as sd_watchdog_enabled(3) advises.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| (d / 2).max(MIN_PING_INTERVAL))
    }

    /// Sends one notification (`KEY=VALUE` lines). Ok and nothing sent without a socket.
    pub fn send(&self, state: &str) -> Result<(), NotifyError> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        let shown = || socket.to_string_lossy().into_owned();
        let addr = socket_addr(socket).map_err(|source| NotifyError::Address {
            socket: shown(),
            source,
        })?;
        UnixDatagram::unbound()
            .and_then(|s| s.send_to_addr(state.as_bytes(), &addr))
            .map(|_| ())
            .map_err(|source| NotifyError::Send {
                socket: shown(),
                message: state.to_string(),
                source,
            })
    }

    /// Sends `state`, logging a failure: a service manager that cannot be told is no
    /// reason to stop serving.
    fn tell(&self, state: &str) {
        match self.send(state) {
            Ok(()) if self.enabled() => debug!(state, "told the service manager"),
            Ok(()) => {}
            Err(e) => warn!(cause = %e, "cannot notify the service manager"),
        }
    }

    /// Sends `READY=1`, then `WATCHDOG=1` every [`Self::ping_interval`] until `shutdown`
    /// is cancelled, then `STOPPING=1`. `ready` resolves when the daemon serves. Returns
    /// at once when no service manager listens.
    pub async fn run(self, ready: impl Future<Output = ()>, shutdown: CancellationToken) {
        if !self.enabled() {
            return;
        }
        tokio::select! {
            () = ready => self.tell("READY=1"),
            () = shutdown.cancelled() => {
                self.tell("STOPPING=1");
                return;
            }
        }
        if let Some(every) = self.ping_interval() {
            let mut ticks = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = ticks.tick() => self.tell("WATCHDOG=1"),
                    () = shutdown.cancelled() => break,
                }
            }
        } else {
            shutdown.cancelled().await;
        }
        self.tell("STOPPING=1");
    }
}

/// The watchdog timeout from `WATCHDOG_USEC`, unless `WATCHDOG_PID` names another
/// process (the variables were inherited, not meant for us).
fn watchdog_timeout(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    let ours = pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(own_pid));
    (ours && usec > 0).then(|| Duration::from_micros(usec))
}

/// `@name` is a socket in the abstract namespace; anything else a path.
fn socket_addr(socket: &OsStr) -> std::io::Result<SocketAddr> {
    match socket.as_bytes().split_first() {
        Some((b'@', name)) => SocketAddr::from_abstract_name(name),
        _ => SocketAddr::from_pathname(Path::new(socket)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that receives what a notifier sends, like systemd's.
    struct Manager {
        socket: tokio::net::UnixDatagram,
    }

    impl Manager {
        async fn next(&self) -> String {
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(5), self.socket.recv(&mut buf))
                .await
                .expect("a notification within 5 s")
                .expect("recv");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
    }

    fn manager_in(dir: &Path) -> (Manager, OsString) {
        let path = dir.join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&path).expect("bind");
        (Manager { socket }, path.into_os_string())
    }

    #[tokio::test]
    async fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (manager, path) = manager_in(dir.path());
        Notifier::new(Some(path), None)
            .send("READY=1")
            .expect("send");
        assert_eq!(manager.next().await, "READY=1");
    }

    #[tokio::test]
    async fn sends_to_an_abstract_socket() {
        let name = format!(
            "corral-notify-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let std_socket = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        std_socket.set_nonblocking(true).expect("nonblocking");
        let manager = Manager {
            socket: tokio::net::UnixDatagram::from_std(std_socket).expect("tokio socket"),
        };
        Notifier::new(Some(format!("@{name}").into()), None)
            .send("STOPPING=1")
            .expect("send");
        assert_eq!(manager.next().await, "STOPPING=1");
    }

    #[test]
    fn no_socket_is_a_no_op_and_a_missing_one_is_named() {
        Notifier::new(None, None).send("READY=1").expect("no-op");
        Notifier::new(Some(OsString::new()), None)
            .send("READY=1")
            .expect("no-op");
        let dir = tempfile::tempdir().expect("tempdir");
        let gone = dir.path().join("gone.sock");
        let err = Notifier::new(Some(gone.clone().into_os_string()), None)
            .send("READY=1")
            .expect_err("nobody listens");
        assert!(err.to_string().contains("gone.sock"), "{err}");
    }

    #[tokio::test]
    async fn run_says_ready_pings_and_says_stopping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (manager, path) = manager_in(dir.path());
        let notifier = Notifier::new(Some(path), Some(Duration::from_millis(100)));
        assert_eq!(notifier.ping_interval(), Some(Duration::from_millis(50)));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(notifier.run(std::future::ready(()), shutdown.clone()));
        assert_eq!(manager.next().await, "READY=1");
        assert_eq!(manager.next().await, "WATCHDOG=1");
        assert_eq!(manager.next().await, "WATCHDOG=1");
        shutdown.cancel();
        task.await.expect("run ends");
        let mut last = manager.next().await;
        while last == "WATCHDOG=1" {
            last = manager.next().await;
        }
        assert_eq!(last, "STOPPING=1");
    }

    #[tokio::test]
    async fn not_ready_before_the_daemon_serves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (manager, path) = manager_in(dir.path());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            Notifier::new(Some(path), None).run(std::future::pending(), shutdown.clone()),
        );
        shutdown.cancel();
        task.await.expect("run ends");
        assert_eq!(manager.next().await, "STOPPING=1");
    }

    #[test]
    fn watchdog_is_for_this_process_only() {
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(watchdog_timeout(Some("30000000"), None, 7), secs(30));
        assert_eq!(watchdog_timeout(Some("30000000"), Some("7"), 7), secs(30));
        assert_eq!(watchdog_timeout(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_timeout(Some("0"), None, 7), None);
        assert_eq!(watchdog_timeout(Some("soon"), None, 7), None);
        assert_eq!(watchdog_timeout(None, Some("7"), 7), None);
        let tiny = Notifier::new(Some("x".into()), Some(Duration::from_micros(1)));
        assert_eq!(tiny.ping_interval(), Some(MIN_PING_INTERVAL));
    }
}
