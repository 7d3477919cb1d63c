//! Instances: the desired half (written by admin calls) and the actual half (written
//! when agents report) of every server on every node, and the admin actions on them.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::filter::Filter;
use super::servers::{locked_spec, spec_from_json, spec_text, write_spec};
use super::{Store, StoreError, query_err};
use crate::spec::{RunState, Spec};

/// One instance: desired half and last reported actual half.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
    /// 0-based within the server, kept for the instance's life.
    pub ordinal: i64,
    /// When a config change that restarts the instance was last delivered to it.
    pub config_restart_at_ms: i64,
    /// The config whose changes are held because they restarted it too often.
    pub config_hold: String,
    /// Why the last health check failed while not healthy; '' otherwise.
    pub health_error: String,
}

/// What a node must run: one entry per instance on it.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub spec: Spec,
    pub ordinal: i64,
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
    pub health_error: String,
}

/// The admin actions on instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
    Undeploy,
}

const INSTANCE_COLUMNS: &str = "app, server, node, desired, restart_counter, state, pid, restarts, \
     started_at_ms, last_exit, last_error, version, reported_at_ms, desired_version, prefetch_version, \
     install_version, install_state, install_percent, install_error, health, health_error, \
     ordinal, config_restart_at_ms, config_hold";

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
        ordinal: r.try_get("ordinal")?,
        config_restart_at_ms: r.try_get("config_restart_at_ms")?,
        config_hold: r.try_get("config_hold")?,
        health_error: r.try_get("health_error")?,
    })
}

impl Store {
    pub async fn instances_of(
        &self,
        app: &str,
        server: &str,
    ) -> Result<Vec<InstanceRow>, StoreError> {
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE app = ? AND server = ? ORDER BY ordinal"
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

    /// The instances on one node, by server.
    pub async fn instances_on(&self, node: &str) -> Result<Vec<InstanceRow>, StoreError> {
        let sql =
            format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE node = ? ORDER BY app, server");
        let rows = sqlx::query(&sql)
            .bind(node)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing a node's instances"))?;
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
        let one = Filter::default().eq("node", node);
        let sql = format!(
            "SELECT node FROM instances WHERE app = ? AND server = ?{}{}",
            one.sql(),
            self.for_update()
        );
        let nodes: Vec<String> = one
            .bind(sqlx::query(&sql).bind(app).bind(server))
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
        let filter = one.sql();
        let sql = match action {
            Action::Start => format!(
                "UPDATE instances SET desired = 'running' WHERE app = ? AND server = ?{filter}"
            ),
            Action::Stop => format!(
                "UPDATE instances SET desired = 'stopped' WHERE app = ? AND server = ?{filter}"
            ),
            Action::Restart => format!(
                "UPDATE instances SET desired = 'running', restart_counter = restart_counter + 1, config_hold = '' WHERE app = ? AND server = ?{filter}"
            ),
            Action::Undeploy => {
                format!("DELETE FROM instances WHERE app = ? AND server = ?{filter}")
            }
        };
        one.bind(sqlx::query(&sql).bind(app).bind(server))
            .execute(&mut *tx)
            .await
            .map_err(query_err("changing instances"))?;
        if action == Action::Undeploy {
            for n in &nodes {
                super::ports::release(&mut tx, app, server, Some(n)).await?;
                super::configs::forget(&mut tx, app, server, n).await?;
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
                let now = super::now_ms();
                write_spec(&mut tx, &spec, now, "undeploying").await?;
                super::history::record(self, &mut tx, &spec, "undeploy", now).await?;
            }
        }
        tx.commit().await.map_err(query_err("changing instances"))?;
        Ok(nodes)
    }

    /// Everything `node` must run.
    pub async fn node_assignments(&self, node: &str) -> Result<Vec<Assignment>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.spec, i.ordinal, i.desired, i.restart_counter, i.desired_version, i.prefetch_version FROM instances i \
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
                    ordinal: r.try_get("ordinal")?,
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
        let doing = "recording an instance's state";
        let mut conn = self.writer.acquire().await.map_err(query_err(doing))?;
        super::reports::update_status(&mut conn, node, r, now_ms)
            .await
            .map_err(query_err(doing))
    }
}
