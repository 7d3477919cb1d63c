//! Instance events: what agents report happened (state and health changes) and what the
//! registry saw (config restarts held), kept up to the retention.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::filter::Filter;
use super::servers::truncate;
use super::{Store, StoreError, query_err};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub id: i64,
    pub at_ms: i64,
    pub app: String,
    pub server: String,
    pub node: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    /// "state", "health" or "config".
    pub kind: String,
}

fn event_from_row(r: &AnyRow) -> Result<EventRow, sqlx::Error> {
    Ok(EventRow {
        id: r.try_get("id")?,
        at_ms: r.try_get("at_ms")?,
        app: r.try_get("app")?,
        server: r.try_get("server")?,
        node: r.try_get("node")?,
        from: r.try_get("from_state")?,
        to: r.try_get("to_state")?,
        reason: r.try_get("reason")?,
        kind: r.try_get("kind")?,
    })
}

impl Store {
    pub async fn record_event(&self, e: &EventRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO events (at_ms, app, server, node, from_state, to_state, reason, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.at_ms)
        .bind(&e.app)
        .bind(&e.server)
        .bind(&e.node)
        .bind(truncate(&e.from, 32))
        .bind(truncate(&e.to, 32))
        .bind(truncate(&e.reason, 2048))
        .bind(truncate(&e.kind, 16))
        .execute(&self.writer)
        .await
        .map_err(query_err("recording an event"))?;
        Ok(())
    }

    /// Events after `after_id` (of one server, of one kind), oldest first; at most
    /// `limit` (the newest ones).
    pub async fn list_events(
        &self,
        server: Option<(&str, &str)>,
        kind: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        let filter = Filter::default()
            .eq("app", server.map(|s| s.0))
            .eq("server", server.map(|s| s.1))
            .eq("kind", kind);
        let sql = format!(
            "SELECT id, at_ms, app, server, node, from_state, to_state, reason, kind FROM events \
             WHERE id > ?{} ORDER BY id DESC LIMIT {limit}",
            filter.sql()
        );
        let rows = filter
            .bind(sqlx::query(&sql).bind(after_id))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing events"))?;
        let mut events: Vec<EventRow> = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("decoding an event"))?;
        events.reverse();
        Ok(events)
    }

    /// Keeps only the newest `keep` events. Writes trim as they go
    /// ([`Store::insert_events`]); this catches up with a backlog (a lowered retention).
    pub async fn trim_events(&self, keep: i64) -> Result<u64, StoreError> {
        let max: Option<i64> = sqlx::query("SELECT MAX(id) AS m FROM events")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("m"))
            .map_err(query_err("trimming events"))?;
        let Some(max) = max else { return Ok(0) };
        let done = sqlx::query("DELETE FROM events WHERE id <= ?")
            .bind(max - keep)
            .execute(&self.writer)
            .await
            .map_err(query_err("trimming events"))?;
        Ok(done.rows_affected())
    }
}
