//! Parsing a spec: the top level of the TOML, each section checked by the function that
//! knows it, every problem reported at once.

use std::collections::BTreeMap;

use corral_proto::text::quoted;
use toml::{Table, Value};

use super::checker::{Checker, SpecErrors, is_name, type_name};
use super::sections::{adapters, restart, stop};
use super::{Adapter, RunState, Spec, extra, render};

const TOP_KEYS: &[&str] = &[
    "app",
    "server",
    "nodes",
    "command",
    "env",
    "user",
    "state",
    "adapters",
    "restart",
    "stop",
    "package",
    "health",
    "config",
    "kind",
    "address",
    "config_restart",
    "metrics",
    "files",
    "resources",
];

/// Checks a package version: `[A-Za-z0-9._+-]{1,63}`, not starting with a dot.
pub fn check_version(v: &str) -> Result<(), String> {
    let chars_ok = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    if v.len() > 63 {
        return Err(format!("version is {} bytes; the limit is 63", v.len()));
    }
    if v.is_empty() || v.starts_with('.') || !chars_ok {
        return Err(format!(
            "version {v:?} must match [A-Za-z0-9._+-]{{1,63}} and not start with '.'"
        ));
    }
    Ok(())
}

/// Parses and checks a spec. `source` names the file in messages.
pub fn parse(text: &str, source: &str) -> Result<Spec, SpecErrors> {
    let table: Table = toml::from_str(text)
        .map_err(|e| SpecErrors(vec![format!("{source}: {}", e.to_string().trim_end())]))?;
    let mut c = Checker { errors: Vec::new() };
    c.unknown_keys(&table, "", TOP_KEYS);

    let app = c.name_field(&table, "app", "app");
    let server = c.name_field(&table, "server", "server");

    let nodes = if table.contains_key("nodes") {
        c.string_array(&table, "nodes", "nodes").unwrap_or_default()
    } else {
        c.err(
            "nodes",
            "is required (the nodes to run on, e.g. [\"node-a\"])",
        );
        Vec::new()
    };
    if table.contains_key("nodes")
        && nodes.is_empty()
        && c.errors.iter().all(|e| !e.starts_with("nodes"))
    {
        c.err("nodes", "must name at least one node");
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, node) in nodes.iter().enumerate() {
        if let Err(e) = corral_proto::names::check_node_name(node) {
            c.err(&format!("nodes[{i}]"), e);
        } else if !seen.insert(node) {
            c.err(
                &format!("nodes[{i}]"),
                format!("node {node:?} is listed twice"),
            );
        }
    }

    let kind = c
        .string(&table, "kind", "kind")
        .unwrap_or_else(|| "process".into());
    let external = match kind.as_str() {
        "process" => false,
        "external" => true,
        other => {
            c.err(
                "kind",
                format!(
                    "{} is not a kind; use \"process\" or \"external\"",
                    quoted(other)
                ),
            );
            false
        }
    };
    if !external && table.contains_key("address") {
        c.err("address", "is only for kind = \"external\"");
    }
    let command = if external {
        if table.contains_key("command") {
            c.err(
                "command",
                "an external service is not run by Corral; leave command out",
            );
        }
        Vec::new()
    } else if table.contains_key("command") {
        c.string_array(&table, "command", "command")
            .unwrap_or_default()
    } else {
        c.err(
            "command",
            "is required (argv, e.g. [\"bin/server\", \"--port\", \"8080\"])",
        );
        Vec::new()
    };
    if table.contains_key("command")
        && command.first().is_none_or(|p| p.is_empty())
        && c.errors.iter().all(|e| !e.starts_with("command"))
    {
        c.err("command", "must start with a program");
    }
    for (i, arg) in command.iter().enumerate() {
        if arg.contains('\0') {
            c.err(&format!("command[{i}]"), "must not contain NUL");
        }
    }

    let mut env = BTreeMap::new();
    if let Some(t) = c.subtable(&table, "env") {
        for (key, value) in t {
            let path = format!("env.{key}");
            let valid = key
                .chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
                && key
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
            if !valid {
                c.err(
                    &path,
                    "is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)",
                );
            } else if key.starts_with("CORRAL_") {
                c.err(
                    &path,
                    "CORRAL_* variables are set by the agent and cannot be overridden",
                );
            }
            match value {
                Value::String(s) if s.contains('\0') => c.err(&path, "must not contain NUL"),
                Value::String(s) => {
                    if let Err(e) = render::check_syntax(s) {
                        c.err(&path, e);
                    }
                    env.insert(key.clone(), s.clone());
                }
                other => c.err(&path, format!("must be a string, not {}", type_name(other))),
            }
        }
    }

    let user = c.string(&table, "user", "user");
    if let Some(u) = &user
        && !is_name(u, &['_', '-', '.'])
    {
        c.err("user", format!("{} is not a valid user name", quoted(u)));
    }

    let state = match c.string(&table, "state", "state").as_deref() {
        None | Some("running") => RunState::Running,
        Some("stopped") => RunState::Stopped,
        Some(other) => {
            c.err(
                "state",
                format!(
                    "{} is not a state; use \"running\" or \"stopped\"",
                    quoted(other)
                ),
            );
            RunState::Running
        }
    };

    let package = c.string(&table, "package", "package");
    if let Some(v) = &package
        && let Err(e) = check_version(v)
    {
        c.err("package", e);
    }

    let mut adapters = adapters(&mut c, &table);
    let external = if external {
        extra::external_address(&mut c, &table)
    } else {
        None
    };
    if let Some((_, port)) = &external {
        if adapters.is_empty() {
            adapters.push(Adapter {
                name: "Main".into(),
                port: *port,
            });
        } else if adapters.len() > 1 {
            c.err(
                "adapters",
                "an external service has one address, so at most one adapter",
            );
        } else if adapters[0].port != 0 && adapters[0].port != *port {
            c.err(
                "adapters[0].port",
                format!("must be the address's port {port}, or left out"),
            );
        } else {
            adapters[0].port = *port;
        }
    }
    let metadata = super::meta::parse(&mut c, &table, &adapters, &nodes);
    let health = extra::health(&mut c, &table, &adapters, external.is_some());
    let mut configs = extra::configs(&mut c, &table);
    let files = super::files::files(&mut c, &table, &configs);
    if external.is_some() && !files.is_empty() {
        c.err(
            "files",
            "an external service is not run by Corral, so it has no files",
        );
    }
    configs.extend(files);
    if external.is_some() && configs.iter().any(|c| c.secret.is_none()) {
        c.err(
            "config",
            "an external service is not run by Corral, so it has no config files",
        );
    }
    let restart = restart(&mut c, &table);
    let stop = stop(&mut c, &table);
    let config_restart = extra::config_restart(&mut c, &table);
    let resources = super::resources::parse(&mut c, &table);
    if external.is_some() && resources.is_some() {
        c.err(
            "resources",
            "an external service is not run by Corral, so it has no limits",
        );
    }

    if c.errors.is_empty() {
        Ok(Spec {
            app,
            server,
            nodes,
            command,
            env,
            user,
            state,
            adapters,
            restart,
            stop,
            package,
            health,
            configs,
            external,
            config_restart,
            metadata,
            resources,
        })
    } else {
        Err(SpecErrors(c.errors))
    }
}
