//! Heartbeats written in batches: each flush of the sessions' last-seen times and load
//! reports is one transaction ([`Store::write_heartbeats`]).

use sqlx::Row;

use super::nodes::LoadRow;
use super::{Backend, Store, StoreError, query_err};

/// One node's entry in a batched heartbeat write.
#[derive(Clone, Debug)]
pub struct HeartbeatRow {
    pub name: String,
    pub session_id: i64,
    pub last_seen_ms: i64,
    pub load: Option<LoadRow>,
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds a heartbeat's load columns, in the order both heartbeat statements name them:
/// `cpu_percent, load1, load5, load15, memory_used_bytes, disk_free_bytes, has_load,
/// instance_usage` (zeros and `has_load = 0` without a load report).
fn bind_load<'q>(query: AnyQuery<'q>, row: &HeartbeatRow) -> AnyQuery<'q> {
    let load = row.load.clone().unwrap_or_default();
    query
        .bind(load.cpu_percent)
        .bind(load.load1)
        .bind(load.load5)
        .bind(load.load15)
        .bind(load.memory_used_bytes)
        .bind(load.disk_free_bytes)
        .bind(i64::from(row.load.is_some()))
        .bind(load.instance_usage)
}

/// Heartbeats written by one statement on SQLite (11 parameters each, well under
/// SQLite's limit of 32,766).
const HEARTBEATS_PER_STATEMENT: usize = 500;

impl Store {
    /// Writes the last-seen times and load reports of many sessions in one transaction.
    /// A heartbeat of a node's current session also marks it `up`: a sweep may have
    /// marked it `down` while its heartbeats could not be written. One of a session that
    /// ended since (which set a later last-seen time) changes nothing. Returns the nodes
    /// that were `down` and are `up` again.
    pub async fn write_heartbeats(&self, rows: &[HeartbeatRow]) -> Result<Vec<String>, StoreError> {
        let doing = "writing heartbeats";
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await.map_err(query_err(doing))?;
        let down: std::collections::HashSet<String> =
            sqlx::query("SELECT name FROM nodes WHERE state <> 'up'")
                .fetch_all(&mut *tx)
                .await
                .map_err(query_err(doing))?
                .iter()
                .map(|r| r.try_get("name"))
                .collect::<Result<_, _>>()
                .map_err(query_err(doing))?;
        let mut revived = Vec::new();
        if self.backend == Backend::Sqlite {
            // A few statements for the whole flush: on SQLite each statement is a round
            // trip to the connection's thread (2,500 a second at 10,000 nodes otherwise).
            for chunk in rows.chunks(HEARTBEATS_PER_STATEMENT) {
                let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
                let sql = format!(
                    "UPDATE nodes SET state = 'up', last_seen_ms = v.column3, \
                     cpu_percent = v.column4, load1 = v.column5, load5 = v.column6, \
                     load15 = v.column7, memory_used_bytes = v.column8, \
                     disk_free_bytes = v.column9, has_load = v.column10, \
                     instance_usage = v.column11 FROM (VALUES {values}) AS v \
                     WHERE nodes.name = v.column1 AND nodes.session_id = v.column2 \
                     AND nodes.last_seen_ms < v.column3 RETURNING name"
                );
                let mut query = sqlx::query(&sql);
                for row in chunk {
                    query = bind_load(
                        query
                            .bind(&row.name)
                            .bind(row.session_id)
                            .bind(row.last_seen_ms),
                        row,
                    );
                }
                for updated in query.fetch_all(&mut *tx).await.map_err(query_err(doing))? {
                    let name: String = updated.try_get("name").map_err(query_err(doing))?;
                    if down.contains(&name) {
                        revived.push(name);
                    }
                }
            }
            tx.commit().await.map_err(query_err(doing))?;
            return Ok(revived);
        }
        for row in rows {
            let query = sqlx::query(
                "UPDATE nodes SET state = 'up', last_seen_ms = ?, cpu_percent = ?, load1 = ?, \
                 load5 = ?, load15 = ?, memory_used_bytes = ?, disk_free_bytes = ?, has_load = ?, \
                 instance_usage = ? WHERE name = ? AND session_id = ? AND last_seen_ms < ?",
            )
            .bind(row.last_seen_ms);
            let done = bind_load(query, row)
                .bind(&row.name)
                .bind(row.session_id)
                .bind(row.last_seen_ms)
                .execute(&mut *tx)
                .await
                .map_err(query_err(doing))?;
            if done.rows_affected() > 0 && down.contains(&row.name) {
                revived.push(row.name.clone());
            }
        }
        tx.commit().await.map_err(query_err(doing))?;
        Ok(revived)
    }
}
