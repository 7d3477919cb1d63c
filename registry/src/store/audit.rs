//! The audit log: who changed what, and every refused admin call ([`crate::audit`]).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::filter::Filter;
use super::servers::truncate;
use super::{Store, StoreError, query_err};

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// 0 until stored.
    pub id: i64,
    pub at_ms: i64,
    /// The token's name ("anonymous" without tokens; "(no token)" or "(unknown token)"
    /// for a call refused as unauthenticated).
    pub caller: String,
    /// "admin", "viewer", or "" without a valid token.
    pub role: String,
    /// The caller's address (IP:PORT), "" when unknown.
    pub source: String,
    /// The Admin method, e.g. "Apply".
    pub method: String,
    /// What the call acted on: APP.SERVER, a node, a package, a secret's name; never a
    /// secret's value.
    pub target: String,
    /// "ok", "refused" or "failed".
    pub outcome: String,
    /// Why it was refused or failed; "" when ok.
    pub error: String,
}

fn from_row(r: &AnyRow) -> Result<AuditRow, sqlx::Error> {
    Ok(AuditRow {
        id: r.try_get("id")?,
        at_ms: r.try_get("at_ms")?,
        caller: r.try_get("caller")?,
        role: r.try_get("role")?,
        source: r.try_get("source")?,
        method: r.try_get("method")?,
        target: r.try_get("target")?,
        outcome: r.try_get("outcome")?,
        error: r.try_get("error")?,
    })
}

impl Store {
    pub async fn record_audit(&self, a: &AuditRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit (at_ms, caller, role, source, method, target, outcome, error) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(a.at_ms)
        .bind(truncate(&a.caller, 255))
        .bind(truncate(&a.role, 16))
        .bind(truncate(&a.source, 64))
        .bind(truncate(&a.method, 64))
        .bind(truncate(&a.target, 512))
        .bind(truncate(&a.outcome, 16))
        .bind(truncate(&a.error, 2048))
        .execute(&self.writer)
        .await
        .map_err(query_err("recording an audit record"))?;
        Ok(())
    }

    /// Records at or after `since_ms` (of one caller), newest last; at most `limit` (the
    /// newest ones).
    pub async fn list_audit(
        &self,
        since_ms: i64,
        caller: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let filter = Filter::default().eq("caller", caller);
        let sql = format!(
            "SELECT id, at_ms, caller, role, source, method, target, outcome, error FROM audit \
             WHERE at_ms >= ?{} ORDER BY id DESC LIMIT {limit}",
            filter.sql()
        );
        let rows = filter
            .bind(sqlx::query(&sql).bind(since_ms))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing the audit log"))?;
        let mut out: Vec<AuditRow> = rows
            .iter()
            .map(from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("decoding an audit record"))?;
        out.reverse();
        Ok(out)
    }

    /// Keeps only the newest `keep` records; the number removed.
    pub async fn trim_audit(&self, keep: u64) -> Result<u64, StoreError> {
        let max: Option<i64> = sqlx::query("SELECT MAX(id) AS m FROM audit")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("m"))
            .map_err(query_err("trimming the audit log"))?;
        let Some(max) = max else { return Ok(0) };
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let done = sqlx::query("DELETE FROM audit WHERE id <= ?")
            .bind(max.saturating_sub(keep))
            .execute(&self.writer)
            .await
            .map_err(query_err("trimming the audit log"))?;
        Ok(done.rows_affected())
    }
}
