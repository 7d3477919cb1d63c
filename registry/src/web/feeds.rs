//! Events (live), rollouts (live progress) and packages.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use corral_proto::v1::{
    Event, EventKind, GetRolloutRequest, ListEventsRequest, ListPackagesRequest,
    ListRolloutsRequest, Rollout, RolloutPhase,
};
use corral_proto::wire::name_of;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav};
use super::{Access, Web, WebError};
use crate::admin::{events, packages};

#[derive(Deserialize, Default)]
pub struct EventsQuery {
    /// "app.server"; empty: every server.
    #[serde(default)]
    pub server: String,
}

/// `/events`: the latest events, newest first; new ones are prepended as they happen.
pub async fn events_page(
    State(web): State<Arc<Web>>,
    access: Access,
    Query(q): Query<EventsQuery>,
) -> Result<Markup, WebError> {
    let mut evs = events::list(
        &web.shared,
        ListEventsRequest {
            server: q.server.clone(),
            after_id: 0,
            limit: Some(200),
            kind: None,
        },
    )
    .await?
    .events;
    let newest = evs.last().map_or(0, |e| e.id);
    evs.reverse();
    let live = format!("/live/events?after={newest}&server={}", percent(&q.server));
    Ok(layout::page(
        "Events",
        Nav::Events,
        &access,
        &live,
        html! {
            h1 { "Events" @if !q.server.is_empty() { small { (q.server) } } }
            (event_table(&evs, true))
        },
    ))
}

/// Percent-encodes a query value (server names are `[A-Za-z0-9._-]`; the rest is
/// encoded anyway).
pub fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A table of events; with `live`, rows the events stream sends are prepended.
pub fn event_table(evs: &[Event], live: bool) -> Markup {
    html! {
        table #events {
            thead { tr { th { "Time" } th { "Server" } th { "Node" } th { "Kind" } th { "Change" } th { "Reason" } } }
            tbody sse-swap=[live.then_some("event")] hx-swap="afterbegin" {
                @for e in evs { (event_row(e)) }
            }
        }
        @if evs.is_empty() { p.muted { "No events yet." } }
    }
}

pub fn event_row(e: &Event) -> Markup {
    let to_class = match e.to.as_str() {
        "running" | "healthy" => "ok",
        "crash-looping" | "failed" | "exited" | "unhealthy" | "flapping" => "bad",
        _ => "",
    };
    html! {
        tr data-id=(e.id) {
            td.mono.muted title=(layout::ago(e.at_ms)) { (layout::at(e.at_ms)) }
            td { a href={ "/servers/" (e.server) } { (e.server) } }
            td { a href={ "/servers/" (e.server) "/" (e.node) } { (e.node) } }
            td.muted { (name_of::<EventKind>(e.kind)) }
            td { span.muted { (e.from) } " → " (layout::badge(to_class, &e.to)) }
            td.wrap { (e.reason) }
        }
    }
}

/// `/rollouts`: the latest rollouts.
pub async fn rollouts_page(
    State(web): State<Arc<Web>>,
    access: Access,
) -> Result<Markup, WebError> {
    let rollouts = crate::rollout::list(&web.shared, ListRolloutsRequest::default())
        .await?
        .rollouts;
    Ok(layout::page(
        "Rollouts",
        Nav::Rollouts,
        &access,
        "/live",
        html! {
            h1 { "Rollouts" }
            (layout::live_region("/rollouts", rollout_table(&rollouts)))
        },
    ))
}

pub fn rollout_table(rollouts: &[Rollout]) -> Markup {
    if rollouts.is_empty() {
        return html! { p.muted { "No rollouts yet." } };
    }
    html! {
        table.rollouts {
            thead { tr { th.num { "#" } th { "Server" } th { "To" } th { "State" } th { "Progress" } th { "Started" } th { "Error" } } }
            tbody {
                @for r in rollouts {
                    tr {
                        td.num { a href={ "/rollouts/" (r.id) } { (r.id) } }
                        td { a href={ "/servers/" (r.server) } { (r.server) } }
                        td.mono { (r.to_version) }
                        td { (layout::rollout_state(r.state)) }
                        td { (progress_bar(r)) }
                        td.muted title=(layout::at(r.created_at_ms)) { (layout::ago(r.created_at_ms)) }
                        td.cause { (r.error) }
                    }
                }
            }
        }
    }
}

/// How many instances are done, as a bar and a count.
fn progress_bar(r: &Rollout) -> Markup {
    let total = r.instances.len().max(1);
    let done = r
        .instances
        .iter()
        .filter(|i| i.phase == RolloutPhase::Healthy as i32)
        .count();
    let class = if r.error.is_empty() { "ok" } else { "bad" };
    html! { (layout::bar((done * 100 / total) as u32, class)) span.num { (done) "/" (r.instances.len()) } }
}

/// `/rollouts/{id}`: one rollout, its progress following it live.
pub async fn rollout_page(
    State(web): State<Arc<Web>>,
    access: Access,
    Path(id): Path<i64>,
) -> Result<Markup, WebError> {
    let r = crate::rollout::get(&web.shared, GetRolloutRequest { id }).await?;
    Ok(layout::page(
        &format!("Rollout {id}"),
        Nav::Rollouts,
        &access,
        "/live",
        html! {
            h1 { "Rollout " (id) small { a href={ "/servers/" (r.server) } { (r.server) } " → " (r.to_version) } }
            (rollout_live(&r))
        },
    ))
}

/// A rollout's progress that follows it: the events stream sends the block again on
/// every change and closes when the rollout ends.
pub fn rollout_live(r: &Rollout) -> Markup {
    html! {
        div.rollout-live hx-ext="sse" sse-connect={ "/live/rollouts/" (r.id) } sse-swap="rollout" sse-close="done" {
            (rollout_progress(r))
        }
    }
}

pub fn rollout_progress(r: &Rollout) -> Markup {
    html! {
        div.rollout data-state=(name_of::<corral_proto::v1::RolloutState>(r.state)) {
            div.actions {
                (layout::rollout_state(r.state)) (progress_bar(r))
                span.muted { "batch " (r.batch) " · min healthy " (r.min_healthy_ms / 1000) "s · deadline " (r.deadline_ms / 1000) "s" }
                a href={ "/rollouts/" (r.id) } { "rollout " (r.id) }
            }
            @if !r.error.is_empty() { div.flash.err { (r.error) } }
            table {
                thead { tr { th { "Node" } th.num { "Batch" } th { "From" } th { "Phase" } th { "Progress" } th { "Error" } } }
                tbody {
                    @for i in &r.instances {
                        tr data-node=(i.node) {
                            td { (i.node) }
                            td.num { (i.batch) }
                            td.mono { (i.from_version) }
                            td.phase { (layout::phase(i.phase)) }
                            td { (layout::bar(i.percent, "")) (i.percent) "%" }
                            td.cause { (i.error) }
                        }
                    }
                }
            }
        }
    }
}

/// `/packages`: every uploaded package.
pub async fn packages_page(
    State(web): State<Arc<Web>>,
    access: Access,
) -> Result<Markup, WebError> {
    let pkgs = packages::list(&web.shared, ListPackagesRequest::default())
        .await?
        .packages;
    Ok(layout::page(
        "Packages",
        Nav::Packages,
        &access,
        "/live",
        html! {
            h1 { "Packages" small { "upload with: registry package upload FILE --server APP.SERVER --version V" } }
            table #packages {
                thead { tr { th { "Server" } th { "Version" } th.num { "Size" } th.num { "Entries" } th { "sha256" } th { "Uploaded" } th { "Used by" } th { "Note" } } }
                tbody {
                    @for p in &pkgs {
                        tr {
                            td { a href={ "/servers/" (p.server) } { (p.server) } }
                            td.mono { b { (p.version) } }
                            td.num { (layout::bytes(p.size)) }
                            td.num { (p.entries) }
                            td.mono.muted title=(p.sha256) { (p.sha256.get(..12).unwrap_or(&p.sha256)) "…" }
                            td.muted title=(layout::at(p.created_at_ms)) { (layout::ago(p.created_at_ms)) }
                            td.wrap { (p.used_by.join(", ")) }
                            td.wrap.muted { (p.note) }
                        }
                    }
                }
            }
            @if pkgs.is_empty() { p.muted { "No packages uploaded." } }
        },
    ))
}
