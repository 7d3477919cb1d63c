//! What the runner reads out of a spec: the restart policy, the stop signal and timeout,
//! the health check's kind, each config file's `on_change`. The wire types them; a value
//! this agent does not know, or one left out, is an error (the reconciler reports it on
//! the instance), never a default. Read once, when a desired state arrives
//! ([`crate::instance::Desired::from_wire`]). Pure, table-tested.

use std::time::Duration;

use corral_proto::v1::{
    ConfigFile, HealthKind, OnChange as WireOnChange, RestartKind as WireRestart, ServerSpec,
};
use corral_proto::wire::known;
use nix::sys::signal::Signal;

use super::state::{Policy, RestartKind};

/// The restart policy of a spec.
pub fn policy(spec: &ServerSpec) -> Result<Policy, String> {
    let r = spec
        .restart
        .as_ref()
        .ok_or("ServerSpec.restart is not set")?;
    let kind =
        match known::<WireRestart>("RestartPolicy.policy", r.policy).map_err(|e| e.to_string())? {
            WireRestart::Always => RestartKind::Always,
            WireRestart::OnFailure => RestartKind::OnFailure,
            WireRestart::Never => RestartKind::Never,
            WireRestart::Unspecified => return Err("RestartPolicy.policy is not set".into()),
        };
    Ok(Policy {
        kind,
        min_uptime: Duration::from_millis(r.min_uptime_ms),
        initial_delay: Duration::from_millis(r.initial_delay_ms),
        max_delay: Duration::from_millis(r.max_delay_ms.max(1)),
        max_quick_failures: r.max_quick_failures.max(1),
    })
}

/// The signal that asks the spec's process group to stop: its `stop.signal` ("SIGINT",
/// or "INT").
pub fn stop_signal(spec: &ServerSpec) -> Result<Signal, String> {
    let stop = spec.stop.as_ref().ok_or("ServerSpec.stop is not set")?;
    corral_common::signal::parse(&stop.signal)
        .ok_or_else(|| format!("StopPolicy.signal {:?} is not a signal", stop.signal))
}

/// How long a stopping process group has before SIGKILL.
pub fn stop_timeout(spec: &ServerSpec) -> Duration {
    spec.stop
        .as_ref()
        .map_or(Duration::ZERO, |s| Duration::from_millis(s.timeout_ms))
}

/// The kind of the spec's health check; None without one.
pub fn health_kind(spec: &ServerSpec) -> Result<Option<HealthKind>, String> {
    spec.health
        .as_ref()
        .map(|h| known::<HealthKind>("HealthCheck.kind", h.kind).map_err(|e| e.to_string()))
        .transpose()
}

/// What a changed config file asks of the running process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnChange {
    Nothing,
    Restart,
    /// Send this signal (`name` with "SIG" in front).
    Signal {
        name: String,
        signal: Signal,
    },
}

/// A config file's `on_change`.
pub fn on_change(file: &ConfigFile) -> Result<OnChange, String> {
    let field = "ConfigFile.on_change";
    match known::<WireOnChange>(field, file.on_change).map_err(|e| e.to_string())? {
        WireOnChange::Restart => Ok(OnChange::Restart),
        WireOnChange::None => Ok(OnChange::Nothing),
        WireOnChange::Signal => Ok(OnChange::Signal {
            name: corral_common::signal::canonical(&file.signal),
            signal: corral_common::signal::parse(&file.signal).ok_or_else(|| {
                format!(
                    "ConfigFile.signal {:?} of {} is not a signal",
                    file.signal, file.name
                )
            })?,
        }),
        WireOnChange::Unspecified => Err(format!("{field} is not set")),
    }
}

/// A config file's `mode`: permission bits (0: the default), nothing else: a registry
/// that asks for setuid bits or garbage is refused, not obeyed.
pub fn check_mode(file: &ConfigFile) -> Result<(), String> {
    if file.mode > 0o777 {
        return Err(format!(
            "ConfigFile.mode {:o} of {} is not permission bits (0-0777)",
            file.mode, file.name
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_proto::v1::{HealthCheck, RestartPolicy, StopPolicy};

    fn restart(policy: i32, max_delay_ms: u64, max_quick_failures: u32) -> ServerSpec {
        ServerSpec {
            restart: Some(RestartPolicy {
                policy,
                min_uptime_ms: 5_000,
                initial_delay_ms: 100,
                max_delay_ms,
                max_quick_failures,
            }),
            ..ServerSpec::default()
        }
    }

    #[test]
    fn modes_beyond_permission_bits_are_refused() {
        let file = |mode| ConfigFile {
            name: "ssl.key".into(),
            mode,
            ..ConfigFile::default()
        };
        assert_eq!(check_mode(&file(0)), Ok(()));
        assert_eq!(check_mode(&file(0o640)), Ok(()));
        assert_eq!(
            check_mode(&file(0o4755)),
            Err("ConfigFile.mode 4755 of ssl.key is not permission bits (0-0777)".to_string())
        );
    }

    #[test]
    fn restart_policies() {
        let (always, on_failure, never) = (
            WireRestart::Always as i32,
            WireRestart::OnFailure as i32,
            WireRestart::Never as i32,
        );
        #[rustfmt::skip]
        let table = [
            ("never", restart(never, 30_000, 4), RestartKind::Never, 30_000, 4),
            ("on-failure", restart(on_failure, 30_000, 4), RestartKind::OnFailure, 30_000, 4),
            ("always", restart(always, 30_000, 4), RestartKind::Always, 30_000, 4),
            ("zeros are raised to 1", restart(always, 0, 0), RestartKind::Always, 1, 1),
        ];
        for (name, spec, kind, max_delay_ms, max_quick_failures) in table {
            let p = policy(&spec).expect(name);
            assert_eq!(p.kind, kind, "{name}");
            assert_eq!(p.max_delay, Duration::from_millis(max_delay_ms), "{name}");
            assert_eq!(p.max_quick_failures, max_quick_failures, "{name}");
            assert_eq!(p.min_uptime, Duration::from_secs(5), "{name}");
            assert_eq!(p.initial_delay, Duration::from_millis(100), "{name}");
        }
        // What this agent does not know is an error, never "always".
        for (name, spec, want) in [
            ("unknown", restart(42, 1, 1), "RestartPolicy.policy is 42"),
            (
                "left out",
                restart(0, 1, 1),
                "RestartPolicy.policy is not set",
            ),
            (
                "no section",
                ServerSpec::default(),
                "ServerSpec.restart is not set",
            ),
        ] {
            let err = policy(&spec).expect_err(name);
            assert!(err.starts_with(want), "{name}: {err}");
        }
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
            ("a full name", with("SIGINT", 500), Ok(Signal::SIGINT), Duration::from_millis(500)),
            ("a short name", with("INT", 0), Ok(Signal::SIGINT), Duration::ZERO),
            ("no signal", with("", 10), Err("StopPolicy.signal \"\" is not a signal".to_string()), Duration::from_millis(10)),
            ("no stop section", ServerSpec::default(), Err("ServerSpec.stop is not set".to_string()), Duration::ZERO),
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
    fn health_kinds() {
        let with = |kind: i32| ServerSpec {
            health: Some(HealthCheck {
                kind,
                ..HealthCheck::default()
            }),
            ..ServerSpec::default()
        };
        assert_eq!(health_kind(&ServerSpec::default()), Ok(None));
        assert_eq!(
            health_kind(&with(HealthKind::Exec as i32)),
            Ok(Some(HealthKind::Exec))
        );
        let err = health_kind(&with(9)).expect_err("unknown");
        assert!(err.starts_with("HealthCheck.kind is 9"), "{err}");
    }

    #[test]
    fn on_change_modes() {
        let file = |mode: WireOnChange, signal: &str| ConfigFile {
            name: "peers.txt".into(),
            on_change: mode as i32,
            signal: signal.into(),
            ..ConfigFile::default()
        };
        let signal = |name: &str, signal| {
            Ok(OnChange::Signal {
                name: name.into(),
                signal,
            })
        };
        #[rustfmt::skip]
        let table = [
            ("restart", file(WireOnChange::Restart, ""), Ok(OnChange::Restart)),
            ("none", file(WireOnChange::None, ""), Ok(OnChange::Nothing)),
            ("SIGHUP", file(WireOnChange::Signal, "SIGHUP"), signal("SIGHUP", Signal::SIGHUP)),
            ("USR1", file(WireOnChange::Signal, "USR1"), signal("SIGUSR1", Signal::SIGUSR1)),
            ("no such signal", file(WireOnChange::Signal, "NOPE"), Err("ConfigFile.signal \"NOPE\" of peers.txt is not a signal".to_string())),
            ("left out", file(WireOnChange::Unspecified, ""), Err("ConfigFile.on_change is not set".to_string())),
        ];
        for (name, f, want) in table {
            assert_eq!(on_change(&f), want, "{name}");
        }
        let unknown = ConfigFile {
            on_change: 7,
            ..ConfigFile::default()
        };
        assert!(
            on_change(&unknown)
                .expect_err("unknown")
                .starts_with("ConfigFile.on_change is 7")
        );
    }
}
