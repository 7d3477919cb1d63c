//! Signals by name, and the shutdown signals of both daemons.
//!
//! A spec names signals as people write them, `"SIGHUP"` or `"HUP"` (`stop.signal`,
//! a config's `on_change = "signal:HUP"`); the registry checks them at apply and the
//! agent sends them, both through [`parse`].

use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

/// The name with its `SIG` prefix: `"HUP"` → `"SIGHUP"`; `"SIGHUP"` stays.
pub fn canonical(name: &str) -> String {
    if name.starts_with("SIG") {
        name.to_string()
    } else {
        format!("SIG{name}")
    }
}

/// The signal `name` stands for, written with or without `SIG`.
pub fn parse(name: &str) -> Option<Signal> {
    canonical(name).parse().ok()
}

/// Cancels `shutdown` on SIGINT or SIGTERM. For `main` only: signal handlers live there,
/// and everything below learns of the shutdown through the token.
pub async fn cancel_on_shutdown_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_or_without_sig() {
        assert_eq!(parse("SIGHUP"), Some(Signal::SIGHUP));
        assert_eq!(parse("HUP"), Some(Signal::SIGHUP));
        assert_eq!(parse("SIGUSR1"), Some(Signal::SIGUSR1));
        assert_eq!(parse("hup"), None);
        assert_eq!(parse("SIGNOPE"), None);
        assert_eq!(parse(""), None);
        assert_eq!(canonical("TERM"), "SIGTERM");
        assert_eq!(canonical("SIGTERM"), "SIGTERM");
    }
}
