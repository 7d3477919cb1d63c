//! What an apply changes, in words, for `registry apply` (and its `--dry-run`).

use super::Spec;

fn list(items: &[String]) -> String {
    items.join(", ")
}

/// One line per change from `old` (None: a new server) to `new`. Empty: no change.
pub fn describe_changes(old: Option<&Spec>, new: &Spec) -> Vec<String> {
    let Some(old) = old else {
        return vec![format!(
            "create server {} on {} ({} instance{})",
            new.name(),
            list(&new.nodes),
            new.nodes.len(),
            if new.nodes.len() == 1 { "" } else { "s" }
        )];
    };
    let mut out = Vec::new();
    let added: Vec<String> = new
        .nodes
        .iter()
        .filter(|n| !old.nodes.contains(n))
        .cloned()
        .collect();
    let removed: Vec<String> = old
        .nodes
        .iter()
        .filter(|n| !new.nodes.contains(n))
        .cloned()
        .collect();
    if !added.is_empty() {
        out.push(format!("add instances on {}", list(&added)));
    }
    if !removed.is_empty() {
        out.push(format!(
            "remove instances on {} (they are stopped)",
            list(&removed)
        ));
    }
    if old.package != new.package {
        let show = |p: &Option<String>| p.clone().unwrap_or_else(|| "none".into());
        out.push(format!("package: {} -> {} (every instance switches now; `registry patch` rolls out in batches)", show(&old.package), show(&new.package)));
    }
    if old.command != new.command {
        out.push(format!("command: {:?} -> {:?}", old.command, new.command));
    }
    if old.env != new.env {
        for (k, v) in &new.env {
            match old.env.get(k) {
                None => out.push(format!("env.{k}: set to {v:?}")),
                Some(o) if o != v => out.push(format!("env.{k}: {o:?} -> {v:?}")),
                Some(_) => {}
            }
        }
        for k in old.env.keys().filter(|k| !new.env.contains_key(*k)) {
            out.push(format!("env.{k}: removed"));
        }
    }
    if old.user != new.user {
        out.push(format!("user: {:?} -> {:?}", old.user, new.user));
    }
    if old.state != new.state {
        out.push(format!(
            "state: {} -> {}",
            old.state.as_str(),
            new.state.as_str()
        ));
    }
    if old.adapters != new.adapters {
        let show = |s: &Spec| {
            s.adapters
                .iter()
                .map(|a| format!("{}:{}", a.name, a.port))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push(format!("adapters: [{}] -> [{}]", show(old), show(new)));
    }
    if old.restart != new.restart {
        out.push(format!("restart: {:?} -> {:?}", old.restart, new.restart));
    }
    if old.stop != new.stop {
        out.push(format!("stop: {:?} -> {:?}", old.stop, new.stop));
    }
    out
}
