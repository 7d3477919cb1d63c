//! Templates checked at `apply` (and `expand`) with real data: every `env` value and
//! config file of the server is rendered for every instance with the values it will
//! really get (its node, ordinal and the ports just allocated), against the fleet's
//! tables with the staged instances in them. An error names the file, the line, the node
//! and the instance; the caller then applies nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::instance::{self, Placement};
use crate::spec::Spec;
use crate::spec::render::{InstanceEntry, Tables};
use crate::store::StagedInstance;

/// A node's advertise IP and data dir (empty strings before it joins).
pub type NodeInfo = HashMap<String, (String, String)>;

/// The tables a template sees once the staged change is in: the server's instances as
/// staged (new ones `pending`), every adapter of it named.
pub fn staged_tables(
    live: &Tables,
    spec: &Spec,
    staged: &[StagedInstance],
    nodes: &NodeInfo,
    states: &HashMap<String, String>,
) -> Tables {
    let mut instances = HashMap::clone(&live.instances);
    let mut endpoints = HashMap::clone(&live.endpoints);
    let prefix = format!("{}.{}", spec.app, spec.server);
    instances.retain(|name, _| name != &prefix && !name.starts_with(&format!("{prefix}.")));
    endpoints.retain(|name, _| !name.starts_with(&format!("{prefix}.")));
    let entries: Vec<InstanceEntry> = staged
        .iter()
        .filter(|i| i.running)
        .map(|i| {
            let host = match &spec.external {
                Some((host, _)) => host.clone(),
                None => nodes.get(&i.node).map(|n| n.0.clone()).unwrap_or_default(),
            };
            let ports = match &spec.external {
                Some((_, port)) => spec
                    .adapters
                    .iter()
                    .map(|a| (a.name.clone(), *port))
                    .collect(),
                None => i.ports.clone(),
            };
            InstanceEntry {
                node: i.node.clone(),
                host,
                port: 0,
                ports,
                ordinal: i.ordinal,
                state: states
                    .get(&i.node)
                    .cloned()
                    .unwrap_or_else(|| "pending".into()),
                healthy: false,
                weight: 0,
                tags: Vec::new(),
                meta: Default::default(),
            }
        })
        .collect();
    let with_port = |adapter: Option<&str>| -> Vec<InstanceEntry> {
        entries
            .iter()
            .map(|e| {
                let a = adapter.or(spec.adapters.first().map(|a| a.name.as_str()));
                let meta = spec
                    .metadata
                    .effective(a.unwrap_or_default(), &e.node, e.ordinal);
                InstanceEntry {
                    port: a.and_then(|a| e.ports.get(a)).copied().unwrap_or(0),
                    weight: meta.weight,
                    tags: meta.tags,
                    meta: meta.meta,
                    ..e.clone()
                }
            })
            .collect()
    };
    instances.insert(prefix.clone(), with_port(None));
    for a in &spec.adapters {
        let name = format!("{prefix}.{}", a.name);
        instances.insert(name.clone(), with_port(Some(&a.name)));
        let live_list = live.endpoints.get(&name).cloned().unwrap_or_default();
        endpoints.insert(name, live_list);
    }
    Tables {
        endpoints: Arc::new(endpoints),
        instances: Arc::new(instances),
    }
}

/// What a name passed to `endpoints()` or `instances()` refers to; None when it is fine.
fn unknown_name(name: &str, tables: &Tables, function: &str) -> Option<Result<String, String>> {
    if tables.instances.contains_key(name) {
        return None;
    }
    let parsed = corral_proto::names::Name::parse(name);
    let (server, adapter) = match parsed {
        Some(n) if n.adapter.is_some() || function == "instances" => {
            (format!("{}.{}", n.app, n.server), n.adapter)
        }
        _ => {
            return Some(Err(format!(
                "{function}({name:?}): write APP.SERVER.ADAPTER{}",
                if function == "instances" {
                    " or APP.SERVER"
                } else {
                    ""
                }
            )));
        }
    };
    if tables.instances.contains_key(&server) {
        let adapters: Vec<&str> = tables
            .instances
            .keys()
            .filter_map(|k| k.strip_prefix(&format!("{server}.")))
            .collect();
        return Some(Err(format!(
            "{function}({name:?}): {server} has no adapter {:?} (it has: {})",
            adapter.unwrap_or(""),
            if adapters.is_empty() {
                "none".to_string()
            } else {
                let mut a = adapters;
                a.sort_unstable();
                a.join(", ")
            }
        )));
    }
    Some(Ok(format!(
        "note: {function}({name:?}) names no server yet; it renders an empty list until {server} is applied"
    )))
}

/// Renders every template of `spec` for every staged instance. Ok: notes for the
/// operator; Err: every problem, each naming the template, line, node and instance.
pub fn check(
    spec: &Spec,
    staged: &[StagedInstance],
    nodes: &NodeInfo,
    tables: &Tables,
    secrets: &crate::secrets::ServerSecrets,
) -> Result<Vec<String>, Vec<String>> {
    let mut problems = Vec::new();
    let mut notes = BTreeSet::new();
    for i in staged {
        let (ip, data_dir) = nodes.get(&i.node).cloned().unwrap_or_default();
        let ctx = instance::context(
            spec,
            &Placement {
                node: &i.node,
                node_ip: &ip,
                data_dir: &data_dir,
                ordinal: i.ordinal,
                ports: i.ports.clone(),
                version: &i.desired_version,
                secrets: secrets.resolve(&i.node, i.ordinal),
            },
        );
        let whose = format!(
            "node {}, instance {}.{}@{}, ordinal {}",
            i.node, spec.app, spec.server, i.node, i.ordinal
        );
        if let Err(f) = instance::env(spec, &ctx) {
            problems.push(format!("{f} ({whose})"));
        }
        for c in &spec.configs {
            let whose = format!("(file {}, {whose})", c.name);
            match instance::file(spec, &c.name, &ctx, tables) {
                Err(f) => problems.push(format!("{f} {whose}")),
                Ok(r) => {
                    let calls = r
                        .endpoints
                        .iter()
                        .map(|n| ("endpoints", n))
                        .chain(r.instances.iter().map(|n| ("instances", n)));
                    for (function, name) in calls {
                        match unknown_name(name, tables, function) {
                            None => {}
                            Some(Ok(note)) => {
                                notes.insert(note);
                            }
                            Some(Err(e)) => problems.push(format!("{e} {whose}")),
                        }
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(notes.into_iter().collect());
    }
    problems.dedup();
    Err(problems)
}
