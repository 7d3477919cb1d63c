//! A spec's `[resources]` against the nodes it names, at `apply` and `expand`: a node
//! without cgroups cannot apply limits (the agent says why when it joins), and no limit
//! may exceed what the node has. A node that has not joined yet is checked by its agent
//! when it does (the instance fails with the reason).

use crate::spec::Spec;
use crate::spec::resources::show_bytes;
use crate::state::Shared;
use crate::store::{NodeRow, StoreError};

/// The problems of `spec`'s limits on `nodes`, each naming the node.
pub fn problems(spec: &Spec, nodes: &[String], rows: &[NodeRow]) -> Vec<String> {
    let Some(r) = &spec.resources else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in nodes {
        let Some(n) = rows.iter().find(|n| &n.name == name) else {
            continue;
        };
        if !n.cgroups {
            let why = if n.cgroups_note.is_empty() {
                "its agent does not report cgroups (an agent older than [resources]?)"
            } else {
                n.cgroups_note.as_str()
            };
            out.push(format!(
                "resources: node {name} cannot apply [resources]: {why}"
            ));
            continue;
        }
        if let Some(m) = r.memory
            && n.memory_bytes > 0
            && m > n.memory_bytes as u64
        {
            out.push(format!(
                "resources.memory: {} is more than node {name} has ({})",
                show_bytes(m),
                show_bytes(n.memory_bytes as u64)
            ));
        }
        if let Some(c) = r.cpu_millis
            && n.cpu_cores > 0
            && i64::from(c) > n.cpu_cores * 1000
        {
            out.push(format!(
                "resources.cpu: {} cores is more than node {name} has ({})",
                f64::from(c) / 1000.0,
                n.cpu_cores
            ));
        }
    }
    out
}

/// [`problems`] with the nodes as the database knows them.
pub async fn check(
    shared: &Shared,
    spec: &Spec,
    nodes: &[String],
) -> Result<Vec<String>, StoreError> {
    if spec.resources.is_none() {
        return Ok(Vec::new());
    }
    let rows = shared.store().list_nodes().await?;
    Ok(problems(spec, nodes, &rows))
}
