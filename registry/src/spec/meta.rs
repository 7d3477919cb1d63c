//! Endpoint metadata in a spec: each adapter's `weight`, `tags` and `meta`, overridden per
//! instance (by ordinal or node), and the `[metrics]` adapter Prometheus scrapes.
//!
//! ```toml
//! [[adapters]]
//! name = "Main"
//! port = "auto"
//! weight = 10                  # 0-65535, default 1: share of traffic, DNS SRV weight
//! tags = ["v2"]
//! meta = { zone = "a" }
//! [[adapters.override]]        # for one instance: by `ordinal` or by `node`
//! ordinal = 0
//! weight = 5                   # weight and tags replace; meta keys are merged over
//! [[adapters.override]]
//! node = "node-b"
//! meta = { zone = "b" }
//!
//! [metrics]
//! adapter = "Main"             # the adapter Prometheus scrapes
//! path = "/metrics"            # optional: Prometheus' default is /metrics
//! ```
//!
//! Overrides apply in the order written, so a later one wins where two match the same
//! instance. Everything is checked when the spec is parsed, every problem with its path.

use std::collections::BTreeMap;

use corral_proto::text::quoted;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use super::{Adapter, Checker, type_name};

/// The keys an `[[adapters]]` table may hold besides `name` and `port`.
pub(super) const ADAPTER_KEYS: &[&str] = &["weight", "tags", "meta", "override"];
/// The weight of an adapter that sets none.
pub const DEFAULT_WEIGHT: u32 = 1;
const MAX_TAGS: usize = 32;
const MAX_META: usize = 64;
const MAX_META_VALUE: usize = 512;
const MAX_OVERRIDES: usize = 1000;

/// A spec's metadata: only what differs from the defaults is kept, so a spec without
/// any stores (and compares) as it did before metadata existed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecMeta {
    /// Adapter name -> its metadata, for adapters that set any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub adapters: BTreeMap<String, AdapterMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsTarget>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterMeta {
    pub weight: u32,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub overrides: Vec<Override>,
}

impl Default for AdapterMeta {
    fn default() -> Self {
        AdapterMeta {
            weight: DEFAULT_WEIGHT,
            tags: Vec::new(),
            meta: BTreeMap::new(),
            overrides: Vec::new(),
        }
    }
}

/// Which instance an override is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Selector {
    Ordinal(u32),
    Node(String),
}

/// One `[[adapters.override]]`: what it sets for the instance it selects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub select: Selector,
    pub weight: Option<u32>,
    pub tags: Option<Vec<String>>,
    /// Merged over the adapter's `meta`.
    pub meta: BTreeMap<String, String>,
}

/// `[metrics]`: the adapter Prometheus scrapes on every instance, and its path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsTarget {
    pub adapter: String,
    pub path: Option<String>,
}

/// An instance's metadata for one adapter, overrides applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Effective {
    pub weight: u32,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
}

impl SpecMeta {
    pub fn is_empty(&self) -> bool {
        self.adapters.is_empty() && self.metrics.is_none()
    }

    /// What the instance on `node` with `ordinal` has for `adapter`.
    pub fn effective(&self, adapter: &str, node: &str, ordinal: u32) -> Effective {
        let Some(a) = self.adapters.get(adapter) else {
            return Effective {
                weight: DEFAULT_WEIGHT,
                tags: Vec::new(),
                meta: BTreeMap::new(),
            };
        };
        let mut out = Effective {
            weight: a.weight,
            tags: a.tags.clone(),
            meta: a.meta.clone(),
        };
        for o in &a.overrides {
            let applies = match &o.select {
                Selector::Ordinal(n) => *n == ordinal,
                Selector::Node(n) => n == node,
            };
            if !applies {
                continue;
            }
            if let Some(w) = o.weight {
                out.weight = w;
            }
            if let Some(t) = &o.tags {
                out.tags.clone_from(t);
            }
            out.meta
                .extend(o.meta.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out
    }
}

/// Parses the metadata of every adapter and `[metrics]`. `items` are the `[[adapters]]`
/// tables as written (the adapters parsed from them are `adapters`).
pub(super) fn parse(
    c: &mut Checker,
    table: &Table,
    adapters: &[Adapter],
    nodes: &[String],
) -> SpecMeta {
    let mut out = SpecMeta::default();
    if let Some(Value::Array(items)) = table.get("adapters") {
        for (i, item) in items.iter().enumerate() {
            let (Value::Table(t), Some(adapter)) = (item, adapters.get(i)) else {
                continue;
            };
            let meta = adapter_meta(c, t, &format!("adapters[{i}]"), nodes);
            if meta != AdapterMeta::default() {
                out.adapters.insert(adapter.name.clone(), meta);
            }
        }
    }
    out.metrics = metrics(c, table, adapters);
    out
}

fn adapter_meta(c: &mut Checker, t: &Table, path: &str, nodes: &[String]) -> AdapterMeta {
    let mut out = AdapterMeta::default();
    if let Some(w) = c.integer(t, "weight", &format!("{path}.weight"), 0..=65535) {
        out.weight = w as u32;
    }
    if let Some(tags) = tags(c, t, &format!("{path}.tags")) {
        out.tags = tags;
    }
    out.meta = meta(c, t, &format!("{path}.meta"));
    let Some(value) = t.get("override") else {
        return out;
    };
    let opath = format!("{path}.override");
    let Value::Array(items) = value else {
        c.err(
            &opath,
            format!(
                "must be an array of tables ([[adapters.override]]), not {}",
                type_name(value)
            ),
        );
        return out;
    };
    if items.len() > MAX_OVERRIDES {
        c.err(
            &opath,
            format!("has {} entries; the limit is {MAX_OVERRIDES}", items.len()),
        );
        return out;
    }
    for (i, item) in items.iter().enumerate() {
        let p = format!("{opath}[{i}]");
        let Value::Table(o) = item else {
            c.err(&p, format!("must be a table, not {}", type_name(item)));
            continue;
        };
        if let Some(parsed) = one_override(c, o, &p, nodes) {
            if out.overrides.iter().any(|x| x.select == parsed.select) {
                c.err(
                    &p,
                    format!("{} has another override already", describe(&parsed.select)),
                );
            }
            out.overrides.push(parsed);
        }
    }
    out
}

fn describe(s: &Selector) -> String {
    match s {
        Selector::Ordinal(n) => format!("ordinal {n}"),
        Selector::Node(n) => format!("node {}", quoted(n)),
    }
}

fn one_override(c: &mut Checker, o: &Table, p: &str, nodes: &[String]) -> Option<Override> {
    c.unknown_keys(o, p, &["ordinal", "node", "weight", "tags", "meta"]);
    let select = match (o.contains_key("ordinal"), o.contains_key("node")) {
        (true, true) => {
            c.err(
                p,
                "names both an ordinal and a node; an override is for one of them",
            );
            None
        }
        (false, false) => {
            c.err(
                p,
                "needs `ordinal = N` or `node = \"NAME\"`: the instance it is for",
            );
            None
        }
        (true, false) => c
            .integer(o, "ordinal", &format!("{p}.ordinal"), 0..=1_000_000)
            .map(|n| Selector::Ordinal(n as u32)),
        (false, true) => {
            let node = c.string(o, "node", &format!("{p}.node"))?;
            if !nodes.contains(&node) {
                c.err(
                    &format!("{p}.node"),
                    format!("{} is not one of `nodes`", quoted(&node)),
                );
            }
            Some(Selector::Node(node))
        }
    };
    let weight = c
        .integer(o, "weight", &format!("{p}.weight"), 0..=65535)
        .map(|w| w as u32);
    let tags = tags(c, o, &format!("{p}.tags"));
    let meta = meta(c, o, &format!("{p}.meta"));
    if !o.contains_key("weight") && !o.contains_key("tags") && !o.contains_key("meta") {
        c.err(p, "sets nothing; give it weight, tags or meta");
    }
    Some(Override {
        select: select?,
        weight,
        tags,
        meta,
    })
}

/// A tag: what clients filter on (`endpoints(name, tag="v2")`).
fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 63
        && tag
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_.:=/-".contains(ch));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {} must be 1-63 of A-Z a-z 0-9 and _ . : = / -",
            quoted(tag)
        ))
    }
}

fn tags(c: &mut Checker, t: &Table, path: &str) -> Option<Vec<String>> {
    let tags = c.string_array(t, "tags", path)?;
    if tags.len() > MAX_TAGS {
        c.err(
            path,
            format!("has {} tags; the limit is {MAX_TAGS}", tags.len()),
        );
        return None;
    }
    for (i, tag) in tags.iter().enumerate() {
        if let Err(e) = check_tag(tag) {
            c.err(&format!("{path}[{i}]"), e);
        } else if tags[..i].contains(tag) {
            c.err(
                &format!("{path}[{i}]"),
                format!("tag {tag:?} is listed twice"),
            );
        }
    }
    Some(tags)
}

fn meta(c: &mut Checker, t: &Table, path: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(value) = t.get("meta") else {
        return out;
    };
    let Value::Table(m) = value else {
        c.err(
            path,
            format!(
                "must be a table of strings (meta = {{ zone = \"a\" }}), not {}",
                type_name(value)
            ),
        );
        return out;
    };
    if m.len() > MAX_META {
        c.err(
            path,
            format!("has {} keys; the limit is {MAX_META}", m.len()),
        );
        return out;
    }
    for (key, v) in m {
        let p = format!("{path}.{key}");
        let key_ok = !key.is_empty()
            && key.len() <= 63
            && key
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
        if !key_ok {
            c.err(&p, "a meta key must be 1-63 of A-Z a-z 0-9 _ -");
            continue;
        }
        match v {
            Value::String(s) if s.len() > MAX_META_VALUE => c.err(
                &p,
                format!("is {} bytes; the limit is {MAX_META_VALUE}", s.len()),
            ),
            Value::String(s) if s.contains('\0') => c.err(&p, "must not contain NUL"),
            Value::String(s) => {
                out.insert(key.clone(), s.clone());
            }
            other => c.err(&p, format!("must be a string, not {}", type_name(other))),
        }
    }
    out
}

fn metrics(c: &mut Checker, table: &Table, adapters: &[Adapter]) -> Option<MetricsTarget> {
    let t = c.subtable(table, "metrics")?;
    c.unknown_keys(t, "metrics", &["adapter", "path"]);
    let adapter = c.required_string(t, "adapter", "metrics.adapter")?;
    if !adapters.iter().any(|a| a.name == adapter) {
        let names: Vec<&str> = adapters.iter().map(|a| a.name.as_str()).collect();
        c.err(
            "metrics.adapter",
            format!(
                "{} is not an adapter of this server (it has: {})",
                quoted(&adapter),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        );
    }
    let path = c.string(t, "path", "metrics.path");
    if let Some(p) = &path {
        let ok = p.starts_with('/') && p.len() <= 1024 && !p.chars().any(char::is_whitespace);
        if !ok {
            c.err(
                "metrics.path",
                format!(
                    "{} must be a URL path: starting with /, no spaces",
                    quoted(p)
                ),
            );
        }
    }
    Some(MetricsTarget { adapter, path })
}

mod export;
pub(super) use export::{export_adapter, export_metrics};

#[cfg(test)]
mod tests;
