//! Config templates and `env` values, rendered per instance with minijinja.
//!
//! Variables: `app`, `server`, `node`, `node_ip`, `ports` (adapter name to port),
//! `version`, `instance_dir`, `ordinal`. Functions (config files only):
//! * `instances('APP.SERVER[.ADAPTER]')`: every instance assigned to the server that the
//!   operator has not stopped, healthy or not, sorted by ordinal, each with `node`,
//!   `host`, `port` (the adapter's; the first adapter's without one), `ports`, `ordinal`,
//!   `state`, `healthy`, and the adapter's `weight`, `tags` and `meta`. It changes only
//!   when instances are added, removed, stopped or started by the operator (or the spec
//!   changes), so a peers list built on it is stable.
//! * `endpoints('APP.SERVER.ADAPTER')`: the sorted `host:port` list of the endpoints that
//!   are up and healthy right now (what discovery lists).
//!
//! Both take `tag="…"`: only the entries with that tag.
//! * `secret('NAME')`: the instance's value of the server's secret NAME
//!   ([`crate::secrets`]); a file that reads one is itself a secret (sealed at rest,
//!   written 0600), and a render that fails after reading one says what failed, not the
//!   detail (which could quote the value).
//!
//! Filters: minijinja's built-ins plus `tojson`. Undefined variables are errors, so a
//! typo is found at apply time rather than rendered as an empty string. A template runs
//! on a fuel budget and its output is capped, so no spec can stall the registry.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use minijinja::value::{Kwargs, Rest};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, context};
use serde::Serialize;

/// The most a rendered file (or env value) may hold.
pub const MAX_RENDERED: usize = 1024 * 1024;
/// Instructions a template may run for one render.
const FUEL: u64 = 2_000_000;

/// What a template sees of its instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenderContext {
    pub app: String,
    pub server: String,
    pub node: String,
    pub node_ip: String,
    pub ports: BTreeMap<String, u16>,
    pub version: String,
    pub instance_dir: String,
    pub ordinal: u32,
    /// The server's secrets as this instance sees them (`secret()`).
    pub secrets: crate::secrets::SecretValues,
}

/// One instance as `instances()` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceEntry {
    pub node: String,
    pub host: String,
    pub port: u16,
    pub ports: BTreeMap<String, u16>,
    pub ordinal: u32,
    pub state: String,
    pub healthy: bool,
    /// The adapter's metadata for this instance (the first adapter's for
    /// `instances('APP.SERVER')`).
    pub weight: u32,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
}

/// Endpoints by name, as discovery lists them (`endpoints()` renders `host:port`).
pub type EndpointTable = Arc<HashMap<String, Vec<corral_proto::v1::Endpoint>>>;
/// Instances by name (`APP.SERVER` and `APP.SERVER.ADAPTER`), sorted by ordinal.
pub type InstanceTable = Arc<HashMap<String, Vec<InstanceEntry>>>;

/// What the functions of a template read.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    pub endpoints: EndpointTable,
    pub instances: InstanceTable,
}

/// A rendered template, and what it called.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    pub content: String,
    /// The names passed to `endpoints()`: the render depends on liveness.
    pub endpoints: BTreeSet<String>,
    /// The names passed to `instances()`.
    pub instances: BTreeSet<String>,
    /// The secrets it read: the file is a secret too.
    pub secrets: BTreeSet<String>,
}

/// Why a template did not render: its line (when known) and what went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderError {
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

fn describe(e: &Error) -> RenderError {
    let message = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    RenderError {
        line: e.line(),
        message,
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env
}

fn variables(ctx: &RenderContext) -> minijinja::Value {
    context! {
        app => ctx.app,
        server => ctx.server,
        node => ctx.node,
        node_ip => ctx.node_ip,
        ports => ctx.ports,
        version => ctx.version,
        instance_dir => ctx.instance_dir,
        ordinal => ctx.ordinal,
    }
}

fn capped(content: String) -> Result<String, RenderError> {
    if content.len() > MAX_RENDERED {
        return Err(RenderError {
            line: None,
            message: format!(
                "the rendered text is {} bytes; the limit is {MAX_RENDERED}",
                content.len()
            ),
        });
    }
    Ok(content)
}

/// Renders a config template for one instance.
pub fn render(
    template: &str,
    ctx: &RenderContext,
    tables: &Tables,
) -> Result<Rendered, RenderError> {
    let mut env = environment();
    let called: Arc<Mutex<(BTreeSet<String>, BTreeSet<String>)>> = Arc::default();
    let (table, seen) = (tables.endpoints.clone(), called.clone());
    env.add_function(
        "endpoints",
        move |name: String, kwargs: Kwargs| -> Result<Vec<String>, Error> {
            let tag = tag_filter(&kwargs)?;
            let list = table
                .get(&name)
                .into_iter()
                .flatten()
                .filter(|e| tag.as_ref().is_none_or(|t| e.tags.contains(t)))
                .map(|e| format!("{}:{}", e.host, e.port))
                .collect();
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .0
                .insert(name);
            Ok(list)
        },
    );
    let (table, seen) = (tables.instances.clone(), called.clone());
    env.add_function(
        "instances",
        move |name: String, kwargs: Kwargs| -> Result<Vec<minijinja::Value>, Error> {
            let tag = tag_filter(&kwargs)?;
            let list = table
                .get(&name)
                .into_iter()
                .flatten()
                .filter(|e| tag.as_ref().is_none_or(|t| e.tags.contains(t)))
                .map(minijinja::Value::from_serialize)
                .collect();
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .1
                .insert(name);
            Ok(list)
        },
    );
    let read: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let (values, seen) = (ctx.secrets.clone(), read.clone());
    env.add_function("secret", move |name: String| -> Result<String, Error> {
        let value = values.get(&name).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "secret {name:?} is not set for this instance (registry secret put APP.SERVER \
                     {name} --node N | --ordinal K | --all --file F)"
                ),
            )
        })?;
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name);
        Ok(value.to_string())
    });
    let result = env.render_str(template, variables(ctx));
    let secrets = std::mem::take(&mut *read.lock().unwrap_or_else(PoisonError::into_inner));
    let content = result.map_err(|e| {
        let mut error = describe(&e);
        if !secrets.is_empty() {
            // The detail of an error after a secret was read could quote it.
            error.message = format!(
                "{} (details withheld: the template read a secret)",
                e.kind()
            );
        }
        error
    })?;
    let (endpoints, instances) =
        std::mem::take(&mut *called.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(Rendered {
        content: capped(content)?,
        endpoints,
        instances,
        secrets,
    })
}

/// The `tag="…"` of a call to `endpoints()` or `instances()`; any other keyword is an
/// error naming it.
fn tag_filter(kwargs: &Kwargs) -> Result<Option<String>, Error> {
    let tag: Option<String> = kwargs.get("tag")?;
    kwargs.assert_all_used()?;
    Ok(tag)
}

/// Renders an `env` value for one instance: variables only, since the environment is
/// fixed when the process starts (a list that changes belongs in a config file).
pub fn render_env(value: &str, ctx: &RenderContext) -> Result<String, RenderError> {
    if !value.contains("{{") && !value.contains("{%") {
        return Ok(value.to_string());
    }
    let mut env = environment();
    for function in ["endpoints", "instances", "secret"] {
        env.add_function(
            function,
            move |_: Rest<minijinja::Value>| -> Result<String, Error> {
                Err(Error::new(
                    ErrorKind::InvalidOperation,
                    if function == "secret" {
                        "secret() cannot be used in env: a process's environment is readable \
                         in /proc and passed to its children; deliver it as a file ([[files]])"
                            .to_string()
                    } else {
                        format!(
                            "{function}() cannot be used in env: the environment is fixed when \
                             the process starts; render the list into a [[config]] file instead"
                        )
                    },
                ))
            },
        );
    }
    env.render_str(value, variables(ctx))
        .map_err(|e| describe(&e))
        .and_then(capped)
}

/// A sample instance, for tests of templates.
#[cfg(test)]
pub fn sample_context() -> RenderContext {
    RenderContext {
        app: "app".into(),
        server: "server".into(),
        node: "node".into(),
        node_ip: "127.0.0.1".into(),
        ports: BTreeMap::new(),
        version: "0.0.0".into(),
        instance_dir: "/var/lib/corral/instances/app.server".into(),
        ordinal: 0,
        secrets: Default::default(),
    }
}

/// Checks a template's syntax at parse time. Variables are checked later, at apply,
/// with each instance's real values (a port of an adapter exists only then).
pub fn check_syntax(template: &str) -> Result<(), RenderError> {
    environment()
        .template_from_str(template)
        .map(|_| ())
        .map_err(|e| describe(&e))
}

#[cfg(test)]
mod tests;
