//! `apply` and `expand`, staged in one open transaction: the spec, the instances (each
//! with its ordinal) and their ports are written first; the caller then renders every
//! template for every instance with the values it will really get, and commits only when
//! all of them render. A dry run is the same, rolled back, so it says exactly what would
//! happen.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Row;

use super::servers::{Tx, locked_spec, spec_from_json, text_column, write_spec};
use super::{Store, StoreError, query_err};
use crate::spec::Spec;

/// One instance of the staged server, as it will be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedInstance {
    pub node: String,
    pub ordinal: u32,
    pub ports: BTreeMap<String, u16>,
    pub desired_version: String,
    pub running: bool,
    /// Created by this change.
    pub added: bool,
}

/// A change written but not committed yet.
pub struct Staged {
    tx: Tx,
    /// The server's spec as it will be.
    pub spec: Spec,
    /// The live spec before, if the server existed.
    pub old: Option<Spec>,
    /// The spec as last applied before this change (drift is `old` against it).
    pub applied_before: Option<Spec>,
    /// Nodes whose desired state changes; empty when nothing does.
    pub nodes: Vec<String>,
    /// The spec version this change stores ([`super::history`]); None when the spec
    /// does not change.
    pub version: Option<i64>,
    /// Every instance of the server once the change is in, by ordinal.
    pub instances: Vec<StagedInstance>,
}

impl Staged {
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx
            .commit()
            .await
            .map_err(query_err("committing a change"))
    }

    /// Undoes everything staged (a dry run, or a template that does not render).
    pub async fn rollback(self) {
        let _ = self.tx.rollback().await;
    }
}

/// The lowest ordinal not in `used`, which it then is.
fn take_ordinal(used: &mut BTreeSet<i64>) -> i64 {
    let n = (0..).find(|n| !used.contains(n)).unwrap_or(0);
    used.insert(n);
    n
}

async fn used_ordinals(tx: &mut Tx, app: &str, server: &str) -> Result<BTreeSet<i64>, StoreError> {
    let rows = sqlx::query("SELECT ordinal FROM instances WHERE app = ? AND server = ?")
        .bind(app)
        .bind(server)
        .fetch_all(&mut **tx)
        .await
        .map_err(query_err("reading ordinals"))?;
    rows.iter()
        .map(|r| r.try_get("ordinal"))
        .collect::<Result<_, _>>()
        .map_err(query_err("reading ordinals"))
}

async fn insert_instance(
    tx: &mut Tx,
    spec: &Spec,
    node: &str,
    desired: &str,
    version: &str,
    ordinal: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO instances (app, server, node, desired, desired_version, ordinal) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&spec.app)
    .bind(&spec.server)
    .bind(node)
    .bind(desired)
    .bind(version)
    .bind(ordinal)
    .execute(&mut **tx)
    .await
    .map_err(query_err("adding an instance"))?;
    Ok(())
}

/// Every instance of a server inside the transaction, with its ports, by ordinal.
async fn staged_instances(
    tx: &mut Tx,
    app: &str,
    server: &str,
    added: &[String],
) -> Result<Vec<StagedInstance>, StoreError> {
    let err = || query_err("reading the staged instances");
    let rows = sqlx::query(
        "SELECT node, ordinal, desired, desired_version FROM instances WHERE app = ? AND server = ? ORDER BY ordinal",
    )
    .bind(app)
    .bind(server)
    .fetch_all(&mut **tx)
    .await
    .map_err(err())?;
    let ports =
        sqlx::query("SELECT node, adapter, port FROM instance_ports WHERE app = ? AND server = ?")
            .bind(app)
            .bind(server)
            .fetch_all(&mut **tx)
            .await
            .map_err(err())?;
    let mut by_node: BTreeMap<String, BTreeMap<String, u16>> = BTreeMap::new();
    for p in &ports {
        let node: String = p.try_get("node").map_err(err())?;
        let port: i64 = p.try_get("port").map_err(err())?;
        by_node
            .entry(node)
            .or_default()
            .insert(p.try_get("adapter").map_err(err())?, port as u16);
    }
    rows.iter()
        .map(|r| {
            let node: String = r.try_get("node")?;
            Ok(StagedInstance {
                ports: by_node.remove(&node).unwrap_or_default(),
                added: added.contains(&node),
                ordinal: u32::try_from(r.try_get::<i64, _>("ordinal")?).unwrap_or(0),
                running: r.try_get::<String, _>("desired")? == "running",
                desired_version: r.try_get("desired_version")?,
                node,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(err())
}

impl Store {
    /// Stages creating or updating a server from `spec`: the spec (also as the last
    /// applied one), its instances and their ports.
    pub async fn stage_apply(&self, spec: &Spec, now_ms: i64) -> Result<Staged, StoreError> {
        self.stage_apply_as(spec, now_ms, "apply").await
    }

    /// [`Store::stage_apply`], recording the new spec version as made by `action`
    /// (`apply`, `revert to 3`).
    pub async fn stage_apply_as(
        &self,
        spec: &Spec,
        now_ms: i64,
        action: &str,
    ) -> Result<Staged, StoreError> {
        let err = || query_err("applying a spec");
        let json =
            serde_json::to_string(spec).map_err(|e| err()(sqlx::Error::Encode(Box::new(e))))?;
        let mut tx = self.begin_write().await.map_err(err())?;
        let old = locked_spec(self, &mut tx, &spec.app, &spec.server, "applying a spec").await?;
        let applied_before = match &old {
            Some(_) => {
                let row =
                    sqlx::query("SELECT applied_spec FROM servers WHERE app = ? AND server = ?")
                        .bind(&spec.app)
                        .bind(&spec.server)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(err())?;
                let text = text_column(&row, "applied_spec").map_err(err())?;
                (!text.is_empty())
                    .then(|| spec_from_json(&text))
                    .transpose()
                    .map_err(err())?
            }
            None => None,
        };
        let mut staged_nodes = Vec::new();
        let mut added = Vec::new();
        let mut version = None;
        if old.as_ref() != Some(spec) {
            version = Some(super::history::record(self, &mut tx, spec, action, now_ms).await?);
            if old.is_some() {
                write_spec(&mut tx, spec, now_ms, "applying a spec").await?;
            } else {
                sqlx::query("INSERT INTO servers (app, server, spec, applied_spec, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?)")
                    .bind(&spec.app)
                    .bind(&spec.server)
                    .bind(&json)
                    .bind(&json)
                    .bind(now_ms)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(err())?;
            }
            let old_nodes: Vec<String> = old.as_ref().map(|o| o.nodes.clone()).unwrap_or_default();
            let version = spec.package.clone().unwrap_or_default();
            for node in old_nodes.iter().filter(|n| !spec.nodes.contains(n)) {
                sqlx::query("DELETE FROM instances WHERE app = ? AND server = ? AND node = ?")
                    .bind(&spec.app)
                    .bind(&spec.server)
                    .bind(node)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("removing an instance"))?;
                super::ports::release(&mut tx, &spec.app, &spec.server, Some(node)).await?;
                super::configs::forget(&mut tx, &spec.app, &spec.server, node).await?;
            }
            let mut used = used_ordinals(&mut tx, &spec.app, &spec.server).await?;
            for node in spec.nodes.iter().filter(|n| !old_nodes.contains(n)) {
                let ordinal = take_ordinal(&mut used);
                insert_instance(&mut tx, spec, node, spec.state.as_str(), &version, ordinal)
                    .await?;
                added.push(node.clone());
            }
            if old.as_ref().is_some_and(|o| o.state != spec.state) {
                sqlx::query("UPDATE instances SET desired = ? WHERE app = ? AND server = ?")
                    .bind(spec.state.as_str())
                    .bind(&spec.app)
                    .bind(&spec.server)
                    .execute(&mut *tx)
                    .await
                    .map_err(err())?;
            }
            if old.as_ref().is_some_and(|o| o.package != spec.package) {
                sqlx::query(
                    "UPDATE instances SET desired_version = ? WHERE app = ? AND server = ?",
                )
                .bind(&version)
                .bind(&spec.app)
                .bind(&spec.server)
                .execute(&mut *tx)
                .await
                .map_err(err())?;
            }
            // A new spec is the operator's answer to a config that restarted too often.
            sqlx::query("UPDATE instances SET config_hold = '' WHERE app = ? AND server = ?")
                .bind(&spec.app)
                .bind(&spec.server)
                .execute(&mut *tx)
                .await
                .map_err(err())?;
            for node in &spec.nodes {
                super::ports::assign(&mut tx, spec, node).await?;
            }
            staged_nodes = spec.nodes.iter().chain(old_nodes.iter()).cloned().collect();
            staged_nodes.sort();
            staged_nodes.dedup();
        }
        if old.is_some() {
            sqlx::query("UPDATE servers SET applied_spec = ? WHERE app = ? AND server = ?")
                .bind(&json)
                .bind(&spec.app)
                .bind(&spec.server)
                .execute(&mut *tx)
                .await
                .map_err(err())?;
        }
        let instances = staged_instances(&mut tx, &spec.app, &spec.server, &added).await?;
        Ok(Staged {
            tx,
            spec: spec.clone(),
            old,
            applied_before,
            nodes: staged_nodes,
            version,
            instances,
        })
    }

    /// Stages adding instances of a server on `nodes` (those it is not on yet): the
    /// spec's node list, the instances (release and running state copied from `from`'s
    /// instance, else from the spec) and their ports.
    pub async fn stage_expand(
        &self,
        app: &str,
        server: &str,
        nodes: &[String],
        from: Option<&str>,
    ) -> Result<Staged, StoreError> {
        let err = || query_err("expanding a server");
        let mut tx = self.begin_write().await.map_err(err())?;
        let mut spec = locked_spec(self, &mut tx, app, server, "expanding a server")
            .await?
            .ok_or_else(|| StoreError::ServerNotFound(format!("{app}.{server}")))?;
        let old = spec.clone();
        let (desired, version) = match from {
            Some(f) => {
                let r = sqlx::query("SELECT desired, desired_version FROM instances WHERE app = ? AND server = ? AND node = ?")
                    .bind(app)
                    .bind(server)
                    .bind(f)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(err())?
                    .ok_or_else(|| StoreError::InstanceNotFound(format!("{app}.{server}@{f}")))?;
                (
                    r.try_get::<String, _>("desired").map_err(err())?,
                    r.try_get::<String, _>("desired_version").map_err(err())?,
                )
            }
            None => (
                spec.state.as_str().to_string(),
                spec.package.clone().unwrap_or_default(),
            ),
        };
        let mut added = Vec::new();
        let mut used = used_ordinals(&mut tx, app, server).await?;
        for node in nodes {
            if spec.nodes.contains(node) || added.contains(node) {
                continue;
            }
            let ordinal = take_ordinal(&mut used);
            insert_instance(&mut tx, &spec, node, &desired, &version, ordinal).await?;
            spec.nodes.push(node.clone());
            super::ports::assign(&mut tx, &spec, node).await?;
            added.push(node.clone());
        }
        let mut version = None;
        if !added.is_empty() {
            let now = super::now_ms();
            write_spec(&mut tx, &spec, now, "expanding a server").await?;
            version = Some(super::history::record(self, &mut tx, &spec, "expand", now).await?);
        }
        let instances = staged_instances(&mut tx, app, server, &added).await?;
        Ok(Staged {
            tx,
            spec,
            old: Some(old),
            applied_before: None,
            nodes: added,
            version,
            instances,
        })
    }
}

/// What [`Store::apply_spec`] did.
#[derive(Debug)]
pub struct Applied {
    /// The spec before, if the server existed.
    pub old: Option<Spec>,
    /// Nodes whose desired state changed.
    pub nodes: Vec<String>,
}

impl Store {
    /// Stages and commits an apply, without rendering anything (tools and tests; the
    /// admin API checks templates between the two).
    pub async fn apply_spec(&self, spec: &Spec, now_ms: i64) -> Result<Applied, StoreError> {
        let staged = self.stage_apply(spec, now_ms).await?;
        let applied = Applied {
            old: staged.old.clone(),
            nodes: staged.nodes.clone(),
        };
        staged.commit().await?;
        Ok(applied)
    }

    /// Stages and commits an expand; the nodes instances were added on.
    pub async fn expand(
        &self,
        app: &str,
        server: &str,
        nodes: &[String],
        from: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let staged = self.stage_expand(app, server, nodes, from).await?;
        let added = staged.nodes.clone();
        staged.commit().await?;
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_fill_the_lowest_gap() {
        let mut used = BTreeSet::from([0, 1, 3]);
        assert_eq!(take_ordinal(&mut used), 2);
        assert_eq!(take_ordinal(&mut used), 4);
        assert_eq!(take_ordinal(&mut BTreeSet::new()), 0);
    }
}
