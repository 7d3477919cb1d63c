//! `Apply`, `Expand` and `ExportServer`: changes to a server are staged in one
//! transaction, every template is rendered for every instance with its real values, and
//! the change commits only when all of them render (a dry run or preview rolls back, so
//! it says exactly what would happen). An apply that would undo an expand, patch,
//! rollback or undeploy made since the server's last apply needs `force`.

use std::collections::HashMap;

use corral_proto::v1::{
    ApplyRequest, ApplyResponse, ExpandRequest, ExpandResponse, ExpandRow, ExportServerRequest,
    ExportServerResponse,
};
use tonic::Status;
use tracing::info;

use super::split_server;
use crate::configs::check::{self, NodeInfo};
use crate::spec::{self, Spec};
use crate::state::Shared;
use crate::store::{Staged, StoreError, now_ms};

fn problems(source: &str, list: &[String]) -> Status {
    Status::invalid_argument(format!(
        "{source} has {} problem{}:\n{}",
        corral_proto::text::count(list.len()),
        if list.len() == 1 { "" } else { "s" },
        corral_proto::text::first_problems(list, crate::spec::PROBLEMS_SHOWN)
    ))
}

/// Checks every node name of a list, reporting the first problems and how many more
/// there are (10,000 bad names make a few lines, not a status too big to send).
fn check_node_names(flag: &str, nodes: &[String]) -> Result<(), Status> {
    let problems: Vec<String> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            corral_proto::names::check_node_name(n)
                .err()
                .map(|e| format!("{flag}[{i}]: {e}"))
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(Status::invalid_argument(
        corral_proto::text::first_problems(&problems, crate::spec::PROBLEMS_SHOWN),
    ))
}

async fn node_info(shared: &Shared) -> Result<NodeInfo, Status> {
    Ok(shared
        .store()
        .list_nodes()
        .await?
        .into_iter()
        .map(|n| (n.name, (n.address, n.data_dir)))
        .collect())
}

/// Renders every template of the staged server for every instance; rolls the change
/// back and names every problem when one fails. The notes for the operator otherwise.
/// `nodes` is read before the change is staged: a read from the pool while the staged
/// transaction holds SQLite's write lock could wait for a connection that every other
/// one, waiting for that lock, holds (as under a crash storm's writes).
async fn check_staged(
    shared: &Shared,
    staged: Staged,
    source: &str,
    nodes: &NodeInfo,
) -> Result<(Staged, Vec<String>), Status> {
    let live = shared.discovery().render_tables();
    let name = staged.spec.name();
    let states: HashMap<String, String> = live
        .instances
        .get(&name)
        .into_iter()
        .flatten()
        .map(|e| (e.node.clone(), e.state.clone()))
        .collect();
    let tables = check::staged_tables(&live, &staged.spec, &staged.instances, nodes, &states);
    let secrets = if crate::secrets::references(&staged.spec).is_empty()
        && !staged
            .spec
            .configs
            .iter()
            .any(|c| c.template.contains("secret"))
    {
        crate::secrets::ServerSecrets::default()
    } else {
        match shared
            .store()
            .server_secrets(&staged.spec.app, &staged.spec.server)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                staged.rollback().await;
                return Err(e.into());
            }
        }
    };
    match check::check(&staged.spec, &staged.instances, nodes, &tables, &secrets) {
        Ok(notes) => Ok((staged, notes)),
        Err(list) => {
            staged.rollback().await;
            Err(problems(source, &list))
        }
    }
}

/// What applying `new` would undo of the changes made since the last apply: the live
/// spec's nodes and release, where they moved away from the applied spec.
pub fn drift(applied: Option<&Spec>, live: Option<&Spec>, new: &Spec) -> Vec<String> {
    let (Some(applied), Some(live)) = (applied, live) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for node in live.nodes.iter().filter(|n| !applied.nodes.contains(n)) {
        if !new.nodes.contains(node) {
            out.push(format!(
                "removes the instance on {node}, added by `registry server expand` since the last apply"
            ));
        }
    }
    for node in applied.nodes.iter().filter(|n| !live.nodes.contains(n)) {
        if new.nodes.contains(node) {
            out.push(format!(
                "adds back the instance on {node}, undeployed since the last apply"
            ));
        }
    }
    if live.package != applied.package && new.package != live.package {
        let show = |p: &Option<String>| p.clone().unwrap_or_else(|| "none".into());
        out.push(format!(
            "switches the release from {} (set by `registry patch` or `rollback` since the last apply) to {}",
            show(&live.package),
            show(&new.package)
        ));
    }
    out
}

/// How the live spec moved away from the last applied one, for `export`.
fn drift_summary(applied: &Spec, live: &Spec) -> Vec<String> {
    let mut out = Vec::new();
    for node in live.nodes.iter().filter(|n| !applied.nodes.contains(n)) {
        out.push(format!("node {node} was added (registry server expand)"));
    }
    for node in applied.nodes.iter().filter(|n| !live.nodes.contains(n)) {
        out.push(format!(
            "node {node} was removed (registry server undeploy)"
        ));
    }
    if live.package != applied.package {
        let show = |p: &Option<String>| p.clone().unwrap_or_else(|| "none".into());
        out.push(format!(
            "the release went from {} to {} (registry patch or rollback)",
            show(&applied.package),
            show(&live.package)
        ));
    }
    out
}

pub async fn apply(shared: &Shared, req: ApplyRequest) -> Result<ApplyResponse, Status> {
    let source = if req.source.is_empty() {
        "spec"
    } else {
        req.source.as_str()
    };
    let source = corral_proto::text::prefix(source, 256);
    let new = spec::parse(&req.spec_toml, source).map_err(|e| problems(source, &e.0))?;
    let mode = Mode {
        force: req.force,
        dry_run: req.dry_run,
        action: "apply",
    };
    apply_parsed(shared, new, source, mode).await
}

/// How [`apply_parsed`] applies a spec.
pub(super) struct Mode<'a> {
    /// Undo an expand, patch, rollback or undeploy made since the last apply.
    pub force: bool,
    pub dry_run: bool,
    /// What the spec version it stores is named after: apply, "revert to 3".
    pub action: &'a str,
}

/// Applies a checked spec: the package, resource, secret and template checks, then one
/// transaction (rolled back for a dry run).
pub(super) async fn apply_parsed(
    shared: &Shared,
    new: Spec,
    source: &str,
    mode: Mode<'_>,
) -> Result<ApplyResponse, Status> {
    let name = new.name();
    if let Some(version) = &new.package
        && shared
            .store()
            .get_package(&new.app, &new.server, version)
            .await?
            .is_none()
    {
        return Err(problems(
            source,
            &[format!(
                "package: {name} {version} has not been uploaded (see `registry package list --server {name}`)"
            )],
        ));
    }
    let limits = super::resources::check(shared, &new, &new.nodes).await?;
    if !limits.is_empty() {
        return Err(problems(source, &limits));
    }
    let known = node_info(shared).await?;
    let staged = shared
        .store()
        .stage_apply_as(&new, now_ms(), mode.action)
        .await?;
    let undone = drift(staged.applied_before.as_ref(), staged.old.as_ref(), &new);
    if !undone.is_empty() && !mode.force && !mode.dry_run {
        staged.rollback().await;
        return Err(Status::failed_precondition(format!(
            "{source} would undo changes made to {name} since its last apply:\n  {}\n\
             Update the file (`registry server export {name}` prints the live spec), or apply with --force.",
            undone.join("\n  ")
        )));
    }
    let (staged, notes) = check_staged(shared, staged, source, &known).await?;
    let mut changes = spec::describe_changes(staged.old.as_ref(), &new, mode.dry_run);
    if !changes.is_empty() {
        for i in staged.instances.iter().filter(|i| i.added) {
            let ports: Vec<String> = i.ports.iter().map(|(a, p)| format!("{a}:{p}")).collect();
            changes.push(format!(
                "instance on {}: ordinal {}{}",
                i.node,
                i.ordinal,
                if ports.is_empty() {
                    String::new()
                } else {
                    format!(", ports {}", ports.join(", "))
                }
            ));
        }
        for node in new.nodes.iter().filter(|n| !known.contains_key(*n)) {
            changes.push(format!(
                "note: node {node} has not joined yet; its instance starts when it does"
            ));
        }
    }
    for line in undone {
        changes.push(format!(
            "undoes: {line}{}",
            if mode.force { "" } else { " (needs --force)" }
        ));
    }
    changes.extend(notes);
    let nodes = staged.nodes.clone();
    let mut version = staged.version.and_then(|v| u64::try_from(v).ok());
    if mode.dry_run {
        version = None;
        staged.rollback().await;
    } else {
        staged.commit().await?;
        if !nodes.is_empty() {
            shared.changed(&nodes);
            info!(server = %name, changes = changes.len(), "spec applied");
        }
    }
    Ok(ApplyResponse {
        server: name,
        changes,
        dry_run: mode.dry_run,
        version: version.unwrap_or(0),
    })
}

pub async fn expand(shared: &Shared, req: ExpandRequest) -> Result<ExpandResponse, Status> {
    let (app, server) = split_server(&req.server)?;
    if req.nodes.is_empty() {
        return Err(Status::invalid_argument("name at least one node with --to"));
    }
    check_node_names("--to", &req.nodes)?;
    let from = (!req.from.is_empty()).then_some(req.from.as_str());
    let nodes = node_info(shared).await?;
    let staged = shared
        .store()
        .stage_expand(app, server, &req.nodes, from)
        .await?;
    if let Some(f) = from
        && staged
            .old
            .as_ref()
            .is_some_and(|o| !o.nodes.iter().any(|n| n == f))
    {
        staged.rollback().await;
        return Err(Status::invalid_argument(format!(
            "--from {}: {} has no instance there",
            corral_proto::text::quoted(f),
            req.server
        )));
    }
    let limits = super::resources::check(shared, &staged.spec, &req.nodes).await?;
    if !limits.is_empty() {
        staged.rollback().await;
        return Err(problems(&format!("expanding {}", req.server), &limits));
    }
    let (staged, _notes) =
        check_staged(shared, staged, &format!("expanding {}", req.server), &nodes).await?;
    let mut rows = Vec::new();
    for node in &req.nodes {
        let Some(i) = staged.instances.iter().find(|i| &i.node == node) else {
            continue;
        };
        let bind = nodes
            .get(node)
            .map(|n| n.0.clone())
            .unwrap_or_else(|| "(node not joined)".into());
        let row = |adapter: &str, port: u16| ExpandRow {
            node: node.clone(),
            adapter: adapter.to_string(),
            bind: bind.clone(),
            port: u32::from(port),
            exists: !i.added,
        };
        if i.ports.is_empty() {
            rows.push(row("", 0));
        }
        for (adapter, port) in &i.ports {
            rows.push(row(adapter, *port));
        }
    }
    let added: Vec<String> = staged.nodes.clone();
    if req.preview {
        staged.rollback().await;
        return Ok(ExpandResponse {
            rows,
            added: Vec::new(),
        });
    }
    staged.commit().await?;
    if !added.is_empty() {
        shared.changed(&added);
        info!(server = %req.server, nodes = ?added, "expanded");
    }
    Ok(ExpandResponse { rows, added })
}

pub async fn export(
    shared: &Shared,
    req: ExportServerRequest,
) -> Result<ExportServerResponse, Status> {
    let (app, server) = split_server(&req.server)?;
    let row = shared
        .store()
        .get_server(app, server)
        .await?
        .ok_or_else(|| StoreError::ServerNotFound(req.server.clone()))?;
    let drift = row
        .applied
        .as_ref()
        .map(|applied| drift_summary(applied, &row.spec))
        .unwrap_or_default();
    Ok(ExportServerResponse {
        spec_toml: spec::to_toml(&row.spec),
        drift,
    })
}
