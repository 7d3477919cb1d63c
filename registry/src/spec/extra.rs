//! The parts of a spec added for discovery: health checks, config templates, and
//! external services.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use super::{Adapter, Checker, type_name};

/// A health check, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// tcp | http | exec
    pub kind: String,
    pub adapter: Option<String>,
    pub path: String,
    pub command: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub start_period: Duration,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
    pub restart_after: u32,
}

/// A config file template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigTemplate {
    pub name: String,
    pub template: String,
    /// restart | signal:SIGNAME | none
    pub on_change: String,
    /// How long a new render must stay the same before it is delivered (a burst of
    /// changes gives one render), as consul-template's `wait.min`.
    #[serde(with = "humantime_serde", default = "default_wait_min")]
    pub wait_min: Duration,
    /// A render that keeps changing is delivered after this long anyway (`wait.max`).
    #[serde(with = "humantime_serde", default = "default_wait_max")]
    pub wait_max: Duration,
    /// A `[[files]]` entry: the file is this secret's value (and `template` is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The file's permission bits (`[[files]] mode`; 0600 when left out there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

fn default_wait_min() -> Duration {
    defaults::RENDER_WAIT_MIN
}

fn default_wait_max() -> Duration {
    defaults::RENDER_WAIT_MAX
}

/// How config changes that restart instances (`on_change = "restart"`) are rolled out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRestart {
    /// Instances restarted at once; the next batch waits until they are healthy again
    /// (or their health check's start period has passed).
    pub batch: u32,
    /// More config restarts of one instance than this within a minute: its config
    /// changes are held (`config_flapping`) until the next apply or restart.
    pub max_per_minute: u32,
}

impl Default for ConfigRestart {
    fn default() -> Self {
        ConfigRestart {
            batch: defaults::CONFIG_RESTART_BATCH,
            max_per_minute: defaults::CONFIG_RESTARTS_PER_MINUTE,
        }
    }
}

pub mod defaults {
    use std::time::Duration;

    pub const INTERVAL: Duration = Duration::from_secs(2);
    pub const TIMEOUT: Duration = Duration::from_secs(1);
    pub const START_PERIOD: Duration = Duration::from_secs(10);
    pub const HEALTHY_AFTER: u32 = 1;
    pub const UNHEALTHY_AFTER: u32 = 3;
    pub const HTTP_PATH: &str = "/health";
    pub const RENDER_WAIT_MIN: Duration = Duration::from_millis(500);
    pub const RENDER_WAIT_MAX: Duration = Duration::from_secs(5);
    pub const CONFIG_RESTART_BATCH: u32 = 1;
    pub const CONFIG_RESTARTS_PER_MINUTE: u32 = 5;
}

fn count(c: &mut Checker, t: &Table, key: &str, default: u32) -> u32 {
    c.integer(t, key, &format!("health.{key}"), 0..=1_000_000)
        .map_or(default, |n| n as u32)
}

pub(super) fn health(
    c: &mut Checker,
    table: &Table,
    adapters: &[Adapter],
    external: bool,
) -> Option<Health> {
    let t = c.subtable(table, "health")?;
    c.unknown_keys(
        t,
        "health",
        &[
            "kind",
            "adapter",
            "path",
            "command",
            "interval",
            "timeout",
            "start_period",
            "healthy_after",
            "unhealthy_after",
            "restart_after",
        ],
    );
    let kind = c
        .required_string(t, "kind", "health.kind")
        .unwrap_or_default();
    let adapter = c.string(t, "adapter", "health.adapter");
    match kind.as_str() {
        "tcp" | "http" => match &adapter {
            Some(a) if !adapters.iter().any(|x| &x.name == a) => c.err(
                "health.adapter",
                format!("{a:?} is not an adapter of this server"),
            ),
            None if adapters.len() != 1 && !external => c.err(
                "health.adapter",
                "is required when the server has more than one adapter (or none)",
            ),
            _ => {}
        },
        "exec" => {}
        "" => {}
        other => c.err(
            "health.kind",
            format!("{other:?} is not a check kind; use \"tcp\", \"http\" or \"exec\""),
        ),
    }
    let command = c
        .string_array(t, "command", "health.command")
        .unwrap_or_default();
    if kind == "exec" && command.first().is_none_or(|p| p.is_empty()) {
        c.err(
            "health.command",
            "is required for an exec check (argv, e.g. [\"bin/check\"])",
        );
    }
    let path = c
        .string(t, "path", "health.path")
        .unwrap_or_else(|| defaults::HTTP_PATH.into());
    if !path.starts_with('/') {
        c.err("health.path", format!("{path:?} must start with '/'"));
    }
    let h = Health {
        kind,
        adapter,
        path,
        command,
        interval: c.duration(t, "interval", "health.interval", defaults::INTERVAL),
        timeout: c.duration(t, "timeout", "health.timeout", defaults::TIMEOUT),
        start_period: c.duration(
            t,
            "start_period",
            "health.start_period",
            defaults::START_PERIOD,
        ),
        healthy_after: count(c, t, "healthy_after", defaults::HEALTHY_AFTER),
        unhealthy_after: count(c, t, "unhealthy_after", defaults::UNHEALTHY_AFTER),
        restart_after: count(c, t, "restart_after", 0),
    };
    if h.interval.is_zero() {
        c.err("health.interval", "must be greater than zero");
    }
    if h.timeout.is_zero() {
        c.err("health.timeout", "must be greater than zero");
    }
    for (key, n) in [
        ("healthy_after", h.healthy_after),
        ("unhealthy_after", h.unhealthy_after),
    ] {
        if n == 0 {
            c.err(&format!("health.{key}"), "must be at least 1");
        }
    }
    Some(h)
}

pub(super) fn configs(c: &mut Checker, table: &Table) -> Vec<ConfigTemplate> {
    let mut out: Vec<ConfigTemplate> = Vec::new();
    let Some(value) = table.get("config") else {
        return out;
    };
    let Value::Array(items) = value else {
        c.err(
            "config",
            format!(
                "must be an array of tables ([[config]]), not {}",
                type_name(value)
            ),
        );
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("config[{i}]");
        let Value::Table(t) = item else {
            c.err(&path, format!("must be a table, not {}", type_name(item)));
            continue;
        };
        c.unknown_keys(t, &path, &["name", "template", "on_change", "render_wait"]);
        let name = file_name(c, t, &path, &out);
        let template = c
            .required_string(t, "template", &format!("{path}.template"))
            .unwrap_or_default();
        if let Err(e) = super::render::check_syntax(&template) {
            c.err(&format!("{path}.template"), e);
        }
        let on_change = on_change(c, t, &path);
        let (wait_min, wait_max) = render_wait(c, t, &path);
        out.push(ConfigTemplate {
            name,
            template,
            on_change,
            wait_min,
            wait_max,
            secret: None,
            mode: None,
        });
    }
    out
}

/// The `name` of a `[[config]]` or `[[files]]` entry: a plain file name, once.
pub(super) fn file_name(
    c: &mut Checker,
    t: &Table,
    path: &str,
    earlier: &[ConfigTemplate],
) -> String {
    let name = c
        .required_string(t, "name", &format!("{path}.name"))
        .unwrap_or_default();
    let valid_name = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch));
    if t.contains_key("name") && !valid_name {
        c.err(
            &format!("{path}.name"),
            format!("{name:?} must be a plain file name ([A-Za-z0-9._-], no '/')"),
        );
    }
    if earlier.iter().any(|o| o.name == name) {
        c.err(
            &format!("{path}.name"),
            format!("{name:?} is defined twice"),
        );
    }
    name
}

/// The `on_change` of a `[[config]]` or `[[files]]` entry (default "restart").
pub(super) fn on_change(c: &mut Checker, t: &Table, path: &str) -> String {
    let on_change = c
        .string(t, "on_change", &format!("{path}.on_change"))
        .unwrap_or_else(|| "restart".into());
    let valid = match on_change.as_str() {
        "restart" | "none" => true,
        s => s
            .strip_prefix("signal:")
            .and_then(corral_common::signal::parse)
            .is_some(),
    };
    if !valid {
        c.err(
            &format!("{path}.on_change"),
            format!(
                "{on_change:?} must be \"restart\", \"signal:SIGHUP\" (any signal) or \"none\""
            ),
        );
    }
    on_change
}

/// `render_wait = { min = "500ms", max = "5s" }` of a `[[config]]`.
fn render_wait(c: &mut Checker, t: &Table, path: &str) -> (Duration, Duration) {
    let path = format!("{path}.render_wait");
    let defaults = (defaults::RENDER_WAIT_MIN, defaults::RENDER_WAIT_MAX);
    let Some(value) = t.get("render_wait") else {
        return defaults;
    };
    let Value::Table(w) = value else {
        c.err(
            &path,
            format!(
                "must be a table like {{ min = \"500ms\", max = \"5s\" }}, not {}",
                type_name(value)
            ),
        );
        return defaults;
    };
    c.unknown_keys(w, &path, &["min", "max"]);
    let min = c.duration(w, "min", &format!("{path}.min"), defaults.0);
    let max = c.duration(w, "max", &format!("{path}.max"), defaults.1);
    if max < min {
        c.err(
            &format!("{path}.max"),
            format!(
                "{} is shorter than min ({})",
                humantime::format_duration(max),
                humantime::format_duration(min)
            ),
        );
    }
    if max > Duration::from_secs(3600) {
        c.err(&format!("{path}.max"), "must be at most 1h");
    }
    (min, max)
}

/// The `[config_restart]` table.
pub(super) fn config_restart(c: &mut Checker, table: &Table) -> ConfigRestart {
    let empty = Table::new();
    let t = c.subtable(table, "config_restart").unwrap_or(&empty);
    c.unknown_keys(t, "config_restart", &["batch", "max_per_minute"]);
    let d = ConfigRestart::default();
    ConfigRestart {
        batch: c
            .integer(t, "batch", "config_restart.batch", 1..=10_000)
            .map_or(d.batch, |n| n as u32),
        max_per_minute: c
            .integer(
                t,
                "max_per_minute",
                "config_restart.max_per_minute",
                1..=1_000,
            )
            .map_or(d.max_per_minute, |n| n as u32),
    }
}

/// `host:port` of an external service.
pub(super) fn external_address(c: &mut Checker, table: &Table) -> Option<(String, u16)> {
    let address = c.required_string(table, "address", "address")?;
    let parsed = address
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse::<u16>().ok()?,
            ))
        })
        .filter(|(h, p)| !h.is_empty() && *p != 0);
    if parsed.is_none() {
        c.err("address", format!("{address:?} must be HOST:PORT"));
    }
    parsed
}
