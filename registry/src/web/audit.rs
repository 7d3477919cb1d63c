//! `/audit`: the audit log ([`crate::audit`]), newest first: who changed what from where,
//! and every refused call. Filters: `caller` (a token's name) and `since` (a recent past,
//! e.g. `1h`, `30m`, `2days`). Viewers may read it (`ListAudit` is a read).

use std::sync::Arc;

use axum::extract::{Query, State};
use corral_proto::v1::{AuditOutcome, ListAuditRequest};
use corral_proto::wire::name_of;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav};
use super::{Access, Web, WebError};

/// The most records the page shows.
const LIMIT: u32 = 500;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    caller: String,
    #[serde(default)]
    since: String,
}

pub async fn page(
    State(web): State<Arc<Web>>,
    access: Access,
    Query(q): Query<AuditQuery>,
) -> Result<Markup, WebError> {
    let (caller, since) = (q.caller.trim(), q.since.trim());
    let since_ms = if since.is_empty() {
        0
    } else {
        let d = humantime::parse_duration(since).map_err(|e| {
            WebError::BadInput(format!(
                "since {} is not a duration like 1h, 30m or 2days: {e}",
                corral_proto::text::quoted(corral_proto::text::prefix(since, 32))
            ))
        })?;
        let d = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        layout::now_ms().saturating_sub(d).max(1)
    };
    let mut records = crate::admin::audit::list(
        &web.shared,
        ListAuditRequest {
            since_ms,
            caller: caller.to_string(),
            limit: Some(LIMIT),
        },
    )
    .await?
    .records;
    records.reverse();
    let url = format!(
        "/audit?caller={}&since={}",
        super::feeds::percent(caller),
        super::feeds::percent(since)
    );
    let content = html! {
        table #audit {
            thead { tr {
                th { "Time" } th { "Outcome" } th { "Caller" } th { "Role" } th { "Source" }
                th { "Call" } th { "Target" } th { "Error" }
            } }
            tbody {
                @for r in &records {
                    @let outcome = name_of::<AuditOutcome>(r.outcome);
                    @let class = match outcome.as_str() { "ok" => "ok", "refused" => "bad", _ => "warn" };
                    tr data-outcome=(outcome) {
                        td.mono.muted title=(layout::ago(r.at_ms)) { (layout::at(r.at_ms)) }
                        td { (layout::badge(class, &outcome)) }
                        td.caller { b { (r.caller) } }
                        td.muted { (r.role) }
                        td.mono.source { (r.source) }
                        td.mono.call { (r.call) }
                        td.wrap.target { (r.target) }
                        td.wrap.cause { (r.error) }
                    }
                }
            }
        }
        @if records.is_empty() { p.muted { "No records." } }
    };
    Ok(layout::page(
        "Audit",
        Nav::Audit,
        &access,
        "/live",
        html! {
            h1 { "Audit log" small { "newest first, at most " (LIMIT) } }
            form.filters #audit-filter method="get" action="/audit" {
                label { "Caller " input name="caller" value=(caller) placeholder="token name"; }
                label { "Since " input name="since" value=(since) placeholder="e.g. 1h, 2days"; }
                button type="submit" { "Filter" }
            }
            (layout::live_region(&url, content))
        },
    ))
}
