//! Ports per node: the fixed ports of specs and the ones allocated for `port = "auto"`.

use std::collections::{BTreeMap, HashSet};

use sqlx::Row;

use super::{Store, StoreError, query_err};
use crate::spec::Spec;

/// The range `port = "auto"` allocates from, on every node.
pub const AUTO_RANGE: std::ops::RangeInclusive<u16> = 20000..=29999;

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// The ports held on `node`, by port: (app, server, adapter).
async fn held(
    tx: &mut Tx,
    node: &str,
) -> Result<BTreeMap<u16, (String, String, String)>, StoreError> {
    let rows = sqlx::query("SELECT app, server, adapter, port FROM instance_ports WHERE node = ?")
        .bind(node)
        .fetch_all(&mut **tx)
        .await
        .map_err(query_err("reading ports"))?;
    let mut out = BTreeMap::new();
    for r in rows {
        let port: i64 = r.try_get("port").map_err(query_err("reading ports"))?;
        let owner = (
            r.try_get("app").map_err(query_err("reading ports"))?,
            r.try_get("server").map_err(query_err("reading ports"))?,
            r.try_get("adapter").map_err(query_err("reading ports"))?,
        );
        out.insert(port as u16, owner);
    }
    Ok(out)
}

/// The ports an instance of `spec` would get on `node`: fixed ones as written, auto
/// ones kept if already allocated, else the lowest free port of the range. Errors when
/// a fixed port is held by another server on that node.
pub async fn plan(tx: &mut Tx, spec: &Spec, node: &str) -> Result<Vec<(String, u16)>, StoreError> {
    let held = held(tx, node).await?;
    let mine = |owner: &(String, String, String)| owner.0 == spec.app && owner.1 == spec.server;
    let mut taken: HashSet<u16> = held
        .iter()
        .filter(|(_, o)| !mine(o))
        .map(|(p, _)| *p)
        .collect();
    let mut out = Vec::new();
    for a in &spec.adapters {
        if a.port != 0 {
            if let Some((app, server, adapter)) = held.get(&a.port).filter(|o| !mine(o)) {
                return Err(StoreError::Conflict(format!(
                    "port {} on {node} is held by {app}.{server} (adapter {adapter})",
                    a.port
                )));
            }
            taken.insert(a.port);
            out.push((a.name.clone(), a.port));
        }
    }
    for a in spec.adapters.iter().filter(|a| a.port == 0) {
        let kept = held
            .iter()
            .find(|(p, o)| mine(o) && o.2 == a.name && !taken.contains(*p))
            .map(|(p, _)| *p);
        let port = match kept {
            Some(p) => p,
            None => AUTO_RANGE
                .clone()
                .find(|p| !taken.contains(p))
                .ok_or_else(|| {
                    StoreError::Conflict(format!("no free port left in {AUTO_RANGE:?} on {node}"))
                })?,
        };
        taken.insert(port);
        out.push((a.name.clone(), port));
    }
    Ok(out)
}

/// Records the ports of an instance (replacing what it held).
pub async fn assign(tx: &mut Tx, spec: &Spec, node: &str) -> Result<(), StoreError> {
    let ports = if spec.external.is_some() {
        Vec::new()
    } else {
        plan(tx, spec, node).await?
    };
    release(tx, &spec.app, &spec.server, Some(node)).await?;
    for (adapter, port) in ports {
        sqlx::query(
            "INSERT INTO instance_ports (app, server, node, adapter, port) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&spec.app)
        .bind(&spec.server)
        .bind(node)
        .bind(&adapter)
        .bind(i64::from(port))
        .execute(&mut **tx)
        .await
        .map_err(query_err("allocating a port"))?;
    }
    Ok(())
}

pub async fn release(
    tx: &mut Tx,
    app: &str,
    server: &str,
    node: Option<&str>,
) -> Result<(), StoreError> {
    let one = super::filter::Filter::default().eq("node", node);
    let sql = format!(
        "DELETE FROM instance_ports WHERE app = ? AND server = ?{}",
        one.sql()
    );
    one.bind(sqlx::query(&sql).bind(app).bind(server))
        .execute(&mut **tx)
        .await
        .map_err(query_err("releasing ports"))?;
    Ok(())
}

impl Store {
    /// Ports of every instance: (app, server, node) -> adapter -> port.
    pub async fn all_ports(
        &self,
    ) -> Result<BTreeMap<(String, String, String), BTreeMap<String, u16>>, StoreError> {
        let rows = sqlx::query("SELECT app, server, node, adapter, port FROM instance_ports")
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("reading ports"))?;
        let mut out: BTreeMap<(String, String, String), BTreeMap<String, u16>> = BTreeMap::new();
        for r in rows {
            let key = (
                r.try_get("app").map_err(query_err("reading ports"))?,
                r.try_get("server").map_err(query_err("reading ports"))?,
                r.try_get("node").map_err(query_err("reading ports"))?,
            );
            let adapter: String = r.try_get("adapter").map_err(query_err("reading ports"))?;
            let port: i64 = r.try_get("port").map_err(query_err("reading ports"))?;
            out.entry(key).or_default().insert(adapter, port as u16);
        }
        Ok(out)
    }

    /// Ports of one instance, by adapter.
    pub async fn instance_ports(
        &self,
        app: &str,
        server: &str,
        node: &str,
    ) -> Result<BTreeMap<String, u16>, StoreError> {
        let rows = sqlx::query(
            "SELECT adapter, port FROM instance_ports WHERE app = ? AND server = ? AND node = ?",
        )
        .bind(app)
        .bind(server)
        .bind(node)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("reading ports"))?;
        rows.iter()
            .map(|r| Ok((r.try_get("adapter")?, r.try_get::<i64, _>("port")? as u16)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_err("reading ports"))
    }

    /// What ports `spec` would get on `node`, without changing anything (previews).
    pub async fn plan_ports(
        &self,
        spec: &Spec,
        node: &str,
    ) -> Result<Vec<(String, u16)>, StoreError> {
        let mut tx = self
            .begin_write()
            .await
            .map_err(query_err("planning ports"))?;
        let out = plan(&mut tx, spec, node).await;
        let _ = tx.rollback().await;
        out
    }
}
