//! `ListAudit`: the audit log, newest last ([`crate::audit`]).

use corral_proto::v1::{AuditOutcome, AuditRecord, ListAuditRequest, ListAuditResponse};
use corral_proto::wire::number;
use tonic::Status;

use crate::state::Shared;
use crate::store::AuditRow;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 10_000;

pub fn to_proto(r: AuditRow) -> AuditRecord {
    AuditRecord {
        id: r.id,
        at_ms: r.at_ms,
        caller: r.caller,
        role: r.role,
        source: r.source,
        call: r.method,
        target: r.target,
        outcome: number::<AuditOutcome>(&r.outcome),
        error: r.error,
    }
}

pub async fn list(shared: &Shared, req: ListAuditRequest) -> Result<ListAuditResponse, Status> {
    let limit = match req.limit {
        None => DEFAULT_LIMIT,
        Some(n) if n > MAX_LIMIT => {
            return Err(Status::invalid_argument(format!(
                "limit {n} is more than {}, the most records one call returns",
                corral_proto::text::count(MAX_LIMIT as usize)
            )));
        }
        Some(n) => n,
    };
    if req.since_ms < 0 {
        return Err(Status::invalid_argument(format!(
            "since_ms {} is before 1970",
            req.since_ms
        )));
    }
    if limit == 0 {
        return Ok(ListAuditResponse {
            records: Vec::new(),
        });
    }
    let caller = Some(req.caller.as_str()).filter(|c| !c.is_empty());
    let rows = shared
        .store()
        .list_audit(req.since_ms, caller, limit)
        .await?;
    Ok(ListAuditResponse {
        records: rows.into_iter().map(to_proto).collect(),
    })
}
