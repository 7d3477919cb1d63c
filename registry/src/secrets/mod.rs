//! Per-instance secrets: values an operator puts for some instances of a server
//! (`registry secret put APP.SERVER NAME --node N | --ordinal K | --all --file F`), sealed
//! at rest in the database ([`key`]), delivered only to the agent of the node that runs
//! the instance, as a `[[files]]` entry of the spec or through `secret('NAME')` in a
//! template, and never shown: listings carry names, scopes and versions; errors and logs
//! name secrets, not values.
//!
//! * [`key`] — the key and sealing;
//! * [`startup`] — which key a registry uses, checked against the database;
//! * `crate::store::secrets` — the rows; `crate::admin::secrets` — the RPCs;
//!   `crate::cli::secret` — the commands.

pub mod key;
pub mod startup;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::spec::Spec;

/// The most a secret value may hold.
pub const MAX_VALUE: usize = 1024 * 1024;

/// Which instances of a server a value is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    All,
    Node(String),
    Ordinal(u32),
}

impl Scope {
    /// The `scope` and `target` columns.
    pub fn columns(&self) -> (&'static str, String) {
        match self {
            Scope::All => ("all", String::new()),
            Scope::Node(n) => ("node", n.clone()),
            Scope::Ordinal(k) => ("ordinal", k.to_string()),
        }
    }

    pub fn from_columns(scope: &str, target: &str) -> Option<Scope> {
        match scope {
            "all" => Some(Scope::All),
            "node" => Some(Scope::Node(target.to_string())),
            "ordinal" => target.parse().ok().map(Scope::Ordinal),
            _ => None,
        }
    }

    /// How a scope reads in messages: `--all`, `--node node-a`, `--ordinal 2`.
    pub fn flag(&self) -> String {
        match self {
            Scope::All => "--all".into(),
            Scope::Node(n) => format!("--node {n}"),
            Scope::Ordinal(k) => format!("--ordinal {k}"),
        }
    }

    /// Whether the value is for the instance on `node` with `ordinal`, and how
    /// specifically (higher wins).
    fn rank(&self, node: &str, ordinal: u32) -> Option<u8> {
        match self {
            Scope::Node(n) if n == node => Some(3),
            Scope::Ordinal(k) if *k == ordinal => Some(2),
            Scope::All => Some(1),
            _ => None,
        }
    }
}

/// The opened secret values of one server: name -> scope -> value.
#[derive(Clone, Default)]
pub struct ServerSecrets(pub BTreeMap<String, BTreeMap<Scope, String>>);

impl ServerSecrets {
    /// The values an instance sees: for each name, the most specific value for it.
    pub fn resolve(&self, node: &str, ordinal: u32) -> SecretValues {
        let mut out = BTreeMap::new();
        for (name, scopes) in &self.0 {
            let best = scopes
                .iter()
                .filter_map(|(s, v)| s.rank(node, ordinal).map(|r| (r, v)))
                .max_by_key(|(r, _)| *r);
            if let Some((_, v)) = best {
                out.insert(name.clone(), v.clone());
            }
        }
        SecretValues(Arc::new(out))
    }
}

/// The secret values one instance sees. Its `Debug` shows names only, so a context
/// logged by mistake does not carry them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretValues(pub Arc<BTreeMap<String, String>>);

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl SecretValues {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Checks a secret's name: a plain file name, as `[[files]]` names are.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "secret name {} must be 1-255 of [A-Za-z0-9._-] (not . or ..)",
            corral_proto::text::quoted(name)
        ))
    }
}

/// The secrets a spec reads, each with where: `[[files]]` entries, and `secret('NAME')`
/// calls with a literal name in its config templates.
pub fn references(spec: &Spec) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in &spec.configs {
        match &c.secret {
            Some(name) => {
                out.entry(name.clone())
                    .or_default()
                    .insert(format!("[[files]] {}", c.name));
            }
            None => {
                for name in literal_calls(&c.template) {
                    out.entry(name)
                        .or_default()
                        .insert(format!("[[config]] {}", c.name));
                }
            }
        }
    }
    out
}

/// The literal names of `secret('…')` / `secret("…")` calls in a template.
fn literal_calls(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find("secret(") {
        rest = &rest[at + "secret(".len()..];
        let trimmed = rest.trim_start();
        let Some(quote) = trimmed.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            continue;
        };
        if let Some(end) = trimmed[1..].find(quote) {
            out.push(trimmed[1..1 + end].to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_value_wins() {
        let mut s = ServerSecrets::default();
        let name = s.0.entry("ssl.key".into()).or_default();
        name.insert(Scope::All, "all".into());
        name.insert(Scope::Ordinal(1), "ord1".into());
        name.insert(Scope::Node("node-b".into()), "b".into());
        s.0.entry("only-a".into())
            .or_default()
            .insert(Scope::Node("node-a".into()), "a".into());
        let a = s.resolve("node-a", 0);
        assert_eq!(a.get("ssl.key"), Some("all"));
        assert_eq!(a.get("only-a"), Some("a"));
        assert_eq!(s.resolve("node-c", 1).get("ssl.key"), Some("ord1"));
        assert_eq!(s.resolve("node-b", 1).get("ssl.key"), Some("b"));
        assert_eq!(s.resolve("node-c", 2).get("only-a"), None);
        assert_eq!(format!("{a:?}"), r#"{"only-a", "ssl.key"}"#);
    }

    #[test]
    fn literal_secret_calls_are_found() {
        assert_eq!(
            literal_calls("a {{ secret('x.pem') }} {{secret( \"y\" )}} {{ secret(n) }}"),
            vec!["x.pem".to_string(), "y".to_string()]
        );
        assert!(check_name("ssl.key").is_ok());
        assert!(check_name("../x").is_err());
    }
}
