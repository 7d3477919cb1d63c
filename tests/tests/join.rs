//! Agents join, stay joined, and their liveness is right: on SQLite and on MySQL.

use std::time::Duration;

use corral_tests::{Agent, Backend, Registry, TestDb, backend_tests, free_port, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

const NODES: [(&str, &str); 3] = [
    ("node-a", "127.0.0.2"),
    ("node-b", "127.0.0.3"),
    ("node-c", "127.0.0.4"),
];

fn state_of(registry: &Registry, node: &str) -> Result<Value, String> {
    registry
        .node(node)
        .ok_or_else(|| format!("{node} not listed"))
}

fn wait_state(registry: &Registry, node: &str, state: &str, timeout: Duration) -> Value {
    registry.wait_node(node, &format!("to be {state}"), timeout, |n| {
        n["state"] == state
    })
}

fn fleet(dir: &std::path::Path, registry: &Registry) -> Vec<Agent> {
    NODES
        .iter()
        .map(|(node, ip)| Agent::start(dir, &registry.addr(), node, ip))
        .collect()
}

backend_tests! {
    join_kill_rejoin,
    taken_name_is_refused,
    registry_restart,
    second_locator,
    silent_agent_goes_down,
    node_remove,
}

/// All three join and are listed up with the facts they sent; a SIGKILLed agent is down
/// within 3 s; restarted with its data dir it is the same node and up again.
fn join_kill_rejoin(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = TestDb::new(backend, dir.path()) else {
        return;
    };
    let registry = Registry::start(dir.path(), &db.url, &[]);
    let mut agents = fleet(dir.path(), &registry);
    for (node, ip) in NODES {
        let n = wait_state(&registry, node, "up", Duration::from_secs(20));
        assert_eq!(n["address"], ip);
        assert_eq!(n["agent_version"], env!("CARGO_PKG_VERSION"));
        assert!(n["cpu_cores"].as_u64().unwrap_or(0) >= 1, "{n}");
        assert!(n["memory_bytes"].as_u64().unwrap_or(0) > 0, "{n}");
        for key in ["load", "last_seen", "joined_at"] {
            assert!(n.get(key).is_some(), "{key} missing in {n}");
        }
    }
    // A heartbeat's load report reaches the listing.
    wait_until("node-a load report", Duration::from_secs(20), || {
        let n = state_of(&registry, "node-a")?;
        if n["load"].is_object() {
            Ok(())
        } else {
            Err(n.to_string())
        }
    });
    let before = state_of(&registry, "node-b").expect("node-b");
    let identity =
        std::fs::read_to_string(agents[1].data_dir.join("identity")).expect("identity file");

    agents[1].kill();
    wait_state(&registry, "node-b", "down", Duration::from_secs(3));
    // The others are undisturbed.
    for node in ["node-a", "node-c"] {
        assert_eq!(state_of(&registry, node).expect(node)["state"], "up");
    }

    agents[1].restart();
    let after = wait_state(&registry, "node-b", "up", Duration::from_secs(20));
    assert_eq!(
        after["joined_at"], before["joined_at"],
        "a restarted agent is the same node"
    );
    assert!(after["connected_at_ms"].as_i64() > before["connected_at_ms"].as_i64());
    let identity_after =
        std::fs::read_to_string(agents[1].data_dir.join("identity")).expect("identity");
    assert_eq!(
        identity, identity_after,
        "no new identity is issued to a known node"
    );
    let list = registry.json(&["node", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{list}");
}

/// An agent that claims a running node's name with another identity is refused with a
/// clear error, and the running node stays up on its session.
fn taken_name_is_refused(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = TestDb::new(backend, dir.path()) else {
        return;
    };
    let registry = Registry::start(dir.path(), &db.url, &[]);
    let _real = Agent::start(dir.path(), &registry.addr(), "node-a", "127.0.0.2");
    let before = wait_state(&registry, "node-a", "up", Duration::from_secs(20));

    let impostor_dir = dir.path().join("impostor");
    let mut impostor =
        Agent::start_with_data_dir(&registry.addr(), "node-a", "127.0.0.5", &impostor_dir);
    let code = impostor.wait_exit(Duration::from_secs(20));
    assert_eq!(
        code,
        Some(2),
        "refused agent exits 2; log: {}",
        impostor.log_text()
    );
    let log = impostor.log_text();
    assert!(
        log.contains("refused") && log.contains("node-a"),
        "agent log: {log}"
    );
    assert!(
        registry.log_text().contains("refused agent"),
        "registry log names the refusal"
    );

    let after = state_of(&registry, "node-a").expect("node-a");
    assert_eq!(after["state"], "up");
    assert_eq!(after["address"], "127.0.0.2");
    assert_eq!(
        after["connected_at_ms"], before["connected_at_ms"],
        "the real session was not replaced"
    );
    let impostor_identity =
        std::fs::read_to_string(impostor_dir.join("identity")).expect("impostor's identity");
    assert!(
        impostor_identity.contains("\"admitted\":false"),
        "the impostor's own identity was never admitted: {impostor_identity}"
    );
}

/// After the registry is SIGKILLed and started again, every agent has a new session and
/// is up within 5 s.
fn registry_restart(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = TestDb::new(backend, dir.path()) else {
        return;
    };
    let mut registry = Registry::start(dir.path(), &db.url, &[]);
    let _agents = fleet(dir.path(), &registry);
    for (node, _) in NODES {
        wait_state(&registry, node, "up", Duration::from_secs(20));
    }
    registry.kill();
    let killed_at = corral_registry::store::now_ms();
    registry.restart();
    wait_until(
        "every agent up on a new session",
        Duration::from_secs(5),
        || {
            for (node, _) in NODES {
                let n = state_of(&registry, node)?;
                let fresh = n["connected_at_ms"].as_i64().unwrap_or(0) > killed_at;
                if n["state"] != "up" || !fresh {
                    return Err(n.to_string());
                }
            }
            Ok(())
        },
    );
}

/// An agent whose first locator URL is dead joins through the second.
fn second_locator(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = TestDb::new(backend, dir.path()) else {
        return;
    };
    let registry = Registry::start(dir.path(), &db.url, &[]);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let locator = format!("{dead},{}", registry.addr());
    let agent = Agent::start(dir.path(), &locator, "node-a", "127.0.0.2");
    wait_state(&registry, "node-a", "up", Duration::from_secs(20));
    assert!(
        agent.log_text().contains("registry unavailable"),
        "the dead one was tried first"
    );
}

/// An agent that stops talking without closing its connection (SIGSTOP) is down after
/// the node timeout; once it runs again it comes back by itself.
fn silent_agent_goes_down(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = TestDb::new(backend, dir.path()) else {
        return;
    };
    let registry = Registry::start(
        dir.path(),
        &db.url,
        &["--node-timeout", "2s", "--heartbeat-interval", "500ms"],
    );
    let agent = Agent::start(dir.path(), &registry.addr(), "node-a", "127.0.0.2");
    wait_state(&registry, "node-a", "up", Duration::from_secs(20));
    agent.signal(Signal::SIGSTOP);
    // 2 s of silence plus slack for the check itself.
    let down = wait_state(&registry, "node-a", "down", Duration::from_secs(6));
    agent.signal(Signal::SIGCONT);
    wait_until("node-a back up", Duration::from_secs(20), || {
        let n = state_of(&registry, "node-a")?;
        if n["state"] == "up" && n["connected_at_ms"].as_i64() > down["connected_at_ms"].as_i64() {
            Ok(())
        } else {
            Err(n.to_string())
        }
    });
}

/// `node remove` is refused while the node is up, works when it is down, and revokes the
/// identity: the old agent is refused afterwards.
fn node_remove(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = TestDb::new(backend, dir.path()) else {
        return;
    };
    let registry = Registry::start(dir.path(), &db.url, &[]);
    let mut agent = Agent::start(dir.path(), &registry.addr(), "node-a", "127.0.0.2");
    wait_state(&registry, "node-a", "up", Duration::from_secs(20));

    let out = registry.cli(&["node", "remove", "node-a"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node-a") && err.contains("up"), "{err}");

    agent.kill();
    wait_state(&registry, "node-a", "down", Duration::from_secs(3));
    let out = registry.cli(&["node", "remove", "node-a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(registry.node("node-a").is_none());

    let out = registry.cli(&["node", "show", "node-a"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    agent.restart();
    assert_eq!(
        agent.wait_exit(Duration::from_secs(20)),
        Some(2),
        "revoked identity is refused"
    );
    assert!(
        agent.log_text().contains("does not know"),
        "{}",
        agent.log_text()
    );
}
