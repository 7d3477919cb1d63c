//! What the registry writes for agents' reports: the last reports of a node's instances
//! as the database holds them, and each round of reports (events in multi-row inserts with
//! their retention applied, and statuses) in one transaction.

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
    /// same one, so the retention holds at every moment.
    pub async fn insert_events(&self, events: &[EventRow], keep: i64) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.write_reports(events, &[], keep).await.map(|_| ())
    }

    /// Writes one round of what agents reported in one transaction: the events, in
    /// multi-row inserts, with the retention applied once (a range delete on the primary
    /// key: one index seek when there is nothing to delete), then each status as
    /// `(node, report, at_ms)`. Whether each status's instance is assigned to its node
    /// (a report for one that is not writes nothing).
    pub async fn write_reports(
        &self,
        events: &[EventRow],
        statuses: &[(&str, &StatusReport, i64)],
        keep: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let doing = "recording what agents reported";
        let mut tx = self.begin_write().await.map_err(query_err(doing))?;
        for chunk in events.chunks(EVENTS_PER_INSERT) {
            insert_chunk(&mut tx, chunk)
                .await
                .map_err(query_err("recording events"))?;
        }
        if !events.is_empty() {
            trim(&mut tx, keep)
                .await
                .map_err(query_err("trimming events"))?;
        }
        let mut assigned = Vec::with_capacity(statuses.len());
        for (node, report, at_ms) in statuses {
            let updated = update_status(&mut tx, node, report, *at_ms)
                .await
                .map_err(query_err("recording an instance's state"))?;
            assigned.push(updated);
        }
        tx.commit().await.map_err(query_err(doing))?;
        Ok(assigned)
    }
}

/// Events per INSERT statement: 8 bound values each, well under every backend's limit.
const EVENTS_PER_INSERT: usize = 100;

/// Appends events in one multi-row INSERT.
async fn insert_chunk(
    conn: &mut sqlx::AnyConnection,
    events: &[EventRow],
) -> Result<(), sqlx::Error> {
    let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; events.len()].join(", ");
    let sql = format!(
        "INSERT INTO events (at_ms, app, server, node, from_state, to_state, reason, kind) VALUES {rows}"
    );
    let mut query = sqlx::query(&sql);
    for e in events {
        query = query
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
            });
    }
    query.execute(&mut *conn).await.map(|_| ())
}

/// Keeps the newest `keep` events: one range delete on the primary key below the newest
/// id (both backends answer MAX of the primary key from the index; the SQLite driver does
/// not return the inserted id).
async fn trim(conn: &mut sqlx::AnyConnection, keep: i64) -> Result<(), sqlx::Error> {
    let last: Option<i64> = sqlx::query("SELECT MAX(id) AS m FROM events")
        .fetch_one(&mut *conn)
        .await
        .and_then(|r| r.try_get("m"))?;
    if let Some(last) = last {
        let upto = last - keep;
        sqlx::query("DELETE FROM events WHERE id <= ? AND id > ?")
            .bind(upto)
            .bind(upto - TRIM_BOUND)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Records an agent's report for an instance of its own node; false if the instance is
/// not (or no longer) assigned to that node.
pub(super) async fn update_status(
    conn: &mut sqlx::AnyConnection,
    node: &str,
    r: &StatusReport,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE instances SET state = ?, pid = ?, restarts = ?, started_at_ms = ?, last_exit = ?, \
         last_error = ?, version = ?, reported_at_ms = ?, install_version = ?, install_state = ?, \
         install_percent = ?, install_error = ?, health = ?, health_error = ? \
         WHERE app = ? AND server = ? AND node = ?",
    )
    .bind(&r.state)
    .bind(r.pid)
    .bind(r.restarts)
    .bind(r.started_at_ms)
    .bind(truncate(&r.last_exit, 255))
    .bind(truncate(&r.last_error, 2048))
    .bind(truncate(&r.version, 128))
    .bind(now_ms)
    .bind(truncate(&r.install_version, 63))
    .bind(truncate(&r.install_state, 16))
    .bind(r.install_percent)
    .bind(truncate(&r.install_error, 2048))
    .bind(truncate(&r.health, 16))
    .bind(truncate(&r.health_error, 1024))
    .bind(&r.app)
    .bind(&r.server)
    .bind(node)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}
