//! `registry node list|show|remove`.

use clap::Subcommand;
use corral_proto::v1::{GetNodeRequest, InstanceInfo, ListNodesRequest, Node, RemoveNodeRequest};
use corral_proto::v1::{HealthStatus, NodeState};
use corral_proto::wire::name_of;
use serde_json::{Value, json};

use super::output::{ago_ms, bytes, print_table, time_ms};
use super::server::{error_cell, instance_json, pid_cell, state_cell, usage_cells};
use super::{CliError, ClientArgs, Format, connect};
use crate::store::now_ms;

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// List every node that has joined.
    List,
    /// Show one node.
    Show { name: String },
    /// Forget a node and revoke its identity (refused while the node is up).
    Remove { name: String },
}

pub fn node_json(n: &Node) -> Value {
    json!({
        "name": n.name,
        "state": name_of::<NodeState>(n.state),
        "address": n.address,
        "agent_version": n.agent_version,
        "hostname": n.hostname,
        "os": n.os,
        "kernel": n.kernel,
        "cpu_cores": n.cpu_cores,
        "memory_bytes": n.memory_bytes,
        "disk_bytes": n.disk_bytes,
        "load": n.load.as_ref().map(|l| json!({
            "cpu_percent": l.cpu_percent,
            "load1": l.load1,
            "load5": l.load5,
            "load15": l.load15,
            "memory_used_bytes": l.memory_used_bytes,
            "disk_free_bytes": l.disk_free_bytes,
        })),
        "last_seen": time_ms(n.last_seen_ms),
        "last_seen_ms": n.last_seen_ms,
        "joined_at": time_ms(n.joined_at_ms),
        "connected_at": time_ms(n.connected_at_ms),
        "connected_at_ms": n.connected_at_ms,
        "cgroups": n.cgroups,
        "cgroups_note": n.cgroups_note,
    })
}

/// A node's instances: one row each.
fn print_instances(instances: &[InstanceInfo]) {
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            let [cpu, memory, pids] = usage_cells(i);
            vec![
                i.server.clone(),
                i.ordinal.to_string(),
                state_cell(i),
                name_of::<HealthStatus>(i.health),
                pid_cell(i.pid),
                i.version.clone(),
                cpu,
                memory,
                pids,
                error_cell(i),
            ]
        })
        .collect();
    print_table(
        &[
            "SERVER",
            "ORDINAL",
            "STATE",
            "HEALTH",
            "PID",
            "VERSION",
            "CPU",
            "MEMORY",
            "PIDS",
            "LAST ERROR",
        ],
        &rows,
    );
}

pub async fn run(cmd: NodeCommand, args: &ClientArgs) -> Result<(), CliError> {
    let mut client = connect(args).await?;
    match cmd {
        NodeCommand::List => {
            let nodes = client
                .list_nodes(ListNodesRequest {})
                .await?
                .into_inner()
                .nodes;
            if args.output == Format::Json {
                let all: Vec<Value> = nodes.iter().map(node_json).collect();
                println!("{}", Value::Array(all));
                return Ok(());
            }
            let now = now_ms();
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| {
                    vec![
                        n.name.clone(),
                        name_of::<NodeState>(n.state),
                        n.address.clone(),
                        n.agent_version.clone(),
                        n.cpu_cores.to_string(),
                        bytes(n.memory_bytes),
                        n.load
                            .as_ref()
                            .map_or_else(String::new, |l| format!("{:.2}", l.load1)),
                        ago_ms(n.last_seen_ms, now),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "STATE",
                    "ADDRESS",
                    "VERSION",
                    "CPUS",
                    "MEMORY",
                    "LOAD",
                    "LAST SEEN",
                ],
                &rows,
            );
        }
        NodeCommand::Show { name } => {
            let n = client.get_node(GetNodeRequest { name }).await?.into_inner();
            if args.output == Format::Json {
                let mut v = node_json(&n);
                v["instances"] = n.instances.iter().map(instance_json).collect();
                println!("{v}");
                return Ok(());
            }
            let now = now_ms();
            let load = n.load.as_ref().map_or_else(
                || "no report yet".to_string(),
                |l| {
                    format!(
                        "cpu {:.1}%, load {:.2} {:.2} {:.2}, memory used {}, disk free {}",
                        l.cpu_percent,
                        l.load1,
                        l.load5,
                        l.load15,
                        bytes(l.memory_used_bytes),
                        bytes(l.disk_free_bytes)
                    )
                },
            );
            let rows = vec![
                vec!["name".into(), n.name.clone()],
                vec!["state".into(), name_of::<NodeState>(n.state)],
                vec!["address".into(), n.address.clone()],
                vec!["hostname".into(), n.hostname.clone()],
                vec!["agent version".into(), n.agent_version.clone()],
                vec!["os".into(), format!("{} (kernel {})", n.os, n.kernel)],
                vec!["cpu cores".into(), n.cpu_cores.to_string()],
                vec!["memory".into(), bytes(n.memory_bytes)],
                vec!["disk".into(), bytes(n.disk_bytes)],
                vec!["load".into(), load],
                vec![
                    "cgroups".into(),
                    if n.cgroups {
                        format!("yes: {}", n.cgroups_note)
                    } else if n.cgroups_note.is_empty() {
                        "not reported".into()
                    } else {
                        format!("no ([resources] refused): {}", n.cgroups_note)
                    },
                ],
                vec![
                    "last seen".into(),
                    format!(
                        "{} ({})",
                        time_ms(n.last_seen_ms),
                        ago_ms(n.last_seen_ms, now)
                    ),
                ],
                vec!["connected at".into(), time_ms(n.connected_at_ms)],
                vec!["joined at".into(), time_ms(n.joined_at_ms)],
            ];
            print_table(&["FIELD", "VALUE"], &rows);
            println!();
            if n.instances.is_empty() {
                println!("no instances on {}", n.name);
            } else {
                print_instances(&n.instances);
            }
        }
        NodeCommand::Remove { name } => {
            client
                .remove_node(RemoveNodeRequest { name: name.clone() })
                .await?;
            println!("removed node {name}");
        }
    }
    Ok(())
}
