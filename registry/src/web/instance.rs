//! `/servers/{app.server}/{node}`: one instance — its state, events, rendered config
//! files and its live log tail ([`super::log_tail`]).

use std::sync::Arc;

use axum::extract::{Path, State};
use corral_proto::v1::{ListEventsRequest, ServerStatusRequest};
use maud::{Markup, html};

use super::layout::{self, Nav};
use super::{Access, Web, WebError};
use crate::admin::{events, servers, split_server};

pub async fn page(
    State(web): State<Arc<Web>>,
    access: Access,
    Path((server, node)): Path<(String, String)>,
) -> Result<Markup, WebError> {
    let shared = &web.shared;
    let (app, srv) = split_server(&server)?;
    let status = servers::status(
        shared,
        ServerStatusRequest {
            server: server.clone(),
        },
    )
    .await?;
    let Some(i) = status.instances.into_iter().find(|i| i.node == node) else {
        return Err(WebError::NotFound(format!(
            "{server} has no instance on node {}",
            corral_proto::text::quoted(corral_proto::text::prefix(&node, 64))
        )));
    };
    let ports = shared.store().instance_ports(app, srv, &node).await?;
    let configs = shared.store().node_configs(&node).await?;
    let files = configs.get(&(app.to_string(), srv.to_string(), node.clone()));
    let evs: Vec<_> = events::list(
        shared,
        ListEventsRequest {
            server: server.clone(),
            after_id: 0,
            limit: Some(1000),
            kind: None,
        },
    )
    .await?
    .events
    .into_iter()
    .filter(|e| e.node == node)
    .rev()
    .take(50)
    .collect();
    let url = format!("/servers/{server}/{node}");
    let content = html! {
        dl.facts {
            dt { "State" } dd.state { (layout::instance_state(i.state)) }
            dt { "Desired" } dd { (corral_proto::wire::name_of::<corral_proto::v1::RunState>(i.desired)) }
            dt { "Health" } dd { (layout::health(i.health)) @if !i.health_error.is_empty() { " " span.cause { (i.health_error) } } }
            dt { "Node" } dd { (i.node) " " (layout::node_state(i.node_state)) }
            dt { "Release" } dd.mono { (i.version) }
            dt { "Ordinal" } dd { (i.ordinal) }
            dt { "PID" } dd.mono { @if i.pid > 0 { (i.pid) } @else { "—" } }
            dt { "Restarts" } dd { (i.restarts) }
            dt { "Started" } dd { (layout::at(i.started_at_ms)) " (" (layout::ago(i.started_at_ms)) ")" }
            dt { "Reported" } dd { (layout::ago(i.reported_at_ms)) }
            dt { "Ports" } dd.mono { @for (a, p) in &ports { (a) ":" (p) " " } }
            dt { "Last exit" } dd { (i.last_exit) }
            @if !i.last_error.is_empty() { dt { "Last error" } dd.cause { (i.last_error) } }
            @if let Some(u) = &i.usage {
                dt { "CPU time" } dd { (format!("{:.1}s", u.cpu_seconds)) }
                dt { "Memory" } dd { @if let Some(m) = u.memory_bytes { (layout::bytes(m)) } @else { span.muted { "not measured" } } }
            }
        }
        h2 { "Events" }
        (super::feeds::event_table(&evs, false))
    };
    Ok(layout::page(
        &format!("{server}@{node}"),
        Nav::Servers,
        &access,
        "/live",
        html! {
            h1 { a href={ "/servers/" (server) } { (server) } " @ " (node) }
            @if access.can_act {
                div.actions { (super::server::control_buttons(&server, Some(&node))) }
                div #result .result {}
            }
            (layout::live_region(&url, content))
            h2 { "Config files" }
            @match files {
                Some(files) if !files.is_empty() => {
                    @for (name, f) in files {
                        details.file open[files.len() <= 3] {
                            summary.mono { (name) @if f.secret { " " (layout::badge("warn", "secret")) } }
                            @if f.secret {
                                pre { "(holds a secret: not shown)" }
                            } @else {
                                pre { (f.content) }
                            }
                        }
                    }
                }
                _ => { p.muted { "No config files." } }
            }
            (super::log_tail::section(&format!("{url}/log")))
        },
    ))
}
