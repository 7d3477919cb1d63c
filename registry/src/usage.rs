//! What each instance uses (from its cgroup), as agents report it in heartbeats: kept with
//! the node's load in the database as JSON, and attached to instances in `server status`
//! and `node show`.

use corral_proto::v1::InstanceUsage;
use serde::{Deserialize, Serialize};

/// One instance's usage in the database.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Row {
    app: String,
    server: String,
    cpu_seconds: f64,
    cpu_throttled_seconds: f64,
    /// None: not measured (no memory or pids cgroup for the instance).
    memory_bytes: Option<u64>,
    memory_peak_bytes: Option<u64>,
    pids: Option<u64>,
    oom_kills: u64,
}

/// The usage list as stored; empty for none.
pub fn to_json(usage: &[InstanceUsage]) -> String {
    if usage.is_empty() {
        return String::new();
    }
    let rows: Vec<Row> = usage
        .iter()
        .map(|u| Row {
            app: u.app.clone(),
            server: u.server.clone(),
            cpu_seconds: u.cpu_seconds,
            cpu_throttled_seconds: u.cpu_throttled_seconds,
            memory_bytes: u.memory_bytes,
            memory_peak_bytes: u.memory_peak_bytes,
            pids: u.pids,
            oom_kills: u.oom_kills,
        })
        .collect();
    serde_json::to_string(&rows).unwrap_or_default()
}

/// The usage list stored; empty when there is none or it cannot be read.
pub fn from_json(text: &str) -> Vec<InstanceUsage> {
    if text.is_empty() {
        return Vec::new();
    }
    let rows: Vec<Row> = serde_json::from_str(text).unwrap_or_default();
    rows.into_iter()
        .map(|r| InstanceUsage {
            app: r.app,
            server: r.server,
            cpu_seconds: r.cpu_seconds,
            cpu_throttled_seconds: r.cpu_throttled_seconds,
            memory_bytes: r.memory_bytes,
            memory_peak_bytes: r.memory_peak_bytes,
            pids: r.pids,
            oom_kills: r.oom_kills,
        })
        .collect()
}

/// The usage of `server` (`app.server`) in a node's list.
pub fn find(usage: &[InstanceUsage], server: &str) -> Option<InstanceUsage> {
    usage
        .iter()
        .find(|u| format!("{}.{}", u.app, u.server) == server)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let u = InstanceUsage {
            app: "demo".into(),
            server: "echo".into(),
            cpu_seconds: 1.25,
            memory_bytes: Some(1 << 20),
            oom_kills: 2,
            ..Default::default()
        };
        let back = from_json(&to_json(std::slice::from_ref(&u)));
        assert_eq!(back, vec![u.clone()]);
        assert_eq!(find(&back, "demo.echo"), Some(u));
        assert_eq!(find(&back, "demo.other"), None);
        assert!(from_json("").is_empty() && to_json(&[]).is_empty());
    }
}
