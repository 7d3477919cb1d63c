//! Admin RPCs on servers: apply a spec, list, status, start/stop/restart/undeploy.

use std::collections::{BTreeMap, HashMap};

use corral_proto::v1::{
    ApplyRequest, ApplyResponse, ControlServerRequest, ControlServerResponse, ExpandRequest,
    ExpandResponse, ExpandRow, Install, InstanceInfo, ListServersRequest, ListServersResponse,
    ServerStatusRequest, ServerStatusResponse, ServerSummary,
};
use tonic::Status;
use tracing::info;

use super::split_server;
use crate::server::Shared;
use crate::spec;
use crate::store::{Action, InstanceRow, StoreError, now_ms};

pub async fn apply(shared: &Shared, req: ApplyRequest) -> Result<ApplyResponse, Status> {
    let source = if req.source.is_empty() {
        "spec"
    } else {
        req.source.as_str()
    };
    let new = spec::parse(&req.spec_toml, source).map_err(|e| {
        Status::invalid_argument(format!(
            "{source} has {} problem{}:\n{e}",
            e.0.len(),
            if e.0.len() == 1 { "" } else { "s" }
        ))
    })?;
    let name = new.name();
    if let Some(version) = &new.package
        && shared
            .store
            .get_package(&new.app, &new.server, version)
            .await?
            .is_none()
    {
        return Err(Status::invalid_argument(format!(
            "{source} has 1 problem:\npackage: {name} {version} has not been uploaded (see `registry package list --server {name}`)"
        )));
    }
    let (old, changed_nodes) = if req.dry_run {
        let old = shared
            .store
            .get_server(&new.app, &new.server)
            .await?
            .map(|r| r.spec);
        (old, Vec::new())
    } else {
        let applied = shared.store.apply_spec(&new, now_ms()).await?;
        (applied.old, applied.nodes)
    };
    let mut changes = spec::describe_changes(old.as_ref(), &new);
    if !changes.is_empty() {
        let known: Vec<String> = shared
            .store
            .list_nodes()
            .await?
            .into_iter()
            .map(|n| n.name)
            .collect();
        for node in new.nodes.iter().filter(|n| !known.contains(n)) {
            changes.push(format!(
                "note: node {node} has not joined yet; its instance starts when it does"
            ));
        }
    }
    if !req.dry_run && !changed_nodes.is_empty() {
        shared.changed(&changed_nodes).await;
        info!(server = %name, changes = changes.len(), "spec applied");
    }
    Ok(ApplyResponse {
        server: name,
        changes,
        dry_run: req.dry_run,
    })
}

pub async fn list(
    shared: &Shared,
    _req: ListServersRequest,
) -> Result<ListServersResponse, Status> {
    let servers = shared.store.list_servers().await?;
    let mut states: HashMap<(String, String), BTreeMap<String, u32>> = HashMap::new();
    for i in shared.store.all_instances().await? {
        *states
            .entry((i.app, i.server))
            .or_default()
            .entry(i.state)
            .or_default() += 1;
    }
    Ok(ListServersResponse {
        servers: servers
            .into_iter()
            .map(|s| {
                let key = (s.spec.app.clone(), s.spec.server.clone());
                ServerSummary {
                    app: s.spec.app,
                    server: s.spec.server,
                    nodes: s.spec.nodes,
                    states: states
                        .remove(&key)
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                    updated_at_ms: s.updated_at_ms,
                }
            })
            .collect(),
    })
}

pub async fn status(
    shared: &Shared,
    req: ServerStatusRequest,
) -> Result<ServerStatusResponse, Status> {
    let (app, server) = split_server(&req.server)?;
    if shared.store.get_server(app, server).await?.is_none() {
        return Err(StoreError::ServerNotFound(req.server).into());
    }
    let node_states: HashMap<String, String> = shared
        .store
        .list_nodes()
        .await?
        .into_iter()
        .map(|n| (n.name, n.state.as_str().to_string()))
        .collect();
    let instances = shared.store.instances_of(app, server).await?;
    Ok(ServerStatusResponse {
        server: req.server.clone(),
        instances: instances
            .into_iter()
            .map(|i| {
                let node_state = node_states
                    .get(&i.node)
                    .cloned()
                    .unwrap_or_else(|| "unknown".into());
                instance_info(i, node_state)
            })
            .collect(),
    })
}

/// An instance as the admin API shows it (server status, node show).
pub fn instance_info(i: InstanceRow, node_state: String) -> InstanceInfo {
    let install = (!i.install_version.is_empty()).then(|| Install {
        version: i.install_version,
        state: i.install_state,
        percent: u32::try_from(i.install_percent).unwrap_or(0),
        error: i.install_error,
    });
    InstanceInfo {
        server: format!("{}.{}", i.app, i.server),
        node_state,
        node: i.node,
        desired: i.desired,
        state: i.state,
        pid: u32::try_from(i.pid).unwrap_or(0),
        restarts: u64::try_from(i.restarts).unwrap_or(0),
        started_at_ms: i.started_at_ms,
        last_exit: i.last_exit,
        last_error: i.last_error,
        version: i.version,
        reported_at_ms: i.reported_at_ms,
        health: i.health,
        health_error: i.health_error,
        install,
    }
}

pub async fn control(
    shared: &Shared,
    req: ControlServerRequest,
) -> Result<ControlServerResponse, Status> {
    let (app, server) = split_server(&req.server)?;
    let action = match req.action.as_str() {
        "start" => Action::Start,
        "stop" => Action::Stop,
        "restart" => Action::Restart,
        "undeploy" => Action::Undeploy,
        other => {
            return Err(Status::invalid_argument(format!(
                "action {other:?} is not one of start, stop, restart, undeploy"
            )));
        }
    };
    let node = (!req.node.is_empty()).then_some(req.node.as_str());
    let nodes = shared.store.control(app, server, node, action).await?;
    shared.changed(&nodes).await;
    info!(server = %req.server, action = %req.action, nodes = ?nodes, "instances changed");
    Ok(ControlServerResponse { nodes })
}

pub async fn expand(shared: &Shared, req: ExpandRequest) -> Result<ExpandResponse, Status> {
    let (app, server) = split_server(&req.server)?;
    if req.nodes.is_empty() {
        return Err(Status::invalid_argument("name at least one node with --to"));
    }
    for n in &req.nodes {
        corral_proto::names::check_node_name(n).map_err(Status::invalid_argument)?;
    }
    let current = shared
        .store
        .get_server(app, server)
        .await?
        .ok_or_else(|| StoreError::ServerNotFound(req.server.clone()))?;
    let from = (!req.from.is_empty()).then_some(req.from.as_str());
    if let Some(f) = from
        && !current.spec.nodes.iter().any(|n| n == f)
    {
        return Err(Status::invalid_argument(format!(
            "--from {f}: {} has no instance there",
            req.server
        )));
    }
    let nodes: HashMap<String, String> = shared
        .store
        .list_nodes()
        .await?
        .into_iter()
        .map(|n| (n.name, n.address))
        .collect();
    let mut rows = Vec::new();
    for node in &req.nodes {
        let exists = current.spec.nodes.contains(node);
        let ports: Vec<(String, u16)> = if exists {
            shared
                .store
                .instance_ports(app, server, node)
                .await?
                .into_iter()
                .collect()
        } else {
            shared.store.plan_ports(&current.spec, node).await?
        };
        let bind = nodes
            .get(node)
            .cloned()
            .unwrap_or_else(|| "(node not joined)".into());
        if ports.is_empty() {
            rows.push(ExpandRow {
                node: node.clone(),
                adapter: String::new(),
                bind: bind.clone(),
                port: 0,
                exists,
            });
        }
        for (adapter, port) in ports {
            rows.push(ExpandRow {
                node: node.clone(),
                adapter,
                bind: bind.clone(),
                port: u32::from(port),
                exists,
            });
        }
    }
    if req.preview {
        return Ok(ExpandResponse {
            rows,
            added: Vec::new(),
        });
    }
    let added = shared.store.expand(app, server, &req.nodes, from).await?;
    if !added.is_empty() {
        shared.changed(&added).await;
        info!(server = %req.server, nodes = ?added, "expanded");
    }
    // The ports actually allocated, now that they are.
    for row in rows.iter_mut().filter(|r| added.contains(&r.node)) {
        if let Some(p) = shared
            .store
            .instance_ports(app, server, &row.node)
            .await?
            .get(&row.adapter)
        {
            row.port = u32::from(*p);
        }
    }
    Ok(ExpandResponse { rows, added })
}
