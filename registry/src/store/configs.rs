//! The config files delivered to each instance (what its agent is told to write), the
//! config restarts in flight, and holds on configs that restarted an instance too often.

use std::collections::{BTreeMap, HashMap};

use sqlx::Row;

use super::servers::{Tx, text_column};
use super::{Store, StoreError, query_err};

/// One delivered file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub content: String,
    /// The spec fingerprint it was rendered for: a file rendered for another spec is
    /// rendered again when that spec reaches the agent (the agent restarts then anyway).
    pub fingerprint: String,
    /// It holds a secret (a `[[files]]` entry, or a template that read one): sealed at
    /// rest, written 0600 unless the spec says otherwise.
    pub secret: bool,
}

/// (app, server, node) -> file name -> what was delivered.
pub type DeliveredTable = HashMap<(String, String, String), BTreeMap<String, Delivered>>;

/// Forgets an instance's delivered files (it is removed).
pub(crate) async fn forget(
    tx: &mut Tx,
    app: &str,
    server: &str,
    node: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM instance_configs WHERE app = ? AND server = ? AND node = ?")
        .bind(app)
        .bind(server)
        .bind(node)
        .execute(&mut **tx)
        .await
        .map_err(query_err("forgetting an instance's configs"))?;
    Ok(())
}

const COLUMNS: &str = "app, server, node, name, content, fingerprint, sealed";

fn collect(store: &Store, rows: &[sqlx::any::AnyRow]) -> Result<DeliveredTable, StoreError> {
    let mut out = DeliveredTable::new();
    for r in rows {
        let (app, server, node, name): (String, String, String, String) = (|| {
            Ok::<_, sqlx::Error>((
                r.try_get("app")?,
                r.try_get("server")?,
                r.try_get("node")?,
                r.try_get("name")?,
            ))
        })()
        .map_err(query_err("decoding delivered configs"))?;
        let (content, fingerprint, sealed): (String, String, i64) = (|| {
            Ok::<_, sqlx::Error>((
                text_column(r, "content")?,
                r.try_get("fingerprint")?,
                r.try_get("sealed")?,
            ))
        })()
        .map_err(query_err("decoding delivered configs"))?;
        let secret = sealed != 0;
        let content = if secret {
            store.open_sealed(
                || format!("the config file {name} of {app}.{server}@{node}"),
                &super::secrets::config_aad(&app, &server, &node, &name),
                &content,
            )?
        } else {
            content
        };
        out.entry((app, server, node)).or_default().insert(
            name,
            Delivered {
                content,
                fingerprint,
                secret,
            },
        );
    }
    Ok(out)
}

impl Store {
    /// The files delivered to the instances of `node`.
    pub async fn node_configs(&self, node: &str) -> Result<DeliveredTable, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM instance_configs WHERE node = ?"
        ))
        .bind(node)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("reading delivered configs"))?;
        collect(self, &rows)
    }

    /// The files delivered to every instance.
    pub async fn all_configs(&self) -> Result<DeliveredTable, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM instance_configs"))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("reading delivered configs"))?;
        collect(self, &rows)
    }

    /// Replaces the files delivered to an instance, in one transaction; with
    /// `restart_at_ms`, records that this delivery restarts it. False when the instance
    /// no longer exists (nothing is written then).
    pub async fn deliver_configs(
        &self,
        (app, server, node): (&str, &str, &str),
        files: &BTreeMap<String, Delivered>,
        restart_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let err = || query_err("delivering configs");
        let mut tx = self.begin_write().await.map_err(err())?;
        let exists = sqlx::query(
            "UPDATE instances SET config_restart_at_ms = CASE WHEN ? > 0 THEN ? ELSE config_restart_at_ms END \
             WHERE app = ? AND server = ? AND node = ?",
        )
        .bind(restart_at_ms.unwrap_or(0))
        .bind(restart_at_ms.unwrap_or(0))
        .bind(app)
        .bind(server)
        .bind(node)
        .execute(&mut *tx)
        .await
        .map_err(err())?
        .rows_affected()
            > 0;
        if !exists {
            let _ = tx.rollback().await;
            return Ok(false);
        }
        forget(&mut tx, app, server, node).await?;
        for (name, d) in files {
            let content = if d.secret {
                self.seal(
                    &super::secrets::config_aad(app, server, node, name),
                    d.content.as_bytes(),
                )?
            } else {
                d.content.clone()
            };
            sqlx::query(
                "INSERT INTO instance_configs (app, server, node, name, content, fingerprint, sealed, updated_at_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(app)
            .bind(server)
            .bind(node)
            .bind(name)
            .bind(content)
            .bind(&d.fingerprint)
            .bind(i64::from(d.secret))
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(err())?;
        }
        tx.commit().await.map_err(err())?;
        Ok(true)
    }

    /// Holds an instance's config changes: `config` restarted it too often.
    pub async fn hold_config(
        &self,
        (app, server, node): (&str, &str, &str),
        config: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE instances SET config_hold = ? WHERE app = ? AND server = ? AND node = ?",
        )
        .bind(super::servers::truncate(config, 255))
        .bind(app)
        .bind(server)
        .bind(node)
        .execute(&self.writer)
        .await
        .map_err(query_err("holding a config"))?;
        Ok(())
    }
}
