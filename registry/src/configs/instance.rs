//! One instance's rendering: its template variables, its `env` and its config files, and
//! the wire spec the agent runs it from.

use std::collections::BTreeMap;

use corral_proto::v1::{PackageRef, ServerSpec};

use crate::spec::Spec;
use crate::spec::render::{self, RenderContext, RenderError, Rendered, Tables};

/// Where an instance runs and what it was given, as templates see it.
#[derive(Clone, Debug, Default)]
pub struct Placement<'a> {
    pub node: &'a str,
    /// The node's advertise IP; empty before it has joined.
    pub node_ip: &'a str,
    /// The node's agent data dir; empty before it has joined.
    pub data_dir: &'a str,
    pub ordinal: u32,
    pub ports: BTreeMap<String, u16>,
    pub version: &'a str,
    /// The server's secrets as this instance sees them.
    pub secrets: crate::secrets::SecretValues,
}

pub fn context(spec: &Spec, p: &Placement<'_>) -> RenderContext {
    RenderContext {
        app: spec.app.clone(),
        server: spec.server.clone(),
        node: p.node.to_string(),
        node_ip: p.node_ip.to_string(),
        ports: p.ports.clone(),
        version: p.version.to_string(),
        instance_dir: if p.data_dir.is_empty() {
            String::new()
        } else {
            format!("{}/instances/{}.{}", p.data_dir, spec.app, spec.server)
        },
        ordinal: p.ordinal,
        secrets: p.secrets.clone(),
    }
}

/// A template of the spec that did not render for an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The spec field: `env.NAME` or `config[0].template`.
    pub what: String,
    pub error: RenderError,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.error)
    }
}

/// The spec's `env` with its templates rendered for the instance.
pub fn env(spec: &Spec, ctx: &RenderContext) -> Result<BTreeMap<String, String>, Failure> {
    spec.env
        .iter()
        .map(|(k, v)| {
            render::render_env(v, ctx)
                .map(|v| (k.clone(), v))
                .map_err(|error| Failure {
                    what: format!("env.{k}"),
                    error,
                })
        })
        .collect()
}

/// What the agent runs the instance from: the spec with this instance's ports, release
/// and rendered environment.
pub fn wire_spec(
    spec: &Spec,
    ports: &BTreeMap<String, u16>,
    package: Option<PackageRef>,
    env: BTreeMap<String, String>,
) -> ServerSpec {
    let mut wire = spec.to_proto();
    for adapter in &mut wire.adapters {
        if let Some(p) = ports.get(&adapter.name) {
            adapter.port = u32::from(*p);
        }
    }
    wire.package = package;
    wire.env = env.into_iter().collect();
    wire
}

/// Renders one config file of the spec.
pub fn file(
    spec: &Spec,
    name: &str,
    ctx: &RenderContext,
    tables: &Tables,
) -> Result<Rendered, Failure> {
    let Some((index, c)) = spec
        .configs
        .iter()
        .enumerate()
        .find(|(_, c)| c.name == name)
    else {
        return Err(Failure {
            what: format!("config {name}"),
            error: RenderError {
                line: None,
                message: "is not in the spec".into(),
            },
        });
    };
    if let Some(secret) = &c.secret {
        let files_index = index
            - spec.configs[..index]
                .iter()
                .filter(|c| c.secret.is_none())
                .count();
        return match ctx.secrets.get(secret) {
            Some(value) => Ok(Rendered {
                content: value.to_string(),
                secrets: [secret.clone()].into(),
                ..Rendered::default()
            }),
            None => Err(Failure {
                what: format!("files[{files_index}].secret"),
                error: RenderError {
                    line: None,
                    message: format!(
                        "secret {secret:?} is not set for this instance (registry secret put \
                         {}.{} {secret} --node N | --ordinal K | --all --file F)",
                        spec.app, spec.server
                    ),
                },
            }),
        };
    }
    render::render(&c.template, ctx, tables).map_err(|error| Failure {
        what: format!("config[{index}].template"),
        error,
    })
}

/// The permission bits an instance's file is written with; 0: the agent's default.
pub fn file_mode(c: &crate::spec::ConfigTemplate, secret: bool) -> u32 {
    match c.mode {
        Some(m) => m,
        None if secret => crate::spec::files::DEFAULT_MODE,
        None => 0,
    }
}

/// Every config file of the spec, rendered for the instance.
pub fn files(
    spec: &Spec,
    ctx: &RenderContext,
    tables: &Tables,
) -> Result<BTreeMap<String, Rendered>, Failure> {
    spec.configs
        .iter()
        .map(|c| file(spec, &c.name, ctx, tables).map(|r| (c.name.clone(), r)))
        .collect()
}
