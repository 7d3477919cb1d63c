//! What the registry writes for agents' reports, beside `report_status`: the last
//! reports of a node's instances as the database holds them, and events in batches with
//! their retention applied as they are written.

use sqlx::Row;

use super::servers::truncate;
use super::{EventRow, StatusReport, Store, StoreError, query_err};

/// The most events one trim deletes. In steady state a batch trims as many events as it
/// adds; a larger backlog (the retention was lowered) is left to the periodic trim.
const TRIM_BOUND: i64 = 10_000;

impl Store {
    /// The actual state of every instance on `node`, as `(app, server, report)`.
    pub async fn node_reports(
        &self,
        node: &str,
    ) -> Result<Vec<(String, String, StatusReport)>, StoreError> {
        let rows = sqlx::query(
            "SELECT app, server, state, pid, restarts, started_at_ms, last_exit, last_error, \
             version, install_version, install_state, install_percent, install_error, health, \
             health_error FROM instances WHERE node = ?",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("reading a node's instances"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("app")?,
                    r.try_get("server")?,
                    StatusReport {
                        app: r.try_get("app")?,
                        server: r.try_get("server")?,
                        state: r.try_get("state")?,
                        pid: r.try_get("pid")?,
                        restarts: r.try_get("restarts")?,
                        started_at_ms: r.try_get("started_at_ms")?,
                        last_exit: r.try_get("last_exit")?,
                        last_error: r.try_get("last_error")?,
                        version: r.try_get("version")?,
                        install_version: r.try_get("install_version")?,
                        install_state: r.try_get("install_state")?,
                        install_percent: r.try_get("install_percent")?,
                        install_error: r.try_get("install_error")?,
                        health: r.try_get("health")?,
                        health_error: r.try_get("health_error")?,
                    },
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_err("decoding a node's instances"))
    }

    /// Appends events in one transaction and keeps the newest `keep` of the table in the
    /// same one, so the retention holds at every moment. The trim is a range delete on
    /// the primary key: one index seek when there is nothing to delete.
    pub async fn insert_events(&self, events: &[EventRow], keep: i64) -> Result<(), StoreError> {
        let doing = "recording events";
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await.map_err(query_err(doing))?;
        for e in events {
            sqlx::query(
                "INSERT INTO events (at_ms, app, server, node, from_state, to_state, reason, kind) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(e.at_ms)
            .bind(&e.app)
            .bind(&e.server)
            .bind(&e.node)
            .bind(truncate(&e.from, 32))
            .bind(truncate(&e.to, 32))
            .bind(truncate(&e.reason, 2048))
            .bind(if e.kind.is_empty() {
                "state"
            } else {
                truncate(&e.kind, 16)
            })
            .execute(&mut *tx)
            .await
            .map_err(query_err(doing))?;
        }
        // The newest id (both backends answer MAX of the primary key from the index; the
        // SQLite driver does not return the inserted id).
        let last: Option<i64> = sqlx::query("SELECT MAX(id) AS m FROM events")
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get("m"))
            .map_err(query_err("trimming events"))?;
        if let Some(last) = last {
            let upto = last - keep;
            sqlx::query("DELETE FROM events WHERE id <= ? AND id > ?")
                .bind(upto)
                .bind(upto - TRIM_BOUND)
                .execute(&mut *tx)
                .await
                .map_err(query_err("trimming events"))?;
        }
        tx.commit().await.map_err(query_err(doing))
    }
}
