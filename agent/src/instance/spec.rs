//! What the runner reads out of a spec's text fields: the restart policy, the stop signal
//! and timeout, a config file's `on_change` mode. The wire carries these as strings; each
//! is parsed here and nowhere else, so that when the wire types them each is one
//! function to replace. Pure, table-tested.

use std::time::Duration;

use corral_proto::v1::ServerSpec;
use nix::sys::signal::Signal;

use super::state::{Policy, RestartKind};

/// The stop timeout of a spec that says none.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The restart policy of a spec: "never", "on-failure", anything else restarts always.
pub fn policy(spec: &ServerSpec) -> Policy {
    let r = spec.restart.clone().unwrap_or_default();
    Policy {
        kind: match r.policy.as_str() {
            "never" => RestartKind::Never,
            "on-failure" => RestartKind::OnFailure,
            _ => RestartKind::Always,
        },
        min_uptime: Duration::from_millis(r.min_uptime_ms),
        initial_delay: Duration::from_millis(r.initial_delay_ms),
        max_delay: Duration::from_millis(r.max_delay_ms.max(1)),
        max_quick_failures: r.max_quick_failures.max(1),
    }
}

/// The signal that asks the spec's process group to stop: its `stop.signal` ("SIGINT",
/// or "INT"), SIGTERM when it names none or one that is not a signal.
pub fn stop_signal(spec: &ServerSpec) -> Signal {
    spec.stop
        .as_ref()
        .and_then(|s| corral_common::signal::parse(&s.signal))
        .unwrap_or(Signal::SIGTERM)
}

/// How long a stopping process group has before SIGKILL.
pub fn stop_timeout(spec: &ServerSpec) -> Duration {
    spec.stop.as_ref().map_or(DEFAULT_STOP_TIMEOUT, |s| {
        Duration::from_millis(s.timeout_ms)
    })
}

/// What a changed config file asks of the running process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnChange {
    /// Nothing ("none", or a mode this agent does not know).
    Nothing,
    Restart,
    /// Send a signal: `name` as the spec wrote it, with "SIG" in front; the signal, or
    /// None when no signal has that name.
    Signal {
        name: String,
        signal: Option<Signal>,
    },
}

/// Reads an `on_change` mode: "restart", "signal:SIGHUP" or "signal:HUP", "none".
pub fn on_change(mode: &str) -> OnChange {
    if mode == "restart" {
        return OnChange::Restart;
    }
    let Some(sig) = mode.strip_prefix("signal:") else {
        return OnChange::Nothing;
    };
    OnChange::Signal {
        name: corral_common::signal::canonical(sig),
        signal: corral_common::signal::parse(sig),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_proto::v1::{RestartPolicy, StopPolicy};

    #[test]
    fn restart_policies() {
        let with = |policy: &str, max_delay_ms, max_quick_failures| ServerSpec {
            restart: Some(RestartPolicy {
                policy: policy.into(),
                min_uptime_ms: 5_000,
                initial_delay_ms: 100,
                max_delay_ms,
                max_quick_failures,
            }),
            ..ServerSpec::default()
        };
        #[rustfmt::skip]
        let table = [
            ("never", with("never", 30_000, 4), RestartKind::Never, 30_000, 4),
            ("on-failure", with("on-failure", 30_000, 4), RestartKind::OnFailure, 30_000, 4),
            ("always", with("always", 30_000, 4), RestartKind::Always, 30_000, 4),
            ("unknown restarts always", with("sometimes", 30_000, 4), RestartKind::Always, 30_000, 4),
            ("zeros are raised to 1", with("always", 0, 0), RestartKind::Always, 1, 1),
        ];
        for (name, spec, kind, max_delay_ms, max_quick_failures) in table {
            let p = policy(&spec);
            assert_eq!(p.kind, kind, "{name}");
            assert_eq!(p.max_delay, Duration::from_millis(max_delay_ms), "{name}");
            assert_eq!(p.max_quick_failures, max_quick_failures, "{name}");
            assert_eq!(p.min_uptime, Duration::from_secs(5), "{name}");
            assert_eq!(p.initial_delay, Duration::from_millis(100), "{name}");
        }
        assert_eq!(policy(&ServerSpec::default()).kind, RestartKind::Always);
    }

    #[test]
    fn stop_signal_and_timeout() {
        let with = |signal: &str, timeout_ms| ServerSpec {
            stop: Some(StopPolicy {
                signal: signal.into(),
                timeout_ms,
            }),
            ..ServerSpec::default()
        };
        #[rustfmt::skip]
        let table = [
            ("a full name", with("SIGINT", 500), Signal::SIGINT, Duration::from_millis(500)),
            ("a short name", with("INT", 0), Signal::SIGINT, Duration::ZERO),
            ("no signal", with("", 10), Signal::SIGTERM, Duration::from_millis(10)),
            ("no stop section", ServerSpec::default(), Signal::SIGTERM, Duration::from_secs(10)),
        ];
        for (name, spec, signal, timeout) in table {
            assert_eq!(
                (stop_signal(&spec), stop_timeout(&spec)),
                (signal, timeout),
                "{name}"
            );
        }
    }

    #[test]
    fn on_change_modes() {
        let signal = |name: &str, signal| OnChange::Signal {
            name: name.into(),
            signal,
        };
        #[rustfmt::skip]
        let table = [
            ("restart", OnChange::Restart),
            ("none", OnChange::Nothing),
            ("", OnChange::Nothing),
            ("reload", OnChange::Nothing),
            ("signal:SIGHUP", signal("SIGHUP", Some(Signal::SIGHUP))),
            ("signal:USR1", signal("SIGUSR1", Some(Signal::SIGUSR1))),
            ("signal:NOPE", signal("SIGNOPE", None)),
        ];
        for (mode, want) in table {
            assert_eq!(on_change(mode), want, "{mode}");
        }
    }
}
