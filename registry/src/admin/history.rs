//! `ServerHistory`, `ServerDiff` and `RevertServer`: the numbered versions of a server's
//! spec ([`crate::store::history`]), a unified diff between two of them, and a version
//! applied again through [`super::apply::apply_parsed`], exactly as `apply` would.

use corral_proto::v1::{
    RevertServerRequest, RevertServerResponse, ServerDiffRequest, ServerDiffResponse,
    ServerHistoryRequest, ServerHistoryResponse, SpecVersion,
};
use tonic::Status;

use super::apply::{Mode, apply_parsed};
use super::split_server;
use crate::state::Shared;
use crate::store::SpecVersion as Row;

/// A unified diff of two TOML texts, with `from` and `to` as the file names; empty when
/// they are the same.
pub fn unified(old: &str, new: &str, from: &str, to: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(from, to)
        .to_string()
}

/// A version number from the wire as the store keeps it; 0 and numbers past i64 are
/// named as what they are.
fn number(server: &str, v: u64, flag: &str) -> Result<i64, Status> {
    match i64::try_from(v) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Status::invalid_argument(format!(
            "{flag} {v}: spec versions of {server} count from 1 (see `registry server history {server}`)"
        ))),
    }
}

/// Version `v` of a server, or NOT_FOUND saying which versions there are.
async fn version(shared: &Shared, server: &str, v: i64) -> Result<Row, Status> {
    let (app, name) = split_server(server)?;
    if let Some(row) = shared.store().spec_version(app, name, v).await? {
        return Ok(row);
    }
    let all = shared.store().spec_history(app, name).await?;
    Err(Status::not_found(match (all.first(), all.last()) {
        (Some(first), Some(last)) => format!(
            "{server} has no spec version {v}: versions {} to {} are kept (see `registry server history {server}`)",
            first.version, last.version
        ),
        _ => format!("{server} has no spec history (no apply has changed it yet)"),
    }))
}

/// The newest version of a server, or NOT_FOUND.
async fn latest(shared: &Shared, server: &str) -> Result<Row, Status> {
    let (app, name) = split_server(server)?;
    shared
        .store()
        .latest_spec_version(app, name)
        .await?
        .ok_or_else(|| {
            Status::not_found(format!(
                "{server} has no spec history (no apply has changed it yet)"
            ))
        })
}

pub async fn history(
    shared: &Shared,
    req: ServerHistoryRequest,
) -> Result<ServerHistoryResponse, Status> {
    let (app, server) = split_server(&req.server)?;
    let rows = shared.store().spec_history(app, server).await?;
    let deployed = shared.store().get_server(app, server).await?.is_some();
    if rows.is_empty() && !deployed {
        return Err(crate::store::StoreError::ServerNotFound(req.server).into());
    }
    Ok(ServerHistoryResponse {
        server: req.server,
        versions: rows
            .into_iter()
            .map(|r| SpecVersion {
                version: u64::try_from(r.version).unwrap_or(0),
                at_ms: r.at_ms,
                action: r.action,
                summary: r.summary,
            })
            .collect(),
        deployed,
    })
}

pub async fn diff(shared: &Shared, req: ServerDiffRequest) -> Result<ServerDiffResponse, Status> {
    split_server(&req.server)?;
    let from = version(shared, &req.server, number(&req.server, req.from, "V1")?).await?;
    let to = match req.to {
        Some(v) => version(shared, &req.server, number(&req.server, v, "V2")?).await?,
        None => latest(shared, &req.server).await?,
    };
    let label = |r: &Row| format!("{} version {}", req.server, r.version);
    let text = unified(&from.spec_toml, &to.spec_toml, &label(&from), &label(&to));
    Ok(ServerDiffResponse {
        identical: text.is_empty(),
        server: req.server,
        from: u64::try_from(from.version).unwrap_or(0),
        to: u64::try_from(to.version).unwrap_or(0),
        diff: text,
    })
}

pub async fn revert(
    shared: &Shared,
    req: RevertServerRequest,
) -> Result<RevertServerResponse, Status> {
    let (app, server) = split_server(&req.server)?;
    let target = version(shared, &req.server, number(&req.server, req.version, "V")?).await?;
    let source = format!("{} version {}", req.server, target.version);
    // The version as stored was checked when it was made; the rules it is checked
    // against now are today's, as for any apply.
    let spec = crate::spec::parse(&target.spec_toml, &source).map_err(|e| {
        Status::failed_precondition(format!(
            "{source} is no longer a valid spec:\n{}",
            corral_proto::text::first_problems(&e.0, crate::spec::PROBLEMS_SHOWN)
        ))
    })?;
    let current = shared
        .store()
        .get_server(app, server)
        .await?
        .map(|row| crate::spec::to_toml(&row.spec))
        .unwrap_or_default();
    let current_label = if current.is_empty() {
        format!("{} (not deployed)", req.server)
    } else {
        format!("{} (current)", req.server)
    };
    let diff = unified(&current, &target.spec_toml, &current_label, &source);
    let mode = Mode {
        force: true,
        dry_run: req.dry_run,
        action: &format!("revert to {}", target.version),
    };
    let applied = apply_parsed(shared, spec, &source, mode).await?;
    Ok(RevertServerResponse {
        server: applied.server,
        changes: applied.changes,
        dry_run: applied.dry_run,
        diff,
        version: applied.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_show_changed_lines_and_nothing_for_the_same_text() {
        let a = "app = \"demo\"\nnodes = [\"node-a\"]\nenv = 1\n";
        let b = "app = \"demo\"\nnodes = [\"node-a\", \"node-b\"]\nenv = 1\n";
        let d = unified(a, b, "v1", "v2");
        assert!(d.starts_with("--- v1\n+++ v2\n"), "{d}");
        assert!(d.contains("-nodes = [\"node-a\"]\n"), "{d}");
        assert!(d.contains("+nodes = [\"node-a\", \"node-b\"]\n"), "{d}");
        assert_eq!(unified(a, a, "v1", "v1"), "");
    }
}
