//! A registry and several agents on addresses of their own: the fleet most end-to-end
//! tests start from, with the discovery helpers they share.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::{Agent, Backend, Registry, TestDb, bin, wait_until};

pub const NODES: [&str; 6] = ["node-a", "node-b", "node-c", "node-d", "node-e", "node-f"];

pub struct Fleet {
    pub registry: Registry,
    pub agents: Vec<Agent>,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
}

impl Fleet {
    /// A registry on SQLite and `n` agents named node-a, node-b, …, each on a loopback
    /// address no other test uses at the same time; returns once every node is up.
    pub fn start(n: usize) -> Fleet {
        Fleet::start_with(n, &[])
    }

    /// The same, with extra `registry serve` arguments.
    pub fn start_with(n: usize, registry_args: &[&str]) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
        let registry = Registry::start(dir.path(), &db.url, registry_args);
        let ips = crate::test_ips(n);
        let agents: Vec<Agent> = NODES[..n]
            .iter()
            .zip(&ips)
            .map(|(node, ip)| Agent::start(dir.path(), &registry.addr(), node, ip))
            .collect();
        for node in &NODES[..n] {
            registry.wait_node(node, "up", Duration::from_secs(20), |v| v["state"] == "up");
        }
        Fleet {
            registry,
            agents,
            db,
            dir,
        }
    }

    /// The agent of `node`.
    pub fn agent(&self, node: &str) -> &Agent {
        self.agents
            .iter()
            .find(|a| a.node == node)
            .unwrap_or_else(|| panic!("no agent {node}"))
    }

    /// A file of `server`'s instance on `node`, relative to its instance directory.
    pub fn instance_file(&self, node: &str, server: &str, file: &str) -> PathBuf {
        self.agent(node).instance_dir(server).join(file)
    }
}

/// The test service binary (`corral-testsvc`).
pub fn testsvc() -> String {
    bin("corral-testsvc").display().to_string()
}

/// `registry endpoints NAME -o json` as (node, host, port) triples.
pub fn endpoints(r: &Registry, name: &str) -> Result<Vec<(String, String, u64)>, String> {
    let out = r.cli(&["endpoints", name, "-o", "json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into());
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["node"].as_str().unwrap_or("").to_string(),
                        e["host"].as_str().unwrap_or("").to_string(),
                        e["port"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Waits until `pred` holds for the endpoints of `name`; returns them.
pub fn wait_endpoints(
    r: &Registry,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&[(String, String, u64)]) -> bool,
) -> Vec<(String, String, u64)> {
    wait_until(&format!("{name}: {what}"), timeout, || {
        let eps = endpoints(r, name)?;
        if pred(&eps) {
            Ok(eps)
        } else {
            Err(format!("{eps:?}"))
        }
    })
}

/// The nodes of endpoint triples.
pub fn nodes_of(eps: &[(String, String, u64)]) -> Vec<String> {
    eps.iter().map(|e| e.0.clone()).collect()
}

/// The non-empty lines of a file (none when it does not exist).
pub fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every instance of `server` from `server status -o json`, by node.
pub fn instances(r: &Registry, server: &str) -> Result<Vec<Value>, String> {
    let out = r.cli(&["server", "status", server, "-o", "json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into());
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(v.as_array().cloned().unwrap_or_default())
}
