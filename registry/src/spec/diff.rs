//! What an apply changes, in words, for `registry apply` (and its `--dry-run`).

use super::Spec;

fn list(items: &[String]) -> String {
    items.join(", ")
}

/// One line per change from `old` (None: a new server) to `new`. Empty: no change. A
/// dry run says what would happen, in the conditional.
pub fn describe_changes(old: Option<&Spec>, new: &Spec, dry_run: bool) -> Vec<String> {
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
            "remove instances on {} ({})",
            list(&removed),
            if dry_run {
                "they would be stopped"
            } else {
                "stopping them"
            }
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
    if old.health != new.health {
        out.push(format!("health: {:?} -> {:?}", old.health, new.health));
    }
    if old.external != new.external {
        out.push(format!("address: {:?} -> {:?}", old.external, new.external));
    }
    let restarts = old.command != new.command
        || old.env != new.env
        || old.user != new.user
        || old.adapters != new.adapters
        || old.restart != new.restart
        || old.stop != new.stop
        || old.health != new.health
        || old.package != new.package
        || old.external != new.external;
    if restarts {
        out.push(format!(
            "running instances restart{} for the new spec, all at once",
            if dry_run { " would" } else { "" }
        ));
    }
    for c in &new.configs {
        let how = match c.on_change.as_str() {
            "restart" if !restarts => format!(
                "running instances are restarted for it {} at a time, each once healthy again",
                new.config_restart.batch
            ),
            "restart" => "written before the restart".to_string(),
            "none" => "written; nothing else is done".to_string(),
            signal => format!(
                "written, then {} sent",
                signal.trim_start_matches("signal:")
            ),
        };
        match old.configs.iter().find(|o| o.name == c.name) {
            None => out.push(format!("config {}: added ({how})", c.name)),
            Some(o) if o != c => out.push(format!("config {}: changed ({how})", c.name)),
            Some(_) => {}
        }
    }
    for o in old
        .configs
        .iter()
        .filter(|o| !new.configs.iter().any(|c| c.name == o.name))
    {
        out.push(format!(
            "config {}: no longer rendered (the file stays)",
            o.name
        ));
    }
    if old.config_restart != new.config_restart {
        out.push(format!(
            "config_restart: {:?} -> {:?}",
            old.config_restart, new.config_restart
        ));
    }
    out
}
