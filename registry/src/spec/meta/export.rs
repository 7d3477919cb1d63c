//! A spec's metadata as TOML, for `registry server export`: what [`super::parse`] reads
//! back into the same metadata.

use std::collections::BTreeMap;

use toml::Value;

use super::{Selector, SpecMeta};

/// The TOML lines of an adapter's metadata, for `registry server export`: every key,
/// defaults included, then its overrides.
pub(in crate::spec) fn export_adapter(meta: &SpecMeta, adapter: &str) -> String {
    let a = meta.adapters.get(adapter).cloned().unwrap_or_default();
    let mut out = format!(
        "weight = {}\ntags = {}\nmeta = {}\n",
        a.weight,
        strings(&a.tags),
        inline(&a.meta)
    );
    for o in &a.overrides {
        out.push_str("\n[[adapters.override]]\n");
        match &o.select {
            Selector::Ordinal(n) => out.push_str(&format!("ordinal = {n}\n")),
            Selector::Node(n) => out.push_str(&format!("node = {}\n", Value::String(n.clone()))),
        }
        if let Some(w) = o.weight {
            out.push_str(&format!("weight = {w}\n"));
        }
        if let Some(t) = &o.tags {
            out.push_str(&format!("tags = {}\n", strings(t)));
        }
        if !o.meta.is_empty() {
            out.push_str(&format!("meta = {}\n", inline(&o.meta)));
        }
    }
    out
}

/// `[metrics]` for `registry server export`, when the spec has it.
pub(in crate::spec) fn export_metrics(meta: &SpecMeta) -> String {
    let Some(m) = &meta.metrics else {
        return String::new();
    };
    let mut out = format!(
        "\n[metrics]\nadapter = {}\n",
        Value::String(m.adapter.clone())
    );
    if let Some(p) = &m.path {
        out.push_str(&format!("path = {}\n", Value::String(p.clone())));
    }
    out
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

fn inline(map: &BTreeMap<String, String>) -> Value {
    Value::Table(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}
