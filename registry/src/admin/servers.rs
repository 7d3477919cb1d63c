//! Admin RPCs on servers: list, status, start/stop/restart/undeploy (apply and expand
//! are in [`super::apply`]).

use corral_proto::v1::{
    HealthStatus, InstallState, InstanceState, NodeState, RunState, ServerAction,
};
use corral_proto::wire::{known, number};
use std::collections::{BTreeMap, HashMap, HashSet};

use corral_proto::v1::{
    ControlServerRequest, ControlServerResponse, Install, InstanceInfo, ListServersRequest,
    ListServersResponse, ServerStatusRequest, ServerStatusResponse, ServerSummary,
};
use tonic::Status;
use tracing::info;

use super::split_server;
use crate::state::Shared;
use crate::store::{Action, InstanceRow, StoreError};

pub async fn list(
    shared: &Shared,
    _req: ListServersRequest,
) -> Result<ListServersResponse, Status> {
    let servers = shared.store().list_servers().await?;
    let mut states: HashMap<(String, String), BTreeMap<String, u32>> = HashMap::new();
    for i in shared.store().all_instances().await? {
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
    let instances = shared.store().instances_of(app, server).await?;
    // A server with instances exists; only one without needs the servers table.
    if instances.is_empty() && shared.store().get_server(app, server).await?.is_none() {
        return Err(StoreError::ServerNotFound(req.server).into());
    }
    let nodes = shared.store().list_nodes().await?;
    // Usage is parsed only for the nodes this server runs on (each node's usage lists
    // every instance on it).
    let on: HashSet<&str> = instances.iter().map(|i| i.node.as_str()).collect();
    let usage: HashMap<String, Vec<corral_proto::v1::InstanceUsage>> = nodes
        .iter()
        .filter(|n| on.contains(n.name.as_str()))
        .filter_map(|n| {
            Some((
                n.name.clone(),
                crate::usage::from_json(&n.load.as_ref()?.instance_usage),
            ))
        })
        .collect();
    let node_states: HashMap<String, i32> = nodes
        .into_iter()
        .map(|n| (n.name, number::<NodeState>(n.state.as_str())))
        .collect();
    Ok(ServerStatusResponse {
        server: req.server.clone(),
        instances: instances
            .into_iter()
            .map(|i| {
                // A node that never joined has no state: left unset.
                let node_state = node_states.get(&i.node).copied().unwrap_or(0);
                let used = usage.get(&i.node).map_or(&[][..], |u| &u[..]);
                let mut info = instance_info(i, node_state);
                info.usage = crate::usage::find(used, &info.server);
                info
            })
            .collect(),
    })
}

/// An instance as the admin API shows it (server status, node show).
pub fn instance_info(i: InstanceRow, node_state: i32) -> InstanceInfo {
    let install = (!i.install_version.is_empty()).then(|| Install {
        version: i.install_version,
        state: number::<InstallState>(&i.install_state),
        percent: u32::try_from(i.install_percent).unwrap_or(0),
        error: i.install_error,
    });
    InstanceInfo {
        server: format!("{}.{}", i.app, i.server),
        node_state,
        node: i.node,
        desired: number::<RunState>(&i.desired),
        state: number::<InstanceState>(&i.state),
        pid: u32::try_from(i.pid).unwrap_or(0),
        restarts: u64::try_from(i.restarts).unwrap_or(0),
        started_at_ms: i.started_at_ms,
        last_exit: i.last_exit,
        last_error: i.last_error,
        version: i.version,
        reported_at_ms: i.reported_at_ms,
        health: number::<HealthStatus>(&i.health),
        health_error: i.health_error,
        install,
        ordinal: u32::try_from(i.ordinal).unwrap_or(0),
        config_hold: i.config_hold,
        usage: None,
    }
}

pub async fn control(
    shared: &Shared,
    req: ControlServerRequest,
) -> Result<ControlServerResponse, Status> {
    let (app, server) = split_server(&req.server)?;
    let action = match known::<ServerAction>("ControlServerRequest.action", req.action)
        .map_err(|e| Status::invalid_argument(e.to_string()))?
    {
        ServerAction::Start => Action::Start,
        ServerAction::Stop => Action::Stop,
        ServerAction::Restart => Action::Restart,
        ServerAction::Undeploy => Action::Undeploy,
        ServerAction::Unspecified => {
            return Err(Status::invalid_argument(
                "ControlServerRequest.action is not set",
            ));
        }
    };
    let node = (!req.node.is_empty()).then_some(req.node.as_str());
    if let Some(n) = node {
        super::nodes::check_length(n)?;
    }
    let nodes = shared.store().control(app, server, node, action).await?;
    shared.changed(&nodes);
    info!(server = %req.server, action = %req.action, nodes = ?nodes, "instances changed");
    Ok(ControlServerResponse { nodes })
}
