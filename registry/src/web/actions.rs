//! What an operator changes from the dashboard. Every POST handler parses its form into
//! an [`Action`] and calls [`perform`], the one place actions run: it is where the audit
//! log records who did what (the [`Actor`] that passed the POST guard), as the same call
//! (`ControlServer`, `StartRollout`, `Expand`) and target the CLI's call is recorded with.

use std::sync::Arc;

use axum::extract::{Form, State};
use corral_proto::v1::{
    ControlServerRequest, ExpandRequest, ExpandResponse, ServerAction, StartRolloutRequest,
};
use corral_proto::wire::from_name;
use maud::{Markup, html};
use serde::Deserialize;
use tracing::info;

use crate::audit::{self, Outcome};

use super::layout;
use super::{Actor, Web, WebError};

/// A change made from the dashboard.
#[derive(Clone, Debug)]
pub enum Action {
    /// start | stop | restart of a server, or of its instance on `node`.
    Control {
        server: String,
        node: Option<String>,
        action: ServerAction,
    },
    Patch {
        server: String,
        version: String,
        batch: u32,
    },
    Rollback {
        server: String,
    },
    Expand {
        server: String,
        nodes: Vec<String>,
        from: String,
        preview: bool,
    },
}

/// The Admin call a POST path makes, for the guard's record of a refusal.
pub fn call_of(path: &str) -> &'static str {
    match path {
        "/act/control" => "ControlServer",
        "/act/patch" | "/act/rollback" => "StartRollout",
        "/act/expand" => "Expand",
        _ => "Dashboard",
    }
}

impl Action {
    /// The Admin call the CLI makes for the same change.
    pub fn call(&self) -> &'static str {
        match self {
            Action::Control { .. } => "ControlServer",
            Action::Patch { .. } | Action::Rollback { .. } => "StartRollout",
            Action::Expand { .. } => "Expand",
        }
    }

    /// What it acts on, written as the Admin service notes the same call's target.
    pub fn target(&self) -> String {
        match self {
            Action::Control {
                server,
                node,
                action,
            } => {
                let verb = corral_proto::wire::name_of::<ServerAction>(*action as i32);
                match node {
                    Some(n) => format!("{server} {verb} on {n}"),
                    None => format!("{server} {verb}"),
                }
            }
            Action::Patch {
                server, version, ..
            } => format!("{server}@{version}"),
            Action::Rollback { server } => format!("{server} rollback to the previous release"),
            Action::Expand {
                server,
                nodes,
                preview,
                ..
            } => {
                let preview = if *preview { " (preview)" } else { "" };
                format!("{server} to {}{preview}", nodes.join(","))
            }
        }
    }
}

/// Runs an action for `actor` and records it in the audit log; the answer is the
/// fragment shown on the page.
pub async fn perform(web: &Web, actor: &Actor, action: Action) -> Result<Markup, WebError> {
    info!(caller = %actor.caller.name, source = %actor.source, action = ?action, "dashboard action");
    let (call, target) = (action.call(), action.target());
    let result = run(web, action).await;
    let (outcome, error) = match &result {
        Ok(_) => (Outcome::Ok, String::new()),
        Err(e) => (Outcome::Failed, e.to_string()),
    };
    let row = audit::entry(
        Some(&actor.caller),
        &actor.source,
        call,
        &target,
        outcome,
        &error,
    );
    audit::record(&web.shared, row);
    result
}

async fn run(web: &Web, action: Action) -> Result<Markup, WebError> {
    let shared = &web.shared;
    match action {
        Action::Control {
            server,
            node,
            action,
        } => {
            let done = crate::admin::servers::control(
                shared,
                ControlServerRequest {
                    server: server.clone(),
                    action: action as i32,
                    node: node.unwrap_or_default(),
                },
            )
            .await?;
            let verb = corral_proto::wire::Named::name(action);
            Ok(layout::flash(
                "ok",
                &format!("{verb} requested: {server} on {}", done.nodes.join(", ")),
            ))
        }
        Action::Patch {
            server,
            version,
            batch,
        } => rollout(web, server, version, batch, false).await,
        Action::Rollback { server } => rollout(web, server, String::new(), 1, true).await,
        Action::Expand {
            server,
            nodes,
            from,
            preview,
        } => {
            let answer = crate::admin::apply::expand(
                shared,
                ExpandRequest {
                    server: server.clone(),
                    nodes: nodes.clone(),
                    from: from.clone(),
                    preview,
                },
            )
            .await?;
            Ok(expanded(&server, &nodes, &from, preview, &answer))
        }
    }
}

async fn rollout(
    web: &Web,
    server: String,
    version: String,
    batch: u32,
    rollback: bool,
) -> Result<Markup, WebError> {
    let r = crate::rollout::start(
        web.shared.clone(),
        StartRolloutRequest {
            server,
            version,
            nodes: Vec::new(),
            batch: Some(batch),
            min_healthy_ms: None,
            deadline_ms: None,
            rollback,
        },
    )
    .await?;
    Ok(html! {
        (layout::flash("info", &format!(
            "{} {} to {}: rollout {}",
            if rollback { "rolling back" } else { "patching" }, r.server, r.to_version, r.id
        )))
        (super::feeds::rollout_live(&r))
    })
}

/// What an expand would do (a preview, with the button that applies it) or did.
fn expanded(
    server: &str,
    nodes: &[String],
    from: &str,
    preview: bool,
    answer: &ExpandResponse,
) -> Markup {
    html! {
        div.panel.expand-result style="padding:10px 12px" {
            @if preview {
                div.flash.info { "Preview: nothing changed yet. Expanding " (server) " would place:" }
            } @else {
                div.flash.ok { "Expanded " (server) " to " (answer.added.join(", ")) }
            }
            table {
                thead { tr { th { "Node" } th { "Adapter" } th { "Address" } th.num { "Port" } th { "" } } }
                tbody {
                    @for row in &answer.rows {
                        tr {
                            td { (row.node) }
                            td { (row.adapter) }
                            td.mono { (row.bind) }
                            td.num.mono { (row.port) }
                            td.muted { @if row.exists { "already there" } }
                        }
                    }
                }
            }
            @if preview {
                form hx-post="/act/expand" hx-target="#result" style="margin-top:8px" {
                    input type="hidden" name="server" value=(server);
                    input type="hidden" name="nodes" value=(nodes.join(","));
                    input type="hidden" name="from" value=(from);
                    input type="hidden" name="preview" value="false";
                    button.primary #expand-apply type="submit" { "Apply: expand to " (nodes.join(", ")) }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct ControlForm {
    server: String,
    #[serde(default)]
    node: String,
    action: String,
}

pub async fn control(
    State(web): State<Arc<Web>>,
    actor: Actor,
    Form(f): Form<ControlForm>,
) -> Result<Markup, WebError> {
    let action = match f.action.as_str() {
        "start" | "stop" | "restart" => from_name::<ServerAction>("action", &f.action)
            .ok()
            .and_then(|n| ServerAction::try_from(n).ok()),
        _ => None,
    }
    .ok_or_else(|| {
        WebError::BadInput(format!(
            "action {} is not one of start, stop, restart",
            corral_proto::text::quoted(corral_proto::text::prefix(&f.action, 32))
        ))
    })?;
    let node = (!f.node.is_empty()).then_some(f.node);
    perform(
        &web,
        &actor,
        Action::Control {
            server: f.server,
            node,
            action,
        },
    )
    .await
}

#[derive(Deserialize)]
pub struct PatchForm {
    server: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    batch: String,
}

pub async fn patch(
    State(web): State<Arc<Web>>,
    actor: Actor,
    Form(f): Form<PatchForm>,
) -> Result<Markup, WebError> {
    if f.version.is_empty() {
        return Err(WebError::BadInput(
            "pick a package version to patch to".into(),
        ));
    }
    let batch = match f.batch.trim() {
        "" => 1,
        b => b.parse::<u32>().map_err(|_| {
            WebError::BadInput(format!(
                "batch {} is not a whole number of instances",
                corral_proto::text::quoted(corral_proto::text::prefix(b, 32))
            ))
        })?,
    };
    let action = Action::Patch {
        server: f.server,
        version: f.version,
        batch,
    };
    perform(&web, &actor, action).await
}

#[derive(Deserialize)]
pub struct ServerForm {
    server: String,
}

pub async fn rollback(
    State(web): State<Arc<Web>>,
    actor: Actor,
    Form(f): Form<ServerForm>,
) -> Result<Markup, WebError> {
    perform(&web, &actor, Action::Rollback { server: f.server }).await
}

#[derive(Deserialize)]
pub struct ExpandForm {
    server: String,
    #[serde(default)]
    nodes: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    preview: String,
}

pub async fn expand(
    State(web): State<Arc<Web>>,
    actor: Actor,
    Form(f): Form<ExpandForm>,
) -> Result<Markup, WebError> {
    let nodes: Vec<String> = f
        .nodes
        .split([',', ' ', '\n', '\t'])
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    if nodes.is_empty() {
        return Err(WebError::BadInput(
            "name at least one node to expand to".into(),
        ));
    }
    let preview = match f.preview.as_str() {
        "true" => true,
        "false" => false,
        p => {
            return Err(WebError::BadInput(format!(
                "preview {} is not true or false",
                corral_proto::text::quoted(corral_proto::text::prefix(p, 16))
            )));
        }
    };
    let action = Action::Expand {
        server: f.server,
        nodes,
        from: f.from.trim().to_string(),
        preview,
    };
    perform(&web, &actor, action).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit records a dashboard action as the CLI's call with the same target.
    #[test]
    fn calls_and_targets() {
        let control = |node: Option<&str>| Action::Control {
            server: "demo.app".into(),
            node: node.map(str::to_string),
            action: ServerAction::Restart,
        };
        assert_eq!(control(None).call(), "ControlServer");
        assert_eq!(control(None).target(), "demo.app restart");
        assert_eq!(
            control(Some("node-a")).target(),
            "demo.app restart on node-a"
        );
        let patch = Action::Patch {
            server: "demo.app".into(),
            version: "2.0.0".into(),
            batch: 1,
        };
        assert_eq!(
            (patch.call(), patch.target().as_str()),
            ("StartRollout", "demo.app@2.0.0")
        );
        let back = Action::Rollback {
            server: "demo.app".into(),
        };
        assert_eq!(back.call(), "StartRollout");
        assert_eq!(back.target(), "demo.app rollback to the previous release");
        let expand = |preview| Action::Expand {
            server: "demo.app".into(),
            nodes: vec!["node-b".into(), "node-c".into()],
            from: String::new(),
            preview,
        };
        assert_eq!(expand(true).target(), "demo.app to node-b,node-c (preview)");
        assert_eq!(expand(false).target(), "demo.app to node-b,node-c");
        assert_eq!(expand(false).call(), "Expand");
        for path in ["/act/control", "/act/patch", "/act/rollback", "/act/expand"] {
            assert!(crate::access::known(call_of(path)), "{path}");
        }
    }
}
