//! Server specs: the TOML an operator applies, checked field by field.
//!
//! A spec is parsed into a TOML table and walked by hand rather than deserialized, so
//! that every problem is found in one pass and reported with its field path
//! (`restart.min_uptime: ...`, `adapters[1].port: ...`), not just the first.

mod diff;
mod export;
mod extra;
pub mod meta;
mod proto;
pub mod render;

use std::collections::BTreeMap;
use std::time::Duration;

use corral_proto::text::{first_problems, quoted};
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

pub use diff::describe_changes;
pub use export::to_toml;
pub use extra::{ConfigRestart, ConfigTemplate, Health};

/// A checked spec, as stored (JSON) in the `servers` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub app: String,
    pub server: String,
    pub nodes: Vec<String>,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
    pub state: RunState,
    pub adapters: Vec<Adapter>,
    pub restart: Restart,
    pub stop: Stop,
    /// The package version to run; None: the command runs from the instance directory.
    #[serde(default)]
    pub package: Option<String>,
    #[serde(default)]
    pub health: Option<Health>,
    #[serde(default)]
    pub configs: Vec<ConfigTemplate>,
    /// For `kind = "external"`: the service's address, which agents health-check but
    /// do not run.
    #[serde(default)]
    pub external: Option<(String, u16)>,
    /// How config changes that restart instances roll out.
    #[serde(default)]
    pub config_restart: ConfigRestart,
    /// Adapters' weights, tags and meta, and the `[metrics]` adapter ([`meta`]).
    #[serde(default, skip_serializing_if = "meta::SpecMeta::is_empty")]
    pub metadata: meta::SpecMeta,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Stopped,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Stopped => "stopped",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adapter {
    pub name: String,
    /// 0: `"auto"`, a port the registry allocates per node.
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restart {
    pub policy: String,
    #[serde(with = "humantime_serde")]
    pub min_uptime: Duration,
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    pub max_quick_failures: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub signal: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// Spec defaults, in one place.
pub mod defaults {
    use std::time::Duration;

    pub const POLICY: &str = "always";
    pub const MIN_UPTIME: Duration = Duration::from_secs(5);
    pub const INITIAL_DELAY: Duration = Duration::from_millis(100);
    pub const MAX_DELAY: Duration = Duration::from_secs(30);
    pub const MAX_QUICK_FAILURES: u32 = 10;
    pub const STOP_SIGNAL: &str = "SIGTERM";
    pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Spec {
    /// `app.server`
    pub fn name(&self) -> String {
        format!("{}.{}", self.app, self.server)
    }
}

/// Every problem found in a spec, one per line, each with its field path.
#[derive(Debug, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<String>);

/// A message shows this many problems of a spec, then how many more there are: 10,000
/// bad node names make one screen, not 10,000 lines (nor a status too big to send).
pub const PROBLEMS_SHOWN: usize = 20;

/// One problem line is cut past this many bytes (a huge key in its field path, say).
const PROBLEM_MAX: usize = 512;

impl std::fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", first_problems(&self.0, PROBLEMS_SHOWN))
    }
}

/// Walks a table, collecting problems under a path prefix.
pub(crate) struct Checker {
    errors: Vec<String>,
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

fn is_name(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

/// Checks an app, server or adapter name; the error states a length before any
/// echo, so a huge value reads "app name is 1048576 bytes; the limit is 63".
pub(crate) fn check_name(what: &str, value: &str, extra: &[char]) -> Result<(), String> {
    if value.len() > 63 {
        return Err(format!(
            "{what} name is {} bytes; the limit is 63",
            value.len()
        ));
    }
    if !is_name(value, extra) {
        return Err(format!("{what} {value:?} must match [A-Za-z0-9_-]{{1,63}}"));
    }
    Ok(())
}

impl Checker {
    pub(crate) fn err(&mut self, path: &str, msg: impl std::fmt::Display) {
        let line = format!("{path}: {msg}");
        self.errors
            .push(corral_proto::text::cap(&line, PROBLEM_MAX).into_owned());
    }

    pub(crate) fn unknown_keys(&mut self, table: &Table, prefix: &str, known: &[&str]) {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                self.err(
                    &path,
                    format!("unknown field; expected one of: {}", known.join(", ")),
                );
            }
        }
    }

    pub(crate) fn string(&mut self, table: &Table, key: &str, path: &str) -> Option<String> {
        match table.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.err(path, format!("must be a string, not {}", type_name(other)));
                None
            }
        }
    }

    pub(crate) fn required_string(
        &mut self,
        table: &Table,
        key: &str,
        path: &str,
    ) -> Option<String> {
        if !table.contains_key(key) {
            self.err(path, "is required");
            return None;
        }
        self.string(table, key, path)
    }

    fn name_field(&mut self, table: &Table, key: &str, what: &str) -> String {
        let Some(value) = self.required_string(table, key, key) else {
            return String::new();
        };
        if let Err(e) = check_name(what, &value, &['_', '-']) {
            self.err(key, e);
        }
        value
    }

    pub(crate) fn string_array(
        &mut self,
        table: &Table,
        key: &str,
        path: &str,
    ) -> Option<Vec<String>> {
        match table.get(key)? {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => self.err(
                            &format!("{path}[{i}]"),
                            format!("must be a string, not {}", type_name(other)),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                self.err(
                    path,
                    format!("must be an array of strings, not {}", type_name(other)),
                );
                None
            }
        }
    }

    pub(crate) fn duration(
        &mut self,
        table: &Table,
        key: &str,
        path: &str,
        default: Duration,
    ) -> Duration {
        let Some(text) = self.string(table, key, path) else {
            return default;
        };
        match humantime::parse_duration(&text) {
            Ok(d) => d,
            Err(e) => {
                self.err(
                    path,
                    format!(
                        "{} is not a duration ({e}); write e.g. \"5s\" or \"500ms\"",
                        quoted(&text)
                    ),
                );
                default
            }
        }
    }

    pub(crate) fn integer(
        &mut self,
        table: &Table,
        key: &str,
        path: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        match table.get(key)? {
            Value::Integer(n) if range.contains(n) => Some(*n),
            Value::Integer(n) => {
                self.err(
                    path,
                    format!(
                        "must be between {} and {}, not {n}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
            other => {
                self.err(
                    path,
                    format!("must be an integer, not {}", type_name(other)),
                );
                None
            }
        }
    }

    pub(crate) fn subtable<'a>(&mut self, table: &'a Table, key: &str) -> Option<&'a Table> {
        match table.get(key)? {
            Value::Table(t) => Some(t),
            other => {
                self.err(key, format!("must be a table, not {}", type_name(other)));
                None
            }
        }
    }
}

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
    let metadata = meta::parse(&mut c, &table, &adapters, &nodes);
    let health = extra::health(&mut c, &table, &adapters, external.is_some());
    let configs = extra::configs(&mut c, &table);
    if external.is_some() && !configs.is_empty() {
        c.err(
            "config",
            "an external service is not run by Corral, so it has no config files",
        );
    }
    let restart = restart(&mut c, &table);
    let stop = stop(&mut c, &table);
    let config_restart = extra::config_restart(&mut c, &table);

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
        })
    } else {
        Err(SpecErrors(c.errors))
    }
}

fn adapters(c: &mut Checker, table: &Table) -> Vec<Adapter> {
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
        c.unknown_keys(t, &path, &[&["name", "port"], meta::ADAPTER_KEYS].concat());
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

fn restart(c: &mut Checker, table: &Table) -> Restart {
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

fn stop(c: &mut Checker, table: &Table) -> Stop {
    let empty = Table::new();
    let t = c.subtable(table, "stop").unwrap_or(&empty);
    c.unknown_keys(t, "stop", &["signal", "timeout"]);
    let signal = c
        .string(t, "signal", "stop.signal")
        .unwrap_or_else(|| defaults::STOP_SIGNAL.into());
    let canonical = if signal.starts_with("SIG") {
        signal.clone()
    } else {
        format!("SIG{signal}")
    };
    let valid = canonical
        .parse::<nix::sys::signal::Signal>()
        .is_ok_and(|s| {
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

#[cfg(test)]
mod tests;
