//! Rollouts: a rolling patch's plan and progress, kept in the database so that any
//! replica can report on it and take it over if the one driving it dies.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, query_err};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutRow {
    pub id: i64,
    pub app: String,
    pub server: String,
    pub from_version: String,
    pub to_version: String,
    /// running | rolling-back | succeeded | failed | interrupted
    pub state: String,
    pub error: String,
    pub batch: i64,
    pub min_healthy_ms: i64,
    pub deadline_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutInstanceRow {
    pub node: String,
    pub batch: i64,
    pub from_version: String,
    /// pending | downloading | ready | switching | starting | healthy | failed | rolled-back
    pub phase: String,
    pub percent: i64,
    pub error: String,
    pub switched_at_ms: i64,
    pub healthy_since_ms: i64,
}

const ROLLOUT_COLUMNS: &str = "id, app, server, from_version, to_version, state, error, batch, min_healthy_ms, \
     deadline_ms, created_at_ms, updated_at_ms";

fn rollout_from_row(r: &AnyRow) -> Result<RolloutRow, sqlx::Error> {
    Ok(RolloutRow {
        id: r.try_get("id")?,
        app: r.try_get("app")?,
        server: r.try_get("server")?,
        from_version: r.try_get("from_version")?,
        to_version: r.try_get("to_version")?,
        state: r.try_get("state")?,
        error: r.try_get("error")?,
        batch: r.try_get("batch")?,
        min_healthy_ms: r.try_get("min_healthy_ms")?,
        deadline_ms: r.try_get("deadline_ms")?,
        created_at_ms: r.try_get("created_at_ms")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
    })
}

fn instance_from_row(r: &AnyRow) -> Result<RolloutInstanceRow, sqlx::Error> {
    Ok(RolloutInstanceRow {
        node: r.try_get("node")?,
        batch: r.try_get("batch")?,
        from_version: r.try_get("from_version")?,
        phase: r.try_get("phase")?,
        percent: r.try_get("percent")?,
        error: r.try_get("error")?,
        switched_at_ms: r.try_get("switched_at_ms")?,
        healthy_since_ms: r.try_get("healthy_since_ms")?,
    })
}

impl Store {
    /// Records a new rollout with its instances and asks them to download the new
    /// release ahead of time, in one transaction. Refused while another rollout of the
    /// same server is active.
    pub async fn create_rollout(
        &self,
        r: &RolloutRow,
        instances: &[RolloutInstanceRow],
        owner: &str,
        lease_until_ms: i64,
    ) -> Result<i64, StoreError> {
        self.create_rollout_as(r, instances, owner, lease_until_ms, "patch")
            .await
    }

    /// [`Store::create_rollout`] of a `kind`: patch or rollback, the action the spec
    /// version its end stores is named after.
    pub async fn create_rollout_as(
        &self,
        r: &RolloutRow,
        instances: &[RolloutInstanceRow],
        owner: &str,
        lease_until_ms: i64,
        kind: &str,
    ) -> Result<i64, StoreError> {
        let err = || query_err("starting a rollout");
        let mut tx = self.begin_write().await.map_err(err())?;
        let busy: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM rollouts WHERE app = ? AND server = ? AND state IN ('running', 'rolling-back'){}",
            self.for_update()
        ))
        .bind(&r.app)
        .bind(&r.server)
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get("n"))
        .map_err(err())?;
        if busy > 0 {
            return Err(StoreError::Conflict(format!(
                "another rollout of {}.{} is in progress; see `registry rollout list --server {}.{}`",
                r.app, r.server, r.app, r.server
            )));
        }
        let done = sqlx::query(
            "INSERT INTO rollouts (app, server, from_version, to_version, state, error, batch, min_healthy_ms, deadline_ms, \
             created_at_ms, updated_at_ms, owner, lease_until_ms, kind) VALUES (?, ?, ?, ?, 'running', '', ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.app)
        .bind(&r.server)
        .bind(&r.from_version)
        .bind(&r.to_version)
        .bind(r.batch)
        .bind(r.min_healthy_ms)
        .bind(r.deadline_ms)
        .bind(r.created_at_ms)
        .bind(r.created_at_ms)
        .bind(owner)
        .bind(lease_until_ms)
        .bind(kind)
        .execute(&mut *tx)
        .await
        .map_err(err())?;
        let id = match done.last_insert_id() {
            Some(id) => id,
            // Not every driver reports it; within this transaction the newest row is ours.
            None => sqlx::query("SELECT MAX(id) AS id FROM rollouts WHERE app = ? AND server = ?")
                .bind(&r.app)
                .bind(&r.server)
                .fetch_one(&mut *tx)
                .await
                .and_then(|row| row.try_get("id"))
                .map_err(err())?,
        };
        for i in instances {
            sqlx::query(
                "INSERT INTO rollout_instances (rollout_id, node, batch, from_version, phase) VALUES (?, ?, ?, ?, 'pending')",
            )
            .bind(id)
            .bind(&i.node)
            .bind(i.batch)
            .bind(&i.from_version)
            .execute(&mut *tx)
            .await
            .map_err(err())?;
            sqlx::query("UPDATE instances SET prefetch_version = ? WHERE app = ? AND server = ? AND node = ?")
                .bind(&r.to_version)
                .bind(&r.app)
                .bind(&r.server)
                .bind(&i.node)
                .execute(&mut *tx)
                .await
                .map_err(err())?;
        }
        tx.commit().await.map_err(err())?;
        Ok(id)
    }

    pub async fn get_rollout(&self, id: i64) -> Result<RolloutRow, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("reading a rollout"))?
        .ok_or(StoreError::RolloutNotFound(id))?;
        rollout_from_row(&row).map_err(query_err("decoding a rollout"))
    }

    pub async fn rollout_instances(&self, id: i64) -> Result<Vec<RolloutInstanceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT node, batch, from_version, phase, percent, error, switched_at_ms, healthy_since_ms \
             FROM rollout_instances WHERE rollout_id = ? ORDER BY batch, node",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("reading a rollout"))?;
        rows.iter()
            .map(instance_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("decoding a rollout"))
    }

    /// Newest first.
    pub async fn list_rollouts(
        &self,
        server: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<RolloutRow>, StoreError> {
        let filter = if server.is_some() {
            "WHERE app = ? AND server = ? "
        } else {
            ""
        };
        let sql = format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts {filter}ORDER BY id DESC LIMIT {limit}"
        );
        let mut q = sqlx::query(&sql);
        if let Some((a, s)) = server {
            q = q.bind(a).bind(s);
        }
        let rows = q
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing rollouts"))?;
        rows.iter()
            .map(rollout_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("decoding a rollout"))
    }

    pub async fn update_rollout_instance(
        &self,
        id: i64,
        i: &RolloutInstanceRow,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE rollout_instances SET phase = ?, percent = ?, error = ?, switched_at_ms = ?, healthy_since_ms = ? \
             WHERE rollout_id = ? AND node = ?",
        )
        .bind(&i.phase)
        .bind(i.percent)
        .bind(super::servers::truncate(&i.error, 2048))
        .bind(i.switched_at_ms)
        .bind(i.healthy_since_ms)
        .bind(id)
        .bind(&i.node)
        .execute(&self.writer)
        .await
        .map_err(query_err("updating a rollout"))?;
        Ok(())
    }

    pub async fn set_rollout_state(
        &self,
        id: i64,
        state: &str,
        error: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE rollouts SET state = ?, error = ?, updated_at_ms = ? WHERE id = ?")
            .bind(state)
            .bind(super::servers::truncate(error, 2048))
            .bind(now_ms)
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(query_err("updating a rollout"))?;
        Ok(())
    }

    /// Extends the lease of `owner` on an active rollout, or takes it over when the
    /// lease ran out; false when another replica holds it.
    pub async fn lease_rollout(
        &self,
        id: i64,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE rollouts SET owner = ?, lease_until_ms = ? \
             WHERE id = ? AND state IN ('running', 'rolling-back') AND (owner = ? OR lease_until_ms < ?)",
        )
        .bind(owner)
        .bind(until_ms)
        .bind(id)
        .bind(owner)
        .bind(now_ms)
        .execute(&self.writer)
        .await
        .map_err(query_err("leasing a rollout"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Active rollouts whose lease ran out: their driver died.
    pub async fn orphaned_rollouts(&self, now_ms: i64) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query("SELECT id FROM rollouts WHERE state IN ('running', 'rolling-back') AND lease_until_ms < ?")
            .bind(now_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("finding orphaned rollouts"))?;
        rows.iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()
            .map_err(query_err("finding orphaned rollouts"))
    }

    /// Sets which release instances should run (and clears their download-ahead).
    pub async fn set_desired_version(
        &self,
        app: &str,
        server: &str,
        nodes: &[String],
        version: &str,
        keep_prefetch: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .begin_write()
            .await
            .map_err(query_err("switching releases"))?;
        let sql = if keep_prefetch {
            "UPDATE instances SET desired_version = ? WHERE app = ? AND server = ? AND node = ?"
        } else {
            "UPDATE instances SET desired_version = ?, prefetch_version = '' WHERE app = ? AND server = ? AND node = ?"
        };
        for node in nodes {
            sqlx::query(sql)
                .bind(version)
                .bind(app)
                .bind(server)
                .bind(node)
                .execute(&mut *tx)
                .await
                .map_err(query_err("switching releases"))?;
        }
        tx.commit().await.map_err(query_err("switching releases"))
    }

    pub async fn clear_prefetch(&self, app: &str, server: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE instances SET prefetch_version = '' WHERE app = ? AND server = ?")
            .bind(app)
            .bind(server)
            .execute(&self.writer)
            .await
            .map_err(query_err("clearing downloads ahead"))?;
        Ok(())
    }
}

impl Store {
    /// Instances an active rollout is draining or switching: out of discovery.
    pub async fn drained_instances(
        &self,
    ) -> Result<std::collections::HashSet<(String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.app, r.server, i.node FROM rollout_instances i JOIN rollouts r ON r.id = i.rollout_id \
             WHERE r.state IN ('running', 'rolling-back') AND i.phase IN ('draining', 'switching')",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("finding drained instances"))?;
        rows.iter()
            .map(|r| Ok((r.try_get("app")?, r.try_get("server")?, r.try_get("node")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_err("finding drained instances"))
    }

    /// Instances a rollout is restarting on purpose right now (draining, switching,
    /// starting on the new release, or going back to the old one): config renders treat
    /// them as still listed.
    pub async fn rollout_absences(
        &self,
    ) -> Result<std::collections::HashSet<(String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.app, r.server, i.node FROM rollout_instances i JOIN rollouts r ON r.id = i.rollout_id \
             WHERE (r.state = 'running' AND i.phase IN ('draining', 'switching', 'starting')) \
                OR (r.state = 'rolling-back' AND i.phase IN ('rolled-back', 'failed') AND i.switched_at_ms > 0)",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("finding instances a rollout restarts"))?;
        rows.iter()
            .map(|r| Ok((r.try_get("app")?, r.try_get("server")?, r.try_get("node")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_err("finding instances a rollout restarts"))
    }
}
