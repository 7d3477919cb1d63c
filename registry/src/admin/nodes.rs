//! Admin RPCs on nodes.

use corral_proto::names::NODE_NAME_MAX;
use corral_proto::v1::NodeState;
use corral_proto::v1::{
    GetNodeRequest, ListNodesRequest, ListNodesResponse, LoadReport, Node, RemoveNodeRequest,
    RemoveNodeResponse,
};
use corral_proto::wire::number;
use tonic::Status;
use tracing::info;

use crate::state::Shared;
use crate::store::{NodeRow, StoreError};

pub fn node_to_proto(row: NodeRow) -> Node {
    Node {
        name: row.name,
        state: number::<NodeState>(row.state.as_str()),
        address: row.address,
        agent_version: row.agent_version,
        hostname: row.hostname,
        os: row.os,
        kernel: row.kernel,
        cpu_cores: u32::try_from(row.cpu_cores).unwrap_or(0),
        memory_bytes: u64::try_from(row.memory_bytes).unwrap_or(0),
        disk_bytes: u64::try_from(row.disk_bytes).unwrap_or(0),
        load: row.load.map(|l| LoadReport {
            cpu_percent: l.cpu_percent as f32,
            load1: l.load1,
            load5: l.load5,
            load15: l.load15,
            memory_used_bytes: u64::try_from(l.memory_used_bytes).unwrap_or(0),
            disk_free_bytes: u64::try_from(l.disk_free_bytes).unwrap_or(0),
            usage: crate::usage::from_json(&l.instance_usage),
        }),
        last_seen_ms: row.last_seen_ms,
        joined_at_ms: row.joined_at_ms,
        connected_at_ms: row.connected_at_ms,
        instances: Vec::new(),
        cgroups: row.cgroups,
        cgroups_note: row.cgroups_note,
    }
}

pub async fn list(shared: &Shared, _req: ListNodesRequest) -> Result<ListNodesResponse, Status> {
    let nodes = shared.store().list_nodes().await?;
    Ok(ListNodesResponse {
        nodes: nodes.into_iter().map(node_to_proto).collect(),
    })
}

/// One node, with its instances.
pub async fn get(shared: &Shared, req: GetNodeRequest) -> Result<Node, Status> {
    check_length(&req.name)?;
    let Some(row) = shared.store().get_node(&req.name).await? else {
        return Err(StoreError::NodeNotFound(req.name).into());
    };
    let mut node = node_to_proto(row);
    node.instances = shared
        .store()
        .instances_on(&node.name)
        .await?
        .into_iter()
        .map(|i| super::servers::instance_info(i, node.state))
        .collect();
    let usage = node.load.as_ref().map_or(&[][..], |l| &l.usage[..]);
    for i in &mut node.instances {
        i.usage = crate::usage::find(usage, &i.server);
    }
    Ok(node)
}

pub async fn remove(shared: &Shared, req: RemoveNodeRequest) -> Result<RemoveNodeResponse, Status> {
    check_length(&req.name)?;
    shared.store().remove_node(&req.name).await?;
    info!(node = %req.name, "node removed");
    Ok(RemoveNodeResponse {})
}

/// No node name was ever longer than this, so a longer one is refused without being
/// echoed. Only the length: a node that joined under the older, looser name rules
/// (dots, underscores) must stay visible and removable.
pub(crate) fn check_length(name: &str) -> Result<(), Status> {
    if name.len() > NODE_NAME_MAX {
        return Err(Status::invalid_argument(format!(
            "node name is {} bytes; the limit is {NODE_NAME_MAX}",
            name.len()
        )));
    }
    Ok(())
}
