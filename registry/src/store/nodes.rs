//! Rows of the `nodes` table: who joined, with what identity, and whether it is up.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, query_err};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Up,
    Down,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Down => "down",
        }
    }

    fn parse(s: &str) -> NodeState {
        if s == "up" {
            NodeState::Up
        } else {
            NodeState::Down
        }
    }
}

/// The last load report of a node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadRow {
    pub cpu_percent: f64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub memory_used_bytes: i64,
    pub disk_free_bytes: i64,
    /// What each instance uses, from its cgroup (JSON, see [`crate::usage`]).
    pub instance_usage: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeRow {
    pub name: String,
    pub identity_hash: String,
    pub state: NodeState,
    pub address: String,
    pub agent_version: String,
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub cpu_cores: i64,
    pub memory_bytes: i64,
    pub disk_bytes: i64,
    /// `None` until the first heartbeat has been written.
    pub load: Option<LoadRow>,
    pub last_seen_ms: i64,
    pub joined_at_ms: i64,
    pub connected_at_ms: i64,
    pub session_id: i64,
    pub data_dir: String,
    /// Whether the agent runs instances in cgroups (and takes `[resources]`).
    pub cgroups: bool,
    /// Where the cgroups are, or why there are none.
    pub cgroups_note: String,
}

/// What a session writes when its node joins.
#[derive(Clone, Debug)]
pub struct JoinRecord {
    pub name: String,
    pub identity_hash: String,
    pub address: String,
    pub agent_version: String,
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub cpu_cores: i64,
    pub memory_bytes: i64,
    pub disk_bytes: i64,
    pub now_ms: i64,
    pub session_id: i64,
    pub data_dir: String,
    pub cgroups: bool,
    pub cgroups_note: String,
}

const NODE_COLUMNS: &str = "name, identity_hash, state, address, agent_version, hostname, os, \
     kernel, cpu_cores, memory_bytes, disk_bytes, cpu_percent, load1, load5, load15, \
     memory_used_bytes, disk_free_bytes, has_load, last_seen_ms, joined_at_ms, \
     connected_at_ms, session_id, data_dir, cgroups, cgroups_note, instance_usage";

fn node_from_row(row: &AnyRow) -> Result<NodeRow, sqlx::Error> {
    let has_load: i64 = row.try_get("has_load")?;
    let load = if has_load != 0 {
        Some(LoadRow {
            cpu_percent: row.try_get("cpu_percent")?,
            load1: row.try_get("load1")?,
            load5: row.try_get("load5")?,
            load15: row.try_get("load15")?,
            memory_used_bytes: row.try_get("memory_used_bytes")?,
            disk_free_bytes: row.try_get("disk_free_bytes")?,
            instance_usage: super::servers::text_column(row, "instance_usage")?,
        })
    } else {
        None
    };
    Ok(NodeRow {
        name: row.try_get("name")?,
        identity_hash: row.try_get("identity_hash")?,
        state: NodeState::parse(&row.try_get::<String, _>("state")?),
        address: row.try_get("address")?,
        agent_version: row.try_get("agent_version")?,
        hostname: row.try_get("hostname")?,
        os: row.try_get("os")?,
        kernel: row.try_get("kernel")?,
        cpu_cores: row.try_get("cpu_cores")?,
        memory_bytes: row.try_get("memory_bytes")?,
        disk_bytes: row.try_get("disk_bytes")?,
        load,
        last_seen_ms: row.try_get("last_seen_ms")?,
        joined_at_ms: row.try_get("joined_at_ms")?,
        connected_at_ms: row.try_get("connected_at_ms")?,
        session_id: row.try_get("session_id")?,
        data_dir: row.try_get("data_dir")?,
        cgroups: row.try_get::<i64, _>("cgroups")? != 0,
        cgroups_note: row.try_get("cgroups_note")?,
    })
}

impl Store {
    pub async fn get_node(&self, name: &str) -> Result<Option<NodeRow>, StoreError> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE name = ?");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a node"))?;
        row.as_ref()
            .map(node_from_row)
            .transpose()
            .map_err(query_err("decoding a node"))
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY name");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing nodes"))?;
        rows.iter()
            .map(node_from_row)
            .collect::<Result<_, _>>()
            .map_err(query_err("decoding a node"))
    }

    /// Records a node's first join. Fails with [`StoreError::NodeExists`] when another
    /// session created the same name first.
    pub async fn insert_node(&self, join: &JoinRecord) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO nodes (name, identity_hash, state, address, agent_version, hostname, \
             os, kernel, cpu_cores, memory_bytes, disk_bytes, last_seen_ms, joined_at_ms, \
             connected_at_ms, session_id, data_dir, cgroups, cgroups_note, instance_usage) \
             VALUES (?, ?, 'up', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '')",
        )
        .bind(&join.name)
        .bind(&join.identity_hash)
        .bind(&join.address)
        .bind(&join.agent_version)
        .bind(&join.hostname)
        .bind(&join.os)
        .bind(&join.kernel)
        .bind(join.cpu_cores)
        .bind(join.memory_bytes)
        .bind(join.disk_bytes)
        .bind(join.now_ms)
        .bind(join.now_ms)
        .bind(join.now_ms)
        .bind(join.session_id)
        .bind(&join.data_dir)
        .bind(i64::from(join.cgroups))
        .bind(&join.cgroups_note)
        .execute(&self.writer)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::NodeExists(join.name.clone()))
            }
            Err(e) => Err(query_err("adding a node")(e)),
        }
    }

    /// Marks a known node `up` for a new session, refreshing its facts. The identity is
    /// part of the condition, so a concurrent identity change can never be overwritten.
    pub async fn rejoin_node(&self, join: &JoinRecord) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE nodes SET state = 'up', address = ?, agent_version = ?, hostname = ?, \
             os = ?, kernel = ?, cpu_cores = ?, memory_bytes = ?, disk_bytes = ?, \
             last_seen_ms = ?, connected_at_ms = ?, session_id = ?, data_dir = ?, \
             cgroups = ?, cgroups_note = ?, instance_usage = '' \
             WHERE name = ? AND identity_hash = ?",
        )
        .bind(&join.address)
        .bind(&join.agent_version)
        .bind(&join.hostname)
        .bind(&join.os)
        .bind(&join.kernel)
        .bind(join.cpu_cores)
        .bind(join.memory_bytes)
        .bind(join.disk_bytes)
        .bind(join.now_ms)
        .bind(join.now_ms)
        .bind(join.session_id)
        .bind(&join.data_dir)
        .bind(i64::from(join.cgroups))
        .bind(&join.cgroups_note)
        .bind(&join.name)
        .bind(&join.identity_hash)
        .execute(&self.writer)
        .await
        .map_err(query_err("marking a node up"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NodeExists(join.name.clone()));
        }
        Ok(())
    }

    /// Marks a node `down` when its session `session_id` ends, unless a newer session has
    /// taken over. Returns whether the row changed.
    pub async fn mark_node_down(
        &self,
        name: &str,
        session_id: i64,
        last_seen_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE nodes SET state = 'down', last_seen_ms = ? \
             WHERE name = ? AND session_id = ? AND state = 'up'",
        )
        .bind(last_seen_ms)
        .bind(name)
        .bind(session_id)
        .execute(&self.writer)
        .await
        .map_err(query_err("marking a node down"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks `down` every node still `up` whose last-seen time is older than `cutoff_ms`
    /// (nodes whose registry died without closing their session), except those in `alive`
    /// (sessions open on this replica). Returns their names.
    pub async fn sweep_stale_nodes(
        &self,
        cutoff_ms: i64,
        alive: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT name FROM nodes WHERE state = 'up' AND last_seen_ms < ?")
            .bind(cutoff_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("finding stale nodes"))?;
        let mut names = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row
                .try_get("name")
                .map_err(query_err("finding stale nodes"))?;
            if alive.contains(&name) {
                continue;
            }
            let done = sqlx::query(
                "UPDATE nodes SET state = 'down' WHERE name = ? AND state = 'up' AND last_seen_ms < ?",
            )
            .bind(&name)
            .bind(cutoff_ms)
            .execute(&self.writer)
            .await
            .map_err(query_err("marking a stale node down"))?;
            if done.rows_affected() > 0 {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Forgets a node that is down, with its identity.
    pub async fn remove_node(&self, name: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM nodes WHERE name = ? AND state <> 'up'")
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(query_err("removing a node"))?;
        if done.rows_affected() > 0 {
            return Ok(());
        }
        match self.get_node(name).await? {
            Some(_) => Err(StoreError::NodeUp(name.to_string())),
            None => Err(StoreError::NodeNotFound(name.to_string())),
        }
    }

    /// How many nodes are in each state, for metrics.
    pub async fn count_nodes_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM nodes GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("counting nodes"))?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_err("counting nodes"))
    }
}
