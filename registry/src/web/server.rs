//! `/servers/{app.server}`: a server's instances (state, health and its cause, ports,
//! release, ordinal) and what an operator does to it: start, stop, restart, patch,
//! rollback, expand.

use std::sync::Arc;

use axum::extract::{Path, State};
use corral_proto::v1::{
    InstanceInfo, ListPackagesRequest, ListRolloutsRequest, ServerStatusRequest,
};
use maud::{Markup, html};

use super::layout::{self, Nav};
use super::{Access, Web, WebError};
use crate::admin::{packages, servers, split_server};

pub async fn page(
    State(web): State<Arc<Web>>,
    access: Access,
    Path(server): Path<String>,
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
    let ports = shared.store().all_ports().await?;
    let pkgs = packages::list(
        shared,
        ListPackagesRequest {
            server: server.clone(),
        },
    )
    .await?
    .packages;
    let rollouts = crate::rollout::list(
        shared,
        ListRolloutsRequest {
            server: server.clone(),
        },
    )
    .await?
    .rollouts;
    let url = format!("/servers/{server}");
    let content = html! {
        table #instances {
            thead { tr {
                th.num { "#" } th { "Node" } th { "Desired" } th { "State" } th { "Health" }
                th { "Release" } th { "Ports" } th.num { "PID" } th.num { "Restarts" }
                th { "Started" } th { "Last exit / error" }
                @if access.can_act { th { "" } }
            } }
            tbody {
                @for i in &status.instances {
                    @let key = (app.to_string(), srv.to_string(), i.node.clone());
                    tr data-node=(i.node) {
                        td.num.muted { (i.ordinal) }
                        td { a href={ (url) "/" (i.node) } { b { (i.node) } } " " @if i.node_state != 1 { (layout::node_state(i.node_state)) } }
                        td.muted { (corral_proto::wire::name_of::<corral_proto::v1::RunState>(i.desired)) }
                        td.state { (layout::instance_state(i.state)) }
                        td { (layout::health(i.health)) @if !i.health_error.is_empty() { div.cause { (i.health_error) } } }
                        td { (release(i)) }
                        td.mono {
                            @for (adapter, port) in ports.get(&key).into_iter().flatten() {
                                span title=(adapter) { (adapter) ":" (port) } " "
                            }
                        }
                        td.num.mono { @if i.pid > 0 { (i.pid) } }
                        td.num { (i.restarts) }
                        td.muted title=(layout::at(i.started_at_ms)) { (layout::ago(i.started_at_ms)) }
                        td.wrap {
                            @if !i.last_error.is_empty() { div.cause { (i.last_error) } }
                            @if !i.last_exit.is_empty() { div.muted { (i.last_exit) } }
                            @if !i.config_hold.is_empty() { div.cause { "config held: " (i.config_hold) } }
                        }
                        @if access.can_act { td { (control_buttons(&server, Some(&i.node))) } }
                    }
                }
            }
        }
        h2 { "Latest rollouts" a href="/rollouts" style="margin-left:8px;text-transform:none;letter-spacing:0;font-weight:400" { "all" } }
        (super::feeds::rollout_table(&rollouts[..rollouts.len().min(5)]))
    };
    Ok(layout::page(
        &server,
        Nav::Servers,
        &access,
        "/live",
        html! {
            h1 { (server) small { (status.instances.len()) " instances" } }
            @if access.can_act {
                div.actions { (control_buttons(&server, None)) }
                div #result .result {}
            }
            (layout::live_region(&url, content))
            @if access.can_act { (forms(&server, &pkgs)) }
        },
    ))
}

/// The installed release, and an install in flight.
fn release(i: &InstanceInfo) -> Markup {
    html! {
        span.mono { (i.version) }
        @if let Some(inst) = &i.install {
            @if inst.version != i.version || !inst.error.is_empty() {
                " "
                span.muted { "→ " (inst.version) " " (corral_proto::wire::name_of::<corral_proto::v1::InstallState>(inst.state)) }
                @if inst.percent > 0 && inst.percent < 100 { " " (layout::bar(inst.percent, "")) }
                @if !inst.error.is_empty() { div.cause { (inst.error) } }
            }
        }
    }
}

/// Start / stop / restart of the server (`node` None) or of one instance.
pub fn control_buttons(server: &str, node: Option<&str>) -> Markup {
    let vals = |action: &str| {
        serde_json::json!({ "server": server, "node": node.unwrap_or(""), "action": action })
            .to_string()
    };
    let (class, suffix) = if node.is_some() {
        ("small", "")
    } else {
        ("", " all")
    };
    let confirm = |what: &str| match node {
        Some(n) => format!("{what} {server} on {n}?"),
        None => format!("{what} every instance of {server}?"),
    };
    html! {
        span.actions {
            @for (action, label) in [("start", "Start"), ("stop", "Stop"), ("restart", "Restart")] {
                button class={ (class) @if action == "stop" { " danger" } } data-action=(action)
                    hx-post="/act/control" hx-vals=(vals(action)) hx-target="#result"
                    hx-confirm=[(action != "start").then(|| confirm(label))] {
                    (label) (suffix)
                }
            }
        }
    }
}

/// Patch, rollback and expand.
fn forms(server: &str, pkgs: &[corral_proto::v1::PackageInfo]) -> Markup {
    html! {
        div.forms {
            form #patch hx-post="/act/patch" hx-target="#result" {
                h3 { "Patch" }
                input type="hidden" name="server" value=(server);
                label { "Package"
                    select name="version" required {
                        @for p in pkgs.iter().rev() {
                            option value=(p.version) { (p.version) " · " (layout::bytes(p.size)) " · " (layout::ago(p.created_at_ms)) }
                        }
                    }
                }
                label { "Batch" input type="number" name="batch" min="1" value="1"; }
                div.actions {
                    button.primary type="submit" disabled[pkgs.is_empty()] { "Start patch" }
                    @if pkgs.is_empty() { span.muted { "no package uploaded for this server" } }
                }
            }
            form #rollback hx-post="/act/rollback" hx-target="#result"
                hx-confirm={ "Roll " (server) " back to its previous release?" } {
                h3 { "Rollback" }
                input type="hidden" name="server" value=(server);
                p.muted { "Rolls every instance back to the release before the current one, one at a time, behind health." }
                div.actions { button type="submit" { "Roll back" } }
            }
            form #expand hx-post="/act/expand" hx-target="#result" {
                h3 { "Expand" }
                input type="hidden" name="server" value=(server);
                input type="hidden" name="preview" value="true";
                label { "Nodes" input type="text" name="nodes" required placeholder="node-d, node-e"; }
                label { "Copy from" input type="text" name="from" placeholder="node (optional)"; }
                div.actions { button type="submit" { "Preview" } }
            }
        }
    }
}
