//! Named leases: a job that one replica at a time runs (the config renderer). A replica
//! holds a lease while it renews it; another takes it over once it has run out.

use super::{Store, StoreError, query_err};

impl Store {
    /// Takes or renews the lease `name` for `owner` until `until_ms`; false while
    /// another replica holds it.
    pub async fn lease(
        &self,
        name: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let err = || query_err("taking a lease");
        let renewed = sqlx::query(
            "UPDATE leases SET owner = ?, until_ms = ? WHERE name = ? AND (owner = ? OR until_ms < ?)",
        )
        .bind(owner)
        .bind(until_ms)
        .bind(name)
        .bind(owner)
        .bind(now_ms)
        .execute(&self.writer)
        .await
        .map_err(err())?;
        if renewed.rows_affected() > 0 {
            return Ok(true);
        }
        // No row yet, or another owner's: a new row is ours; a duplicate key means it
        // is held.
        match sqlx::query("INSERT INTO leases (name, owner, until_ms) VALUES (?, ?, ?)")
            .bind(name)
            .bind(owner)
            .bind(until_ms)
            .execute(&self.writer)
            .await
        {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(err()(e)),
        }
    }

    /// Gives a lease up (at shutdown), so another replica need not wait for it to run out.
    pub async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = ? AND owner = ?")
            .bind(name)
            .bind(owner)
            .execute(&self.writer)
            .await
            .map_err(query_err("releasing a lease"))?;
        Ok(())
    }
}
