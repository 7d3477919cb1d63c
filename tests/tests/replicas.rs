//! Several registries on one MySQL database serve one fleet.

use std::time::Duration;

use corral_registry::store::now_ms;
use corral_tests::{Agent, Backend, Registry, TestDb, test_ips};
use serde_json::Value;

const S: Duration = Duration::from_secs(1);

fn node_on(registry: &Registry, node: &str, pred: impl Fn(&Value) -> bool, what: &str) -> Value {
    registry.wait_node(node, what, 20 * S, pred)
}

/// Two replicas, agents spread across them: a spec applied through replica 1 runs on a
/// node connected to replica 2 within 1 s; when replica 2 dies its agents are back up
/// through replica 1 within 5 s and their services keep their pids.
#[test]
fn replicas_share_one_fleet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = TestDb::new(Backend::MySql, dir.path()) else {
        return;
    };
    let (d1, d2) = (dir.path().join("r1"), dir.path().join("r2"));
    std::fs::create_dir_all(&d1).expect("mkdir");
    std::fs::create_dir_all(&d2).expect("mkdir");
    let r1 = Registry::start(&d1, &db.url, &[]);
    let mut r2 = Registry::start(&d2, &db.url, &[]);
    let ips = test_ips(2);
    let _a = Agent::start(
        dir.path(),
        &format!("{},{}", r1.addr(), r2.addr()),
        "node-a",
        &ips[0],
    );
    let _b = Agent::start(
        dir.path(),
        &format!("{},{}", r2.addr(), r1.addr()),
        "node-b",
        &ips[1],
    );
    for n in ["node-a", "node-b"] {
        node_on(
            &r1,
            n,
            |v| v["state"] == "up",
            &format!("{n} up, seen through replica 1"),
        );
    }
    assert!(
        r2.log_text().contains("node up node=node-b"),
        "node-b is connected to replica 2"
    );

    let spec =
        "app = \"demo\"\nserver = \"far\"\nnodes = [\"node-b\"]\ncommand = [\"sleep\", \"1000\"]\n";
    let applied = r1.apply(spec);
    assert!(applied.status.success());
    let applied_at = now_ms();
    let running = r1.wait_instance("demo.far", "node-b", "running", 20 * S, |i| {
        i["state"] == "running"
    });
    let started = running["started_at_ms"].as_i64().unwrap_or(i64::MAX);
    assert!(
        started - applied_at <= 1000,
        "reached node-b through replica 2 in {} ms",
        started - applied_at
    );

    r2.kill();
    let killed_at = now_ms();
    let back = node_on(
        &r1,
        "node-b",
        |v| v["state"] == "up" && v["connected_at_ms"].as_i64() > Some(killed_at),
        "node-b back through replica 1",
    );
    let took = back["connected_at_ms"].as_i64().unwrap_or(i64::MAX) - killed_at;
    assert!(took <= 5000, "node-b failed over in {took} ms");
    // The agent sends every status on a new session, before its first heartbeat; a report
    // that changes nothing is not written. Once a heartbeat of the new session is written
    // and nothing waits, the row says what the agent reported through replica 1.
    r1.wait_node("node-b", "a heartbeat through replica 1", 20 * S, |n| {
        n["last_seen_ms"].as_i64() > back["connected_at_ms"].as_i64()
    });
    let r1_http = std::net::SocketAddr::from(([127, 0, 0, 1], r1.http_port));
    corral_tests::wait_until("replica 1 has written what it got", 20 * S, || {
        let body = corral_tests::http_get(r1_http, "/health")?;
        let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if v["waiting"]["statuses"] == 0 {
            Ok(())
        } else {
            Err(body)
        }
    });
    let after = r1
        .instance("demo.far", "node-b")
        .expect("demo.far on node-b");
    assert_eq!(
        (&after["pid"], after["restarts"].as_u64()),
        (&running["pid"], Some(0)),
        "the service kept its pid"
    );
    assert_eq!(
        r1.node("node-a").expect("node-a")["state"],
        "up",
        "node-a was never affected"
    );
}
