//! Servers, their instances and instance events.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, Store, StoreError, query_err};
use crate::spec::{RunState, Spec};

/// One instance: desired half and last reported actual half.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRow {
    pub app: String,
    pub server: String,
    pub node: String,
    /// "running" or "stopped".
    pub desired: String,
    pub restart_counter: i64,
    pub state: String,
    pub pid: i64,
    pub restarts: i64,
    pub started_at_ms: i64,
    pub last_exit: String,
    pub last_error: String,
    pub version: String,
    pub reported_at_ms: i64,
    /// The release the instance should run; empty: none (no package).
    pub desired_version: String,
    pub prefetch_version: String,
    pub install_version: String,
    pub install_state: String,
    pub install_percent: i64,
    pub install_error: String,
    /// healthy | unhealthy | unknown | "" (no check)
    pub health: String,
}

#[derive(Clone, Debug)]
pub struct ServerRow {
    pub spec: Spec,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What a node must run: one entry per instance on it.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub spec: Spec,
    pub running: bool,
    pub restart_counter: i64,
    pub desired_version: String,
    pub prefetch_version: String,
}

/// An actual-state report from an agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusReport {
    pub app: String,
    pub server: String,
    pub state: String,
    pub pid: i64,
    pub restarts: i64,
    pub started_at_ms: i64,
    pub last_exit: String,
    pub last_error: String,
    pub version: String,
    pub install_version: String,
    pub install_state: String,
    pub install_percent: i64,
    pub install_error: String,
    pub health: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub id: i64,
    pub at_ms: i64,
    pub app: String,
    pub server: String,
    pub node: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// The admin actions on instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
    Undeploy,
}

/// What `apply_spec` did.
#[derive(Debug)]
pub struct Applied {
    /// The spec before, if the server existed.
    pub old: Option<Spec>,
    /// Nodes whose desired state changed.
    pub nodes: Vec<String>,
}

const INSTANCE_COLUMNS: &str = "app, server, node, desired, restart_counter, state, pid, restarts, \
     started_at_ms, last_exit, last_error, version, reported_at_ms, desired_version, prefetch_version, \
     install_version, install_state, install_percent, install_error, health";

fn instance_from_row(r: &AnyRow) -> Result<InstanceRow, sqlx::Error> {
    Ok(InstanceRow {
        app: r.try_get("app")?,
        server: r.try_get("server")?,
        node: r.try_get("node")?,
        desired: r.try_get("desired")?,
        restart_counter: r.try_get("restart_counter")?,
        state: r.try_get("state")?,
        pid: r.try_get("pid")?,
        restarts: r.try_get("restarts")?,
        started_at_ms: r.try_get("started_at_ms")?,
        last_exit: r.try_get("last_exit")?,
        last_error: r.try_get("last_error")?,
        version: r.try_get("version")?,
        reported_at_ms: r.try_get("reported_at_ms")?,
        desired_version: r.try_get("desired_version")?,
        prefetch_version: r.try_get("prefetch_version")?,
        install_version: r.try_get("install_version")?,
        install_state: r.try_get("install_state")?,
        install_percent: r.try_get("install_percent")?,
        install_error: r.try_get("install_error")?,
        health: r.try_get("health")?,
    })
}

/// The `spec` column as text. MySQL keeps it in a MEDIUMTEXT, which the Any driver
/// hands out as bytes; SQLite as text.
fn spec_text(row: &AnyRow) -> Result<String, sqlx::Error> {
    row.try_get::<String, _>("spec").or_else(|_| {
        let bytes: Vec<u8> = row.try_get("spec")?;
        String::from_utf8(bytes).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    })
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// A server's spec, read inside a write transaction (its row locked on MySQL).
async fn locked_spec(
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
async fn write_spec(
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

fn spec_from_json(text: &str) -> Result<Spec, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn event_from_row(r: &AnyRow) -> Result<EventRow, sqlx::Error> {
    Ok(EventRow {
        id: r.try_get("id")?,
        at_ms: r.try_get("at_ms")?,
        app: r.try_get("app")?,
        server: r.try_get("server")?,
        node: r.try_get("node")?,
        from: r.try_get("from_state")?,
        to: r.try_get("to_state")?,
        reason: r.try_get("reason")?,
    })
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
            "SELECT spec, created_at_ms, updated_at_ms FROM servers WHERE app = ? AND server = ?",
        )
        .bind(app)
        .bind(server)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("reading a server"))?;
        row.map(|r| {
            Ok(ServerRow {
                spec: spec_from_json(&spec_text(&r)?)?,
                created_at_ms: r.try_get("created_at_ms")?,
                updated_at_ms: r.try_get("updated_at_ms")?,
            })
        })
        .transpose()
        .map_err(query_err("decoding a server"))
    }

    pub async fn list_servers(&self) -> Result<Vec<ServerRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT spec, created_at_ms, updated_at_ms FROM servers ORDER BY app, server",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("listing servers"))?;
        rows.iter()
            .map(|r| {
                Ok(ServerRow {
                    spec: spec_from_json(&spec_text(r)?)?,
                    created_at_ms: r.try_get("created_at_ms")?,
                    updated_at_ms: r.try_get("updated_at_ms")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_err("decoding a server"))
    }

    /// Creates or updates a server and its instances in one transaction.
    pub async fn apply_spec(&self, spec: &Spec, now_ms: i64) -> Result<Applied, StoreError> {
        let json = serde_json::to_string(spec)
            .map_err(|e| query_err("applying a spec")(sqlx::Error::Encode(Box::new(e))))?;
        let mut tx = self
            .begin_write()
            .await
            .map_err(query_err("applying a spec"))?;
        let old = locked_spec(self, &mut tx, &spec.app, &spec.server, "applying a spec").await?;
        if old.as_ref() == Some(spec) {
            tx.rollback().await.map_err(query_err("applying a spec"))?;
            return Ok(Applied {
                old,
                nodes: Vec::new(),
            });
        }
        if old.is_some() {
            write_spec(&mut tx, spec, now_ms, "applying a spec").await?;
        } else {
            sqlx::query("INSERT INTO servers (app, server, spec, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?)")
                .bind(&spec.app)
                .bind(&spec.server)
                .bind(&json)
                .bind(now_ms)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(query_err("applying a spec"))?;
        }
        let old_nodes: Vec<String> = old.as_ref().map(|o| o.nodes.clone()).unwrap_or_default();
        let state_changed = old.as_ref().is_some_and(|o| o.state != spec.state);
        let package_changed = old.as_ref().is_some_and(|o| o.package != spec.package);
        let version = spec.package.clone().unwrap_or_default();
        for node in spec.nodes.iter().filter(|n| !old_nodes.contains(n)) {
            sqlx::query("INSERT INTO instances (app, server, node, desired, desired_version) VALUES (?, ?, ?, ?, ?)")
                .bind(&spec.app)
                .bind(&spec.server)
                .bind(node)
                .bind(spec.state.as_str())
                .bind(&version)
                .execute(&mut *tx)
                .await
                .map_err(query_err("adding an instance"))?;
        }
        for node in old_nodes.iter().filter(|n| !spec.nodes.contains(n)) {
            sqlx::query("DELETE FROM instances WHERE app = ? AND server = ? AND node = ?")
                .bind(&spec.app)
                .bind(&spec.server)
                .bind(node)
                .execute(&mut *tx)
                .await
                .map_err(query_err("removing an instance"))?;
        }
        if state_changed {
            sqlx::query("UPDATE instances SET desired = ? WHERE app = ? AND server = ?")
                .bind(spec.state.as_str())
                .bind(&spec.app)
                .bind(&spec.server)
                .execute(&mut *tx)
                .await
                .map_err(query_err("applying a spec"))?;
        }
        for node in old_nodes.iter().filter(|n| !spec.nodes.contains(n)) {
            super::ports::release(&mut tx, &spec.app, &spec.server, Some(node)).await?;
        }
        for node in &spec.nodes {
            super::ports::assign(&mut tx, spec, node).await?;
        }
        if package_changed {
            sqlx::query("UPDATE instances SET desired_version = ? WHERE app = ? AND server = ?")
                .bind(&version)
                .bind(&spec.app)
                .bind(&spec.server)
                .execute(&mut *tx)
                .await
                .map_err(query_err("applying a spec"))?;
        }
        tx.commit().await.map_err(query_err("applying a spec"))?;
        let mut nodes: Vec<String> = spec.nodes.iter().chain(old_nodes.iter()).cloned().collect();
        nodes.sort();
        nodes.dedup();
        Ok(Applied { old, nodes })
    }

    pub async fn instances_of(
        &self,
        app: &str,
        server: &str,
    ) -> Result<Vec<InstanceRow>, StoreError> {
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE app = ? AND server = ? ORDER BY node"
        );
        let rows = sqlx::query(&sql)
            .bind(app)
            .bind(server)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing instances"))?;
        rows.iter()
            .map(instance_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("decoding an instance"))
    }

    pub async fn all_instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        let sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY app, server, node");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing instances"))?;
        rows.iter()
            .map(instance_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("decoding an instance"))
    }

    /// Applies an admin action to the instances of a server (all, or one node's) in one
    /// transaction. Returns the nodes it applied to.
    pub async fn control(
        &self,
        app: &str,
        server: &str,
        node: Option<&str>,
        action: Action,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self
            .begin_write()
            .await
            .map_err(query_err("changing instances"))?;
        let mut sql = "SELECT node FROM instances WHERE app = ? AND server = ?".to_string();
        if node.is_some() {
            sql.push_str(" AND node = ?");
        }
        sql.push_str(self.for_update());
        let mut q = sqlx::query(&sql).bind(app).bind(server);
        if let Some(n) = node {
            q = q.bind(n);
        }
        let nodes: Vec<String> = q
            .fetch_all(&mut *tx)
            .await
            .map_err(query_err("changing instances"))?
            .iter()
            .map(|r| r.try_get("node"))
            .collect::<Result<_, _>>()
            .map_err(query_err("changing instances"))?;
        if nodes.is_empty() {
            return Err(match node {
                Some(n) => StoreError::InstanceNotFound(format!("{app}.{server}@{n}")),
                None => StoreError::ServerNotFound(format!("{app}.{server}")),
            });
        }
        let filter = if node.is_some() { " AND node = ?" } else { "" };
        let sql = match action {
            Action::Start => format!(
                "UPDATE instances SET desired = 'running' WHERE app = ? AND server = ?{filter}"
            ),
            Action::Stop => format!(
                "UPDATE instances SET desired = 'stopped' WHERE app = ? AND server = ?{filter}"
            ),
            Action::Restart => format!(
                "UPDATE instances SET desired = 'running', restart_counter = restart_counter + 1 WHERE app = ? AND server = ?{filter}"
            ),
            Action::Undeploy => {
                format!("DELETE FROM instances WHERE app = ? AND server = ?{filter}")
            }
        };
        let mut q = sqlx::query(&sql).bind(app).bind(server);
        if let Some(n) = node {
            q = q.bind(n);
        }
        q.execute(&mut *tx)
            .await
            .map_err(query_err("changing instances"))?;
        if action == Action::Undeploy {
            for n in &nodes {
                super::ports::release(&mut tx, app, server, Some(n)).await?;
            }
            // Keep the spec's node list in step, or forget the server with its last instance.
            let left: i64 =
                sqlx::query("SELECT COUNT(*) AS n FROM instances WHERE app = ? AND server = ?")
                    .bind(app)
                    .bind(server)
                    .fetch_one(&mut *tx)
                    .await
                    .and_then(|r| r.try_get("n"))
                    .map_err(query_err("undeploying"))?;
            if left == 0 {
                sqlx::query("DELETE FROM servers WHERE app = ? AND server = ?")
                    .bind(app)
                    .bind(server)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("undeploying"))?;
            } else {
                let mut spec = locked_spec(self, &mut tx, app, server, "undeploying")
                    .await?
                    .ok_or_else(|| StoreError::ServerNotFound(format!("{app}.{server}")))?;
                spec.nodes.retain(|n| !nodes.contains(n));
                write_spec(&mut tx, &spec, super::now_ms(), "undeploying").await?;
            }
        }
        tx.commit().await.map_err(query_err("changing instances"))?;
        Ok(nodes)
    }

    /// Everything `node` must run.
    pub async fn node_assignments(&self, node: &str) -> Result<Vec<Assignment>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.spec, i.desired, i.restart_counter, i.desired_version, i.prefetch_version FROM instances i \
             JOIN servers s ON s.app = i.app AND s.server = i.server \
             WHERE i.node = ? ORDER BY i.app, i.server",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("reading a node's desired state"))?;
        rows.iter()
            .map(|r| {
                Ok(Assignment {
                    spec: spec_from_json(&spec_text(r)?)?,
                    running: r.try_get::<String, _>("desired")? == RunState::Running.as_str(),
                    restart_counter: r.try_get("restart_counter")?,
                    desired_version: r.try_get("desired_version")?,
                    prefetch_version: r.try_get("prefetch_version")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_err("decoding a node's desired state"))
    }

    /// Records an agent's report for an instance of its own node; false if the instance
    /// is not (or no longer) assigned to that node.
    pub async fn report_status(
        &self,
        node: &str,
        r: &StatusReport,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE instances SET state = ?, pid = ?, restarts = ?, started_at_ms = ?, last_exit = ?, \
             last_error = ?, version = ?, reported_at_ms = ?, install_version = ?, install_state = ?, \
             install_percent = ?, install_error = ?, health = ? WHERE app = ? AND server = ? AND node = ?",
        )
        .bind(&r.state)
        .bind(r.pid)
        .bind(r.restarts)
        .bind(r.started_at_ms)
        .bind(truncate(&r.last_exit, 255))
        .bind(truncate(&r.last_error, 2048))
        .bind(truncate(&r.version, 128))
        .bind(now_ms)
        .bind(truncate(&r.install_version, 63))
        .bind(truncate(&r.install_state, 16))
        .bind(r.install_percent)
        .bind(truncate(&r.install_error, 2048))
        .bind(truncate(&r.health, 16))
        .bind(&r.app)
        .bind(&r.server)
        .bind(node)
        .execute(&self.pool)
        .await
        .map_err(query_err("recording an instance's state"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Events after `after_id`, oldest first; at most `limit` (the newest ones).
    pub async fn list_events(
        &self,
        server: Option<(&str, &str)>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        let filter = if server.is_some() {
            " AND app = ? AND server = ?"
        } else {
            ""
        };
        let sql = format!(
            "SELECT id, at_ms, app, server, node, from_state, to_state, reason FROM events \
             WHERE id > ?{filter} ORDER BY id DESC LIMIT {limit}"
        );
        let mut q = sqlx::query(&sql).bind(after_id);
        if let Some((app, srv)) = server {
            q = q.bind(app).bind(srv);
        }
        let rows = q
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing events"))?;
        let mut events: Vec<EventRow> = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("decoding an event"))?;
        events.reverse();
        Ok(events)
    }

    /// Keeps only the newest `keep` events. Writes trim as they go
    /// ([`Store::insert_events`]); this catches up with a backlog (a lowered retention).
    pub async fn trim_events(&self, keep: i64) -> Result<u64, StoreError> {
        let max: Option<i64> = sqlx::query("SELECT MAX(id) AS m FROM events")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get("m"))
            .map_err(query_err("trimming events"))?;
        let Some(max) = max else { return Ok(0) };
        let done = sqlx::query("DELETE FROM events WHERE id <= ?")
            .bind(max - keep)
            .execute(&self.pool)
            .await
            .map_err(query_err("trimming events"))?;
        Ok(done.rows_affected())
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Store {
    /// Makes `version` the server's release: in its spec and for every instance (the end
    /// of a rollout).
    pub async fn set_server_package(
        &self,
        app: &str,
        server: &str,
        version: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .begin_write()
            .await
            .map_err(query_err("recording the new release"))?;
        let mut spec = locked_spec(self, &mut tx, app, server, "recording the new release")
            .await?
            .ok_or_else(|| StoreError::ServerNotFound(format!("{app}.{server}")))?;
        spec.package = Some(version.to_string());
        write_spec(&mut tx, &spec, super::now_ms(), "recording the new release").await?;
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

impl Store {
    /// Adds instances of a server on `nodes` (those it is not on yet), in one
    /// transaction: the spec's node list, the instances (release and running state copied
    /// from `from`'s instance, else from the spec) and their ports. The added nodes.
    pub async fn expand(
        &self,
        app: &str,
        server: &str,
        nodes: &[String],
        from: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let err = || query_err("expanding a server");
        let mut tx = self.begin_write().await.map_err(err())?;
        let mut spec = locked_spec(self, &mut tx, app, server, "expanding a server")
            .await?
            .ok_or_else(|| StoreError::ServerNotFound(format!("{app}.{server}")))?;
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
        let new: Vec<String> = nodes
            .iter()
            .filter(|n| !spec.nodes.contains(n))
            .cloned()
            .collect();
        for node in &new {
            sqlx::query("INSERT INTO instances (app, server, node, desired, desired_version) VALUES (?, ?, ?, ?, ?)")
                .bind(app)
                .bind(server)
                .bind(node)
                .bind(&desired)
                .bind(&version)
                .execute(&mut *tx)
                .await
                .map_err(err())?;
            spec.nodes.push(node.clone());
            super::ports::assign(&mut tx, &spec, node).await?;
            added.push(node.clone());
        }
        if !added.is_empty() {
            write_spec(&mut tx, &spec, super::now_ms(), "expanding a server").await?;
        }
        tx.commit().await.map_err(err())?;
        Ok(added)
    }
}
