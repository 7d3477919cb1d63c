//! Counts for the registry's `/metrics`, read from the database at scrape time so that
//! every replica reports the whole fleet, not only what passed through it.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Store, StoreError, query_err};

impl Store {
    /// How many instances are in each state (`pending` until an agent first reports).
    pub async fn count_instances_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.count_by_state("SELECT state, COUNT(*) AS n FROM instances GROUP BY state")
            .await
            .map_err(query_err("counting instances"))
    }

    /// How many rollouts are in each state (`running`, `rolling-back`, `succeeded`, ...).
    pub async fn count_rollouts_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.count_by_state("SELECT state, COUNT(*) AS n FROM rollouts GROUP BY state")
            .await
            .map_err(query_err("counting rollouts"))
    }

    /// The restarts of each server (`app.server`), summed over its instances, for every
    /// server that has instances.
    ///
    /// Summed here rather than with SQL `SUM`: MySQL's `SUM` of a `BIGINT` is a `DECIMAL`,
    /// which sqlx's `Any` driver cannot decode, and one row per instance is cheap.
    pub async fn restarts_by_server(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT app, server, restarts FROM instances")
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("summing restarts"))?;
        let mut sums = BTreeMap::<String, i64>::new();
        for row in &rows {
            let app: String = row.try_get("app").map_err(query_err("summing restarts"))?;
            let server: String = row
                .try_get("server")
                .map_err(query_err("summing restarts"))?;
            let restarts: i64 = row
                .try_get("restarts")
                .map_err(query_err("summing restarts"))?;
            *sums.entry(format!("{app}.{server}")).or_default() += restarts;
        }
        Ok(sums.into_iter().collect())
    }

    /// Runs a `SELECT state, COUNT(*) AS n ... GROUP BY state` query.
    async fn count_by_state(&self, sql: &'static str) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }
}
