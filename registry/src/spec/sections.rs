//! The sections of a spec that say how it runs: adapters (named ports), the restart
//! policy and how it stops.

use corral_proto::text::quoted;
use toml::{Table, Value};

use super::checker::{Checker, check_name, type_name};
use super::{Adapter, Restart, Stop, defaults};

pub(super) fn adapters(c: &mut Checker, table: &Table) -> Vec<Adapter> {
    let mut out = Vec::new();
    let Some(value) = table.get("adapters") else {
        return out;
    };
    let Value::Array(items) = value else {
        c.err(
            "adapters",
            format!(
                "must be an array of tables ([[adapters]]), not {}",
                type_name(value)
            ),
        );
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("adapters[{i}]");
        let Value::Table(t) = item else {
            c.err(&path, format!("must be a table, not {}", type_name(item)));
            continue;
        };
        c.unknown_keys(
            t,
            &path,
            &[&["name", "port"], super::meta::ADAPTER_KEYS].concat(),
        );
        let name = c
            .required_string(t, "name", &format!("{path}.name"))
            .unwrap_or_default();
        if t.contains_key("name")
            && let Err(e) = check_name("adapter", &name, &['_', '-'])
        {
            c.err(&format!("{path}.name"), e);
        } else if let Some(other) = out.iter().find(|a: &&Adapter| a.name == name) {
            c.err(
                &format!("{path}.name"),
                format!("adapter {:?} is defined twice", other.name),
            );
        } else if let Some(other) = out.iter().find(|a: &&Adapter| {
            corral_proto::names::port_env_var(&a.name) == corral_proto::names::port_env_var(&name)
        }) {
            // The agent passes each port as CORRAL_PORT_<NAME>: these two would be one.
            c.err(
                &format!("{path}.name"),
                format!(
                    "adapter {name:?} and adapter {:?} both map to {}; adapter names must differ by more than case and '-'/'_'",
                    other.name,
                    corral_proto::names::port_env_var(&name)
                ),
            );
        }
        let port_path = format!("{path}.port");
        let port = match t.get("port") {
            None => {
                c.err(
                    &port_path,
                    "is required (a number, or \"auto\" for one the registry picks)",
                );
                0
            }
            Some(Value::String(s)) if s == "auto" => 0,
            Some(Value::String(s)) => {
                c.err(
                    &port_path,
                    format!(
                        "{} is not a port; use a number 1-65535 or \"auto\"",
                        quoted(s)
                    ),
                );
                0
            }
            Some(_) => c.integer(t, "port", &port_path, 1..=65535).unwrap_or(0),
        };
        if port != 0 && out.iter().any(|a: &Adapter| i64::from(a.port) == port) {
            c.err(
                &port_path,
                format!("port {port} is used by another adapter"),
            );
        }
        out.push(Adapter {
            name,
            port: port as u16,
        });
    }
    out
}

pub(super) fn restart(c: &mut Checker, table: &Table) -> Restart {
    let empty = Table::new();
    let t = c.subtable(table, "restart").unwrap_or(&empty);
    c.unknown_keys(
        t,
        "restart",
        &[
            "policy",
            "min_uptime",
            "initial_delay",
            "max_delay",
            "max_quick_failures",
        ],
    );
    let policy = c
        .string(t, "policy", "restart.policy")
        .unwrap_or_else(|| defaults::POLICY.into());
    if !["always", "on-failure", "never"].contains(&policy.as_str()) {
        c.err(
            "restart.policy",
            format!(
                "{} is not a policy; use \"always\", \"on-failure\" or \"never\"",
                quoted(&policy)
            ),
        );
    }
    let r = Restart {
        policy,
        min_uptime: c.duration(t, "min_uptime", "restart.min_uptime", defaults::MIN_UPTIME),
        initial_delay: c.duration(
            t,
            "initial_delay",
            "restart.initial_delay",
            defaults::INITIAL_DELAY,
        ),
        max_delay: c.duration(t, "max_delay", "restart.max_delay", defaults::MAX_DELAY),
        max_quick_failures: c
            .integer(
                t,
                "max_quick_failures",
                "restart.max_quick_failures",
                1..=1_000_000,
            )
            .map_or(defaults::MAX_QUICK_FAILURES, |n| n as u32),
    };
    if r.max_delay.is_zero() {
        c.err("restart.max_delay", "must be greater than zero");
    }
    if r.initial_delay > r.max_delay {
        c.err(
            "restart.initial_delay",
            format!(
                "{:?} is longer than restart.max_delay ({:?})",
                r.initial_delay, r.max_delay
            ),
        );
    }
    r
}

pub(super) fn stop(c: &mut Checker, table: &Table) -> Stop {
    let empty = Table::new();
    let t = c.subtable(table, "stop").unwrap_or(&empty);
    c.unknown_keys(t, "stop", &["signal", "timeout"]);
    let signal = c
        .string(t, "signal", "stop.signal")
        .unwrap_or_else(|| defaults::STOP_SIGNAL.into());
    let canonical = corral_common::signal::canonical(&signal);
    let valid = corral_common::signal::parse(&signal).is_some_and(|s| {
        s != nix::sys::signal::Signal::SIGKILL && s != nix::sys::signal::Signal::SIGSTOP
    });
    if !valid {
        c.err("stop.signal", format!("{} is not a signal a process can handle (e.g. \"SIGTERM\", \"SIGINT\", \"SIGQUIT\")", quoted(&signal)));
    }
    let timeout = c.duration(t, "timeout", "stop.timeout", defaults::STOP_TIMEOUT);
    if timeout.is_zero() {
        c.err("stop.timeout", "must be greater than zero");
    }
    Stop {
        signal: canonical,
        timeout,
    }
}
