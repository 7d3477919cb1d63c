//! Spec history: a numbered version of a server's spec for every change of it (apply,
//! expand, patch, rollback, undeploy of some nodes, revert), written by [`record`] inside
//! the transaction of the change, so a change that fails leaves no version and a version
//! never lacks its change.
//!
//! Numbers count up per server and are never reused: the newest [`KEEP`] versions are
//! kept (the next number is the newest's plus one, and the newest is never pruned), and a
//! server's history outlives the server, so a server removed and created again goes on
//! from where it was.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::servers::{Tx, text_column};
use super::{Store, StoreError, query_err};
use crate::spec::{RunState, Spec};

/// How many versions of each server are kept.
pub const KEEP: i64 = 50;

/// One stored version of a server's spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecVersion {
    pub version: i64,
    pub at_ms: i64,
    /// apply | expand | patch | rollback | undeploy | revert to N
    pub action: String,
    /// The release (or command) and the instance count, for listings.
    pub summary: String,
    /// The spec as `registry server export` renders it.
    pub spec_toml: String,
}

/// "release 1.2.0, 2 instances" (", stopped" when the spec says so).
pub fn summary(spec: &Spec) -> String {
    let what = match (&spec.package, &spec.external) {
        (Some(v), _) => format!("release {v}"),
        (None, Some((host, port))) => format!("external {host}:{port}"),
        (None, None) => "command".to_string(),
    };
    let n = spec.nodes.len();
    format!(
        "{what}, {n} instance{}{}",
        if n == 1 { "" } else { "s" },
        if spec.state == RunState::Stopped {
            ", stopped"
        } else {
            ""
        }
    )
}

/// Stores `spec` as the server's next version, made by `action`, inside the change's
/// transaction, and prunes what falls out of the newest [`KEEP`]; the version's number.
pub(crate) async fn record(
    store: &Store,
    tx: &mut Tx,
    spec: &Spec,
    action: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let err = || query_err("recording the spec's history");
    // A locking read on MySQL: it sees the newest committed version even when the
    // transaction's snapshot is older (a concurrent change of the same server).
    let last: i64 = sqlx::query(&format!(
        "SELECT version FROM spec_versions WHERE app = ? AND server = ? \
         ORDER BY version DESC LIMIT 1{}",
        store.for_update()
    ))
    .bind(&spec.app)
    .bind(&spec.server)
    .fetch_optional(&mut **tx)
    .await
    .and_then(|r| r.map(|r| r.try_get("version")).transpose())
    .map_err(err())?
    .unwrap_or(0);
    let version = last + 1;
    sqlx::query(
        "INSERT INTO spec_versions (app, server, version, at_ms, action, summary, spec_toml) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&spec.app)
    .bind(&spec.server)
    .bind(version)
    .bind(now_ms)
    .bind(super::servers::truncate(action, 64))
    .bind(super::servers::truncate(&summary(spec), 255))
    .bind(crate::spec::to_toml(spec))
    .execute(&mut **tx)
    .await
    .map_err(err())?;
    sqlx::query("DELETE FROM spec_versions WHERE app = ? AND server = ? AND version <= ?")
        .bind(&spec.app)
        .bind(&spec.server)
        .bind(version - KEEP)
        .execute(&mut **tx)
        .await
        .map_err(err())?;
    Ok(version)
}

fn version_from_row(r: &AnyRow) -> Result<SpecVersion, sqlx::Error> {
    Ok(SpecVersion {
        version: r.try_get("version")?,
        at_ms: r.try_get("at_ms")?,
        action: text_column(r, "action")?,
        summary: text_column(r, "summary")?,
        spec_toml: text_column(r, "spec_toml")?,
    })
}

const COLUMNS: &str = "version, at_ms, action, summary, spec_toml";

impl Store {
    /// Every kept version of a server's spec, oldest first (also of a server that was
    /// removed since).
    pub async fn spec_history(
        &self,
        app: &str,
        server: &str,
    ) -> Result<Vec<SpecVersion>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM spec_versions WHERE app = ? AND server = ? ORDER BY version"
        ))
        .bind(app)
        .bind(server)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("reading a spec's history"))?;
        rows.iter()
            .map(version_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("decoding a spec's history"))
    }

    /// One version of a server's spec; None when it was never stored or was pruned.
    pub async fn spec_version(
        &self,
        app: &str,
        server: &str,
        version: i64,
    ) -> Result<Option<SpecVersion>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM spec_versions WHERE app = ? AND server = ? AND version = ?"
        ))
        .bind(app)
        .bind(server)
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("reading a spec version"))?;
        row.as_ref()
            .map(version_from_row)
            .transpose()
            .map_err(query_err("decoding a spec version"))
    }

    /// The newest version of a server's spec, if it has any.
    pub async fn latest_spec_version(
        &self,
        app: &str,
        server: &str,
    ) -> Result<Option<SpecVersion>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM spec_versions WHERE app = ? AND server = ? \
             ORDER BY version DESC LIMIT 1"
        ))
        .bind(app)
        .bind(server)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("reading a spec version"))?;
        row.as_ref()
            .map(version_from_row)
            .transpose()
            .map_err(query_err("decoding a spec version"))
    }
}
