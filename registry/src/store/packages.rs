//! Packages and their chunks.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, query_err};

/// Bytes per stored chunk: big enough that a 1 GiB package is 1,024 rows, small enough
/// that neither side ever holds more than a few of them.
pub const CHUNK_SIZE: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageRow {
    pub app: String,
    pub server: String,
    pub version: String,
    pub sha256: String,
    pub size: i64,
    pub note: String,
    pub entries: i64,
    pub chunk_size: i64,
    pub created_at_ms: i64,
}

const COLUMNS: &str =
    "app, server, version, sha256, size, note, entries, chunk_size, created_at_ms";

fn from_row(r: &AnyRow) -> Result<PackageRow, sqlx::Error> {
    Ok(PackageRow {
        app: r.try_get("app")?,
        server: r.try_get("server")?,
        version: r.try_get("version")?,
        sha256: r.try_get("sha256")?,
        size: r.try_get("size")?,
        note: r.try_get("note")?,
        entries: r.try_get("entries")?,
        chunk_size: r.try_get("chunk_size")?,
        created_at_ms: r.try_get("created_at_ms")?,
    })
}

impl Store {
    /// Reserves a package for an upload. An upload left unfinished for longer than
    /// `stale_ms` (its uploader died) is cleared first.
    pub async fn begin_upload(&self, p: &PackageRow, stale_ms: i64) -> Result<(), StoreError> {
        let name = format!("{}.{} {}", p.app, p.server, p.version);
        if let Some((state, created)) = self.package_state(&p.app, &p.server, &p.version).await? {
            if state == "uploading" && created < p.created_at_ms - stale_ms {
                self.abort_upload(&p.app, &p.server, &p.version).await?;
            } else if state == "uploading" {
                return Err(StoreError::PackageBusy(name));
            } else {
                return Err(StoreError::PackageExists(name));
            }
        }
        let result = sqlx::query(
            "INSERT INTO packages (app, server, version, sha256, size, note, entries, chunk_size, state, created_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, 0, ?, 'uploading', ?)",
        )
        .bind(&p.app)
        .bind(&p.server)
        .bind(&p.version)
        .bind(&p.sha256)
        .bind(p.size)
        .bind(&p.note)
        .bind(p.chunk_size)
        .bind(p.created_at_ms)
        .execute(&self.writer)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::PackageBusy(name))
            }
            Err(e) => Err(query_err("reserving a package")(e)),
        }
    }

    async fn package_state(
        &self,
        app: &str,
        server: &str,
        version: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let row = sqlx::query("SELECT state, created_at_ms FROM packages WHERE app = ? AND server = ? AND version = ?")
            .bind(app)
            .bind(server)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a package"))?;
        row.map(|r| Ok((r.try_get("state")?, r.try_get("created_at_ms")?)))
            .transpose()
            .map_err(query_err("reading a package"))
    }

    pub async fn put_chunk(
        &self,
        app: &str,
        server: &str,
        version: &str,
        seq: i64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO package_chunks (app, server, version, seq, data) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(app)
        .bind(server)
        .bind(version)
        .bind(seq)
        .bind(data)
        .execute(&self.writer)
        .await
        .map_err(query_err("storing a package chunk"))?;
        Ok(())
    }

    /// Makes an uploaded package visible.
    pub async fn finish_upload(
        &self,
        app: &str,
        server: &str,
        version: &str,
        entries: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE packages SET state = 'ready', entries = ? WHERE app = ? AND server = ? AND version = ?")
            .bind(entries)
            .bind(app)
            .bind(server)
            .bind(version)
            .execute(&self.writer)
            .await
            .map_err(query_err("finishing an upload"))?;
        Ok(())
    }

    /// Removes a package and its chunks (an aborted upload, or `package remove`).
    pub async fn abort_upload(
        &self,
        app: &str,
        server: &str,
        version: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .begin_write()
            .await
            .map_err(query_err("removing a package"))?;
        for table in ["package_chunks", "packages"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE app = ? AND server = ? AND version = ?"
            ))
            .bind(app)
            .bind(server)
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(query_err("removing a package"))?;
        }
        tx.commit().await.map_err(query_err("removing a package"))
    }

    /// A ready package.
    pub async fn get_package(
        &self,
        app: &str,
        server: &str,
        version: &str,
    ) -> Result<Option<PackageRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM packages WHERE app = ? AND server = ? AND version = ? AND state = 'ready'"
        );
        let row = sqlx::query(&sql)
            .bind(app)
            .bind(server)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a package"))?;
        row.as_ref()
            .map(from_row)
            .transpose()
            .map_err(query_err("decoding a package"))
    }

    /// Ready packages, oldest first.
    pub async fn list_packages(
        &self,
        server: Option<(&str, &str)>,
    ) -> Result<Vec<PackageRow>, StoreError> {
        let filter = if server.is_some() {
            " AND app = ? AND server = ?"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM packages WHERE state = 'ready'{filter} ORDER BY app, server, created_at_ms"
        );
        let mut q = sqlx::query(&sql);
        if let Some((a, s)) = server {
            q = q.bind(a).bind(s);
        }
        let rows = q
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing packages"))?;
        rows.iter()
            .map(from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("decoding a package"))
    }

    pub async fn read_chunk(
        &self,
        app: &str,
        server: &str,
        version: &str,
        seq: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT data FROM package_chunks WHERE app = ? AND server = ? AND version = ? AND seq = ?")
            .bind(app)
            .bind(server)
            .bind(version)
            .bind(seq)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a package chunk"))?;
        row.map(|r| r.try_get::<Vec<u8>, _>("data"))
            .transpose()
            .map_err(query_err("reading a package chunk"))
    }

    /// Nodes whose instances run, are to run or to download this package.
    pub async fn package_users(
        &self,
        app: &str,
        server: &str,
        version: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT node FROM instances WHERE app = ? AND server = ? AND \
             (desired_version = ? OR prefetch_version = ? OR version = ?) ORDER BY node",
        )
        .bind(app)
        .bind(server)
        .bind(version)
        .bind(version)
        .bind(version)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("finding a package's users"))?;
        rows.iter()
            .map(|r| r.try_get("node"))
            .collect::<Result<_, _>>()
            .map_err(query_err("finding a package's users"))
    }
}
