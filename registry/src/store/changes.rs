//! The change feed that keeps replicas in step.

use sqlx::Row;

use super::{Store, StoreError, query_err};

/// One row of the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub id: i64,
    /// The node whose desired state changed; empty for discovery-only changes.
    pub node: String,
    /// "desired" or "discovery".
    pub kind: String,
    /// The replica that wrote the row ([`crate::state::Shared::replica_id`]); empty for
    /// rows written before replicas were named.
    pub replica: String,
}

impl Store {
    /// Appends one row per node (one row with no node when `nodes` is empty), written by
    /// `replica`.
    pub async fn record_changes(
        &self,
        nodes: &[String],
        kind: &str,
        replica: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .begin_write()
            .await
            .map_err(query_err("recording changes"))?;
        let empty = [String::new()];
        let nodes = if nodes.is_empty() { &empty[..] } else { nodes };
        for node in nodes {
            sqlx::query("INSERT INTO changes (at_ms, node, kind, replica) VALUES (?, ?, ?, ?)")
                .bind(now_ms)
                .bind(node)
                .bind(kind)
                .bind(replica)
                .execute(&mut *tx)
                .await
                .map_err(query_err("recording changes"))?;
        }
        tx.commit().await.map_err(query_err("recording changes"))
    }

    pub async fn changes_after(&self, id: i64) -> Result<Vec<Change>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, node, kind, replica FROM changes WHERE id > ? ORDER BY id LIMIT 10000",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("following changes"))?;
        rows.iter()
            .map(|r| {
                Ok(Change {
                    id: r.try_get("id")?,
                    node: r.try_get("node")?,
                    kind: r.try_get("kind")?,
                    replica: r.try_get("replica")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_err("following changes"))
    }

    pub async fn last_change_id(&self) -> Result<i64, StoreError> {
        let max: Option<i64> = sqlx::query("SELECT MAX(id) AS m FROM changes")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("m"))
            .map_err(query_err("following changes"))?;
        Ok(max.unwrap_or(0))
    }

    pub async fn trim_changes(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM changes WHERE at_ms < ?")
            .bind(before_ms)
            .execute(&self.writer)
            .await
            .map_err(query_err("trimming changes"))?;
        Ok(done.rows_affected())
    }
}
