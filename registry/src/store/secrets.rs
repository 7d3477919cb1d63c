//! Secret values, sealed with the registry's key ([`crate::secrets::key`]): stored,
//! listed without values, removed, and opened for rendering. A value that does not open
//! is an error naming the secret, never garbage and never a panic.

use std::collections::HashMap;

use sqlx::Row;

use super::servers::text_column;
use super::{Store, StoreError, query_err};
use crate::secrets::key::SecretKey;
use crate::secrets::{Scope, ServerSecrets};

/// A stored secret, without its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRow {
    pub app: String,
    pub server: String,
    pub name: String,
    pub scope: Scope,
    pub version: i64,
    pub size: i64,
    pub updated_at_ms: i64,
}

impl SecretRow {
    /// `secret ssl.key of chain0.Gateway (--node node-a, version 3)`
    pub fn describe(&self) -> String {
        format!(
            "secret {} of {}.{} ({}, version {})",
            self.name,
            self.app,
            self.server,
            self.scope.flag(),
            self.version
        )
    }
}

/// What a sealed secret is bound to.
fn secret_aad(r: &SecretRow) -> String {
    let (scope, target) = r.scope.columns();
    format!(
        "secret|{}|{}|{}|{scope}|{target}|{}",
        r.app, r.server, r.name, r.version
    )
}

/// What a sealed config file is bound to.
pub(super) fn config_aad(app: &str, server: &str, node: &str, name: &str) -> String {
    format!("config|{app}|{server}|{node}|{name}")
}

const CHECK_AAD: &str = "key-check";
const CHECK_PLAIN: &[u8] = b"corral secret key check";

/// Deletes the value of one secret for one scope (every version of it).
async fn delete_value<'e, E>(
    exec: E,
    (app, server, name): (&str, &str, &str),
    scope: &Scope,
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let (scope_col, target) = scope.columns();
    sqlx::query(
        "DELETE FROM secrets WHERE app = ? AND server = ? AND name = ? AND scope = ? AND target = ?",
    )
    .bind(app)
    .bind(server)
    .bind(name)
    .bind(scope_col)
    .bind(target)
    .execute(exec)
    .await?;
    Ok(())
}

fn row(r: &sqlx::any::AnyRow) -> Result<(SecretRow, String), sqlx::Error> {
    let scope: String = r.try_get("scope")?;
    let target: String = r.try_get("target")?;
    let scope = Scope::from_columns(&scope, &target).ok_or_else(|| {
        sqlx::Error::Decode(format!("secret scope {scope:?} {target:?} is not one").into())
    })?;
    Ok((
        SecretRow {
            app: r.try_get("app")?,
            server: r.try_get("server")?,
            name: r.try_get("name")?,
            scope,
            version: r.try_get("version")?,
            size: r.try_get("size")?,
            updated_at_ms: r.try_get("updated_at_ms")?,
        },
        text_column(r, "sealed")?,
    ))
}

const COLUMNS: &str = "app, server, name, scope, target, version, size, sealed, updated_at_ms";

impl Store {
    /// The key secrets are sealed with; an error saying how to give one.
    pub(crate) fn key(&self) -> Result<&SecretKey, StoreError> {
        self.key.as_deref().ok_or(StoreError::NoSecretKey)
    }

    /// Opens a sealed value; the error names what it was.
    pub(crate) fn open_sealed(
        &self,
        what: impl FnOnce() -> String,
        aad: &str,
        sealed: &str,
    ) -> Result<String, StoreError> {
        let key = self.key()?;
        let plain = key
            .open(aad, sealed)
            .map_err(|_| StoreError::SecretUnreadable {
                what: what(),
                key: key.source.to_string(),
            })?;
        String::from_utf8(plain).map_err(|_| StoreError::SecretUnreadable {
            what: "a sealed value".into(),
            key: key.source.to_string(),
        })
    }

    pub(crate) fn seal(&self, aad: &str, plain: &[u8]) -> Result<String, StoreError> {
        self.key()?.seal(aad, plain).map_err(StoreError::SecretKey)
    }

    /// Stores a value for `scope`, with the next version of the name.
    pub async fn put_secret(
        &self,
        (app, server, name): (&str, &str, &str),
        scope: &Scope,
        value: &str,
        now_ms: i64,
    ) -> Result<SecretRow, StoreError> {
        let err = || query_err("storing a secret");
        let mut tx = self.begin_write().await.map_err(err())?;
        let last: Option<i64> = sqlx::query(
            "SELECT MAX(version) AS v FROM secrets WHERE app = ? AND server = ? AND name = ?",
        )
        .bind(app)
        .bind(server)
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .and_then(|r| r.try_get("v"))
        .map_err(err())?;
        let row = SecretRow {
            app: app.into(),
            server: server.into(),
            name: name.into(),
            scope: scope.clone(),
            version: last.unwrap_or(0) + 1,
            size: value.len() as i64,
            updated_at_ms: now_ms,
        };
        let sealed = self.seal(&secret_aad(&row), value.as_bytes())?;
        delete_value(&mut *tx, (app, server, name), scope)
            .await
            .map_err(err())?;
        let (scope_col, target) = scope.columns();
        sqlx::query(&format!(
            "INSERT INTO secrets ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(app)
        .bind(server)
        .bind(name)
        .bind(scope_col)
        .bind(&target)
        .bind(row.version)
        .bind(row.size)
        .bind(&sealed)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(err())?;
        tx.commit().await.map_err(err())?;
        Ok(row)
    }

    /// Every secret (of one server), without values, sorted.
    pub async fn list_secrets(
        &self,
        server: Option<(&str, &str)>,
    ) -> Result<Vec<SecretRow>, StoreError> {
        let mut rows = self.secret_rows(server).await?;
        rows.sort_by(|a, b| {
            (&a.0.app, &a.0.server, &a.0.name, &a.0.scope).cmp(&(
                &b.0.app,
                &b.0.server,
                &b.0.name,
                &b.0.scope,
            ))
        });
        Ok(rows.into_iter().map(|(r, _)| r).collect())
    }

    async fn secret_rows(
        &self,
        server: Option<(&str, &str)>,
    ) -> Result<Vec<(SecretRow, String)>, StoreError> {
        let rows = match server {
            Some((app, server)) => {
                sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM secrets WHERE app = ? AND server = ?"
                ))
                .bind(app)
                .bind(server)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!("SELECT {COLUMNS} FROM secrets"))
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(query_err("reading secrets"))?;
        rows.iter()
            .map(row)
            .collect::<Result<_, _>>()
            .map_err(query_err("decoding secrets"))
    }

    /// Removes the value of one scope; None when there is none.
    pub async fn remove_secret(
        &self,
        (app, server, name): (&str, &str, &str),
        scope: &Scope,
    ) -> Result<Option<SecretRow>, StoreError> {
        let found = self
            .list_secrets(Some((app, server)))
            .await?
            .into_iter()
            .find(|r| r.name == name && &r.scope == scope);
        if found.is_none() {
            return Ok(None);
        }
        delete_value(&self.writer, (app, server, name), scope)
            .await
            .map_err(query_err("removing a secret"))?;
        Ok(found)
    }

    /// The opened values of one server's secrets.
    pub async fn server_secrets(
        &self,
        app: &str,
        server: &str,
    ) -> Result<ServerSecrets, StoreError> {
        let rows = self.secret_rows(Some((app, server))).await?;
        let mut out = ServerSecrets::default();
        for (r, sealed) in rows {
            let value = self.open_sealed(|| r.describe(), &secret_aad(&r), &sealed)?;
            out.0.entry(r.name).or_default().insert(r.scope, value);
        }
        Ok(out)
    }

    /// The opened values of every server's secrets.
    pub async fn all_secrets(
        &self,
    ) -> Result<HashMap<(String, String), ServerSecrets>, StoreError> {
        let rows = self.secret_rows(None).await?;
        let mut out: HashMap<(String, String), ServerSecrets> = HashMap::new();
        for (r, sealed) in rows {
            let value = self.open_sealed(|| r.describe(), &secret_aad(&r), &sealed)?;
            out.entry((r.app.clone(), r.server.clone()))
                .or_default()
                .0
                .entry(r.name)
                .or_default()
                .insert(r.scope, value);
        }
        Ok(out)
    }

    /// Whether the database holds anything sealed (secrets, sealed config files, the
    /// key check).
    pub async fn holds_sealed(&self) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM secrets) + (SELECT COUNT(*) FROM secret_key_check) \
             + (SELECT COUNT(*) FROM instance_configs WHERE sealed <> 0) AS n",
        )
        .fetch_one(&self.pool)
        .await
        .and_then(|r| r.try_get("n"))
        .map_err(query_err("counting sealed values"))?;
        Ok(n > 0)
    }

    /// Checks that this store's key opens everything sealed in the database (naming the
    /// first secret or file that does not open), and records a check value sealed with it
    /// when there is none yet, so a replica with another key is refused at its start.
    pub async fn verify_key(&self) -> Result<(), StoreError> {
        self.all_secrets().await?;
        self.all_configs().await?;
        let key = self.key()?;
        // Two replicas starting at once with different keys: one insert wins, and the
        // other is refused when it reads the check back.
        for _ in 0..2 {
            let check = sqlx::query("SELECT sealed FROM secret_key_check WHERE id = 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(query_err("reading the key check"))?;
            let Some(r) = check else {
                let sealed = self.seal(CHECK_AAD, CHECK_PLAIN)?;
                let _ = sqlx::query("INSERT INTO secret_key_check (id, sealed) VALUES (1, ?)")
                    .bind(sealed)
                    .execute(&self.writer)
                    .await;
                continue;
            };
            let sealed = text_column(&r, "sealed").map_err(query_err("reading the key check"))?;
            if key.open(CHECK_AAD, &sealed).ok().as_deref() != Some(CHECK_PLAIN) {
                return Err(StoreError::SecretUnreadable {
                    what: "the database's key check (the key its secrets are sealed with)".into(),
                    key: key.source.to_string(),
                });
            }
            return Ok(());
        }
        Ok(())
    }
}
