//! Servers: their specs (live and as last applied) and the queries every store module
//! shares to read and write them inside a transaction.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, Store, StoreError, query_err};
use crate::spec::Spec;

#[derive(Clone, Debug)]
pub struct ServerRow {
    pub spec: Spec,
    /// The spec as last applied with `registry apply` (None: never, e.g. rows older
    /// than drift tracking); `spec` differs after expand, patch, rollback, undeploy.
    pub applied: Option<Spec>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// The `spec` column as text. MySQL keeps it in a MEDIUMTEXT, which the Any driver
/// hands out as bytes; SQLite as text.
pub(crate) fn spec_text(row: &AnyRow) -> Result<String, sqlx::Error> {
    text_column(row, "spec")
}

/// A TEXT / MEDIUMTEXT column as a string, whichever way the backend hands it out.
pub(crate) fn text_column(row: &AnyRow, column: &str) -> Result<String, sqlx::Error> {
    row.try_get::<String, _>(column).or_else(|_| {
        let bytes: Vec<u8> = row.try_get(column)?;
        String::from_utf8(bytes).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    })
}

fn server_from_row(r: &AnyRow) -> Result<ServerRow, sqlx::Error> {
    let applied = text_column(r, "applied_spec")?;
    Ok(ServerRow {
        spec: spec_from_json(&spec_text(r)?)?,
        applied: if applied.is_empty() {
            None
        } else {
            Some(spec_from_json(&applied)?)
        },
        created_at_ms: r.try_get("created_at_ms")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
    })
}

pub(crate) type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// A server's spec, read inside a write transaction (its row locked on MySQL).
pub(crate) async fn locked_spec(
    store: &Store,
    tx: &mut Tx,
    app: &str,
    server: &str,
    doing: &'static str,
) -> Result<Option<Spec>, StoreError> {
    let sql = format!(
        "SELECT spec FROM servers WHERE app = ? AND server = ?{}",
        store.for_update()
    );
    let row = sqlx::query(&sql)
        .bind(app)
        .bind(server)
        .fetch_optional(&mut **tx)
        .await
        .map_err(query_err(doing))?;
    row.map(|r| spec_from_json(&spec_text(&r)?))
        .transpose()
        .map_err(query_err(doing))
}

/// Replaces a server's spec inside a transaction.
pub(crate) async fn write_spec(
    tx: &mut Tx,
    spec: &Spec,
    now_ms: i64,
    doing: &'static str,
) -> Result<(), StoreError> {
    let json = serde_json::to_string(spec)
        .map_err(|e| query_err(doing)(sqlx::Error::Encode(Box::new(e))))?;
    sqlx::query("UPDATE servers SET spec = ?, updated_at_ms = ? WHERE app = ? AND server = ?")
        .bind(json)
        .bind(now_ms)
        .bind(&spec.app)
        .bind(&spec.server)
        .execute(&mut **tx)
        .await
        .map_err(query_err(doing))?;
    Ok(())
}

pub(crate) fn spec_from_json(text: &str) -> Result<Spec, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl Store {
    /// `SELECT ... FOR UPDATE` on MySQL; SQLite locks the whole file on write anyway.
    pub(crate) fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::MySql => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    pub async fn get_server(
        &self,
        app: &str,
        server: &str,
    ) -> Result<Option<ServerRow>, StoreError> {
        let row = sqlx::query(
            "SELECT spec, applied_spec, created_at_ms, updated_at_ms FROM servers WHERE app = ? AND server = ?",
        )
        .bind(app)
        .bind(server)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("reading a server"))?;
        row.as_ref()
            .map(server_from_row)
            .transpose()
            .map_err(query_err("decoding a server"))
    }

    pub async fn list_servers(&self) -> Result<Vec<ServerRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT spec, applied_spec, created_at_ms, updated_at_ms FROM servers ORDER BY app, server",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("listing servers"))?;
        rows.iter()
            .map(server_from_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_err("decoding a server"))
    }
}

/// At most `max` bytes of a string, cut at a character boundary.
pub(crate) use corral_proto::text::prefix as truncate;

impl Store {
    /// Makes `version` the server's release: in its spec and for every instance (the end
    /// of rollout `rollout`, whose kind, patch or rollback, names the spec version).
    pub async fn set_server_package(
        &self,
        app: &str,
        server: &str,
        version: &str,
        rollout: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .begin_write()
            .await
            .map_err(query_err("recording the new release"))?;
        let mut spec = locked_spec(self, &mut tx, app, server, "recording the new release")
            .await?
            .ok_or_else(|| StoreError::ServerNotFound(format!("{app}.{server}")))?;
        let changed = spec.package.as_deref() != Some(version);
        spec.package = Some(version.to_string());
        let now = super::now_ms();
        write_spec(&mut tx, &spec, now, "recording the new release").await?;
        if changed {
            let kind = sqlx::query("SELECT kind FROM rollouts WHERE id = ?")
                .bind(rollout)
                .fetch_optional(&mut *tx)
                .await
                .map_err(query_err("recording the new release"))?
                .map(|r| text_column(&r, "kind"))
                .transpose()
                .map_err(query_err("recording the new release"))?
                .unwrap_or_else(|| "patch".to_string());
            super::history::record(self, &mut tx, &spec, &kind, now).await?;
        }
        sqlx::query("UPDATE instances SET desired_version = ?, prefetch_version = '' WHERE app = ? AND server = ?")
            .bind(version)
            .bind(app)
            .bind(server)
            .execute(&mut *tx)
            .await
            .map_err(query_err("recording the new release"))?;
        tx.commit()
            .await
            .map_err(query_err("recording the new release"))
    }
}
