//! Replicas' addresses and which replica holds each node's session, for calls that must
//! reach the replica a node is connected to (`registry logs`).

use sqlx::Row;

use super::{Backend, Store, StoreError, query_err};

/// Where a node's open session is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionPlace {
    pub replica: String,
    /// The replica's gRPC address.
    pub address: String,
}

impl Store {
    /// Records (or refreshes) this replica's address.
    pub async fn replica_seen(
        &self,
        id: &str,
        address: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let doing = "recording this replica";
        let mut tx = self.begin_write().await.map_err(query_err(doing))?;
        sqlx::query("DELETE FROM replicas WHERE id = ? OR seen_ms < ?")
            .bind(id)
            .bind(now_ms - 24 * 3600 * 1000)
            .execute(&mut *tx)
            .await
            .map_err(query_err(doing))?;
        sqlx::query("INSERT INTO replicas (id, address, seen_ms) VALUES (?, ?, ?)")
            .bind(id)
            .bind(address)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(query_err(doing))?;
        tx.commit().await.map_err(query_err(doing))
    }

    /// Records that session `session_id` of `node` is open on `replica`: one upsert, as
    /// a delete then insert deadlocked on MySQL when many nodes joined at once (the
    /// delete of a row that is not there gap-locks the end of the index, where the
    /// concurrent inserts of new node names go): half of 10,000 joins failed it.
    pub async fn session_on(
        &self,
        node: &str,
        session_id: i64,
        replica: &str,
    ) -> Result<(), StoreError> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "INSERT INTO session_replicas (node, session_id, replica) VALUES (?, ?, ?) \
                 ON CONFLICT (node) DO UPDATE SET session_id = excluded.session_id, \
                 replica = excluded.replica"
            }
            Backend::MySql => {
                "INSERT INTO session_replicas (node, session_id, replica) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE session_id = VALUES(session_id), \
                 replica = VALUES(replica)"
            }
        };
        sqlx::query(sql)
            .bind(node)
            .bind(session_id)
            .bind(replica)
            .execute(&self.writer)
            .await
            .map_err(query_err("recording where a session is open"))?;
        Ok(())
    }

    /// The replica holding `node`'s current session, if the node is up and that replica
    /// was seen since `seen_after_ms`.
    pub async fn session_place(
        &self,
        node: &str,
        seen_after_ms: i64,
    ) -> Result<Option<SessionPlace>, StoreError> {
        let row = sqlx::query(
            "SELECT s.replica AS replica, r.address AS address FROM session_replicas s \
             JOIN nodes n ON n.name = s.node AND n.session_id = s.session_id \
             JOIN replicas r ON r.id = s.replica \
             WHERE s.node = ? AND n.state = 'up' AND r.seen_ms > ?",
        )
        .bind(node)
        .bind(seen_after_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("finding where a session is open"))?;
        row.map(|r| {
            Ok(SessionPlace {
                replica: r.try_get("replica")?,
                address: r.try_get("address")?,
            })
        })
        .transpose()
        .map_err(query_err("finding where a session is open"))
    }
}
