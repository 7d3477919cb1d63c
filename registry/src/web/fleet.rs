//! The fleet at a glance: nodes (with their facts, load and instances) and servers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use corral_proto::v1::{InstanceState, ListNodesRequest, ListServersRequest, NodeState};
use maud::{Markup, html};

use super::layout::{self, Nav};
use super::{Access, Web, WebError};
use crate::admin::{nodes, servers};

/// `/`: every node with its state, facts, load and instance count.
pub async fn nodes_page(State(web): State<Arc<Web>>, access: Access) -> Result<Markup, WebError> {
    let shared = &web.shared;
    let list = nodes::list(shared, ListNodesRequest {}).await?.nodes;
    // Counts only: specs for instances per node, one GROUP BY for the states (not every
    // instance row: this is the page an operator keeps open).
    let servers = shared.store().list_servers().await?;
    let states = shared.store().count_instances_by_state().await?;
    let mut per_node: HashMap<&str, u32> = HashMap::new();
    for s in &servers {
        for n in &s.spec.nodes {
            *per_node.entry(n.as_str()).or_default() += 1;
        }
    }
    let up = list
        .iter()
        .filter(|n| n.state == NodeState::Up as i32)
        .count();
    let count = |pick: &dyn Fn(&str) -> bool| -> i64 {
        states.iter().filter(|(k, _)| pick(k)).map(|(_, n)| n).sum()
    };
    let instances = count(&|_| true);
    let running = count(&|k| k == "running");
    let troubled = count(&|k| ["crash-looping", "failed", "backoff", "exited"].contains(&k));
    let content = html! {
        div.stats {
            div.stat { b #nodes-up { (up) " / " (list.len()) } span { "nodes up" } }
            div.stat { b { (servers.len()) } span { "servers" } }
            div.stat { b { (running) " / " (instances) } span { "instances running" } }
            div.stat { b { (troubled) } span { "instances failing" } }
        }
        table #nodes {
            thead { tr {
                th { "Node" } th { "State" } th { "Address" } th { "Host" } th { "OS / kernel" }
                th.num { "Cores" } th.num { "Memory" } th.num { "CPU" } th.num { "Load 1/5/15" }
                th.num { "Mem used" } th.num { "Disk free" } th.num { "Instances" }
                th { "Agent" } th { "Last seen" }
            } }
            tbody {
                @for n in &list {
                    tr data-node=(n.name) {
                        td { b { (n.name) } }
                        td.state { (layout::node_state(n.state)) }
                        td.mono { (n.address) }
                        td { (n.hostname) }
                        td.muted { (n.os) " · " (n.kernel) }
                        td.num { (n.cpu_cores) }
                        td.num { (layout::bytes(n.memory_bytes)) }
                        @if let Some(l) = &n.load {
                            td.num { (format!("{:.0}%", l.cpu_percent)) }
                            td.num.mono { (format!("{:.2} {:.2} {:.2}", l.load1, l.load5, l.load15)) }
                            td.num { (layout::bytes(l.memory_used_bytes)) }
                            td.num { (layout::bytes(l.disk_free_bytes)) }
                        } @else {
                            td.num.muted { "—" } td.num.muted { "—" } td.num.muted { "—" } td.num.muted { "—" }
                        }
                        td.num { (per_node.get(n.name.as_str()).copied().unwrap_or(0)) }
                        td.muted { (n.agent_version) }
                        td.muted title=(layout::at(n.last_seen_ms)) { (layout::ago(n.last_seen_ms)) }
                    }
                }
                @if list.is_empty() {
                    tr { td.muted colspan="14" { "No node has joined yet: start an agent with --locator pointing here." } }
                }
            }
        }
    };
    Ok(layout::page(
        "Nodes",
        Nav::Nodes,
        &access,
        "/live",
        html! {
            h1 { "Nodes" }
            (layout::live_region("/", content))
        },
    ))
}

/// The state counts of a server, worst first.
pub fn state_counts(states: &std::collections::HashMap<String, u32>) -> Markup {
    let mut states: Vec<(&String, &u32)> = states.iter().collect();
    states.sort_by_key(|(k, _)| {
        let s = corral_proto::wire::number::<InstanceState>(k);
        (s == InstanceState::Running as i32, k.to_string())
    });
    html! {
        span.actions {
            @for (state, n) in states {
                span { (layout::instance_state(corral_proto::wire::number::<InstanceState>(state))) " " (n) }
            }
        }
    }
}

/// `/servers`: every server with its instances' states.
pub async fn servers_page(State(web): State<Arc<Web>>, access: Access) -> Result<Markup, WebError> {
    let servers = servers::list(&web.shared, ListServersRequest {})
        .await?
        .servers;
    let content = html! {
        table #servers {
            thead { tr {
                th { "Server" } th.num { "Instances" } th { "States" } th { "Nodes" } th { "Changed" }
            } }
            tbody {
                @for s in &servers {
                    @let name = format!("{}.{}", s.app, s.server);
                    tr {
                        td { a href={ "/servers/" (name) } { b { (name) } } }
                        td.num { (s.states.values().sum::<u32>()) }
                        td { (state_counts(&s.states)) }
                        td.wrap.muted {
                            (s.nodes.iter().take(8).cloned().collect::<Vec<_>>().join(", "))
                            @if s.nodes.len() > 8 { " and " (s.nodes.len() - 8) " more" }
                        }
                        td.muted title=(layout::at(s.updated_at_ms)) { (layout::ago(s.updated_at_ms)) }
                    }
                }
                @if servers.is_empty() {
                    tr { td.muted colspan="5" { "No server yet: registry apply SPEC.toml" } }
                }
            }
        }
    };
    Ok(layout::page(
        "Servers",
        Nav::Servers,
        &access,
        "/live",
        html! {
            h1 { "Servers" }
            (layout::live_region("/servers", content))
        },
    ))
}
