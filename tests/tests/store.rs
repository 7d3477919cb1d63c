//! One store test suite, run against SQLite and MySQL.

use corral_registry::store::{HeartbeatRow, JoinRecord, LoadRow, NodeState, Store, StoreError};
use corral_tests::{Backend, TestDb, backend_tests};

fn join(name: &str, identity_hash: &str, session_id: i64, now_ms: i64) -> JoinRecord {
    JoinRecord {
        name: name.into(),
        identity_hash: identity_hash.into(),
        address: "127.0.0.2".into(),
        agent_version: "0.1.0".into(),
        hostname: "host".into(),
        os: "Linux".into(),
        kernel: "6.1".into(),
        cpu_cores: 2,
        memory_bytes: 1 << 34,
        disk_bytes: 1 << 40,
        now_ms,
        session_id,
        data_dir: String::new(),
        cgroups: true,
        cgroups_note: "memory /sys/fs/cgroup/memory/corral/node-a (v1)".into(),
    }
}

fn with_store(backend: Backend, body: impl AsyncFnOnce(Store)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = TestDb::new(backend, dir.path()) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = Store::open(&db.url).await.expect("open store");
        assert_eq!(
            store.backend().name(),
            match backend {
                Backend::Sqlite => "sqlite",
                Backend::MySql => "mysql",
            }
        );
        store.ping().await.expect("ping");
        body(store.clone()).await;
        store.close().await;
        // Opening again re-applies nothing and keeps the data.
        let again = Store::open(&db.url).await.expect("reopen");
        again.close().await;
    });
}

backend_tests! {
    nodes_lifecycle,
    identity_is_part_of_rejoin,
    heartbeats_and_sweep,
    remove_is_refused_while_up,
}

fn nodes_lifecycle(backend: Backend) {
    with_store(backend, async |store| {
        store
            .insert_node(&join("node-a", "h1", 1, 1000))
            .await
            .expect("insert");
        let err = store
            .insert_node(&join("node-a", "h2", 2, 1000))
            .await
            .expect_err("dup");
        assert!(matches!(err, StoreError::NodeExists(_)), "{err}");
        let n = store
            .get_node("node-a")
            .await
            .expect("get")
            .expect("present");
        assert_eq!(n.state, NodeState::Up);
        assert_eq!(n.identity_hash, "h1");
        assert_eq!(n.memory_bytes, 1 << 34);
        assert_eq!(n.load, None);
        assert!(store.get_node("nope").await.expect("get").is_none());

        assert!(store.mark_node_down("node-a", 1, 2000).await.expect("down"));
        let n = store
            .get_node("node-a")
            .await
            .expect("get")
            .expect("present");
        assert_eq!((n.state, n.last_seen_ms), (NodeState::Down, 2000));
        store
            .insert_node(&join("node-b", "h3", 3, 1000))
            .await
            .expect("insert b");
        let names: Vec<String> = store
            .list_nodes()
            .await
            .expect("list")
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["node-a", "node-b"]);
        let mut counts = store.count_nodes_by_state().await.expect("count");
        counts.sort();
        assert_eq!(counts, [("down".to_string(), 1), ("up".to_string(), 1)]);
    });
}

fn identity_is_part_of_rejoin(backend: Backend) {
    with_store(backend, async |store| {
        store
            .insert_node(&join("node-a", "h1", 1, 1000))
            .await
            .expect("insert");
        let err = store
            .rejoin_node(&join("node-a", "other", 2, 2000))
            .await
            .expect_err("wrong identity");
        assert!(matches!(err, StoreError::NodeExists(_)), "{err}");
        store
            .rejoin_node(&join("node-a", "h1", 2, 2000))
            .await
            .expect("rejoin");
        let n = store
            .get_node("node-a")
            .await
            .expect("get")
            .expect("present");
        assert_eq!(
            (n.session_id, n.connected_at_ms, n.joined_at_ms),
            (2, 2000, 1000)
        );
        // The replaced session's end must not mark the node down.
        assert!(
            !store
                .mark_node_down("node-a", 1, 3000)
                .await
                .expect("stale down")
        );
        assert_eq!(
            store
                .get_node("node-a")
                .await
                .expect("get")
                .expect("n")
                .state,
            NodeState::Up
        );
    });
}

fn heartbeats_and_sweep(backend: Backend) {
    with_store(backend, async |store| {
        store
            .insert_node(&join("node-a", "h1", 1, 1000))
            .await
            .expect("insert");
        store
            .insert_node(&join("node-b", "h2", 2, 1000))
            .await
            .expect("insert");
        let load = LoadRow {
            cpu_percent: 12.5,
            load1: 0.5,
            load5: 0.25,
            load15: 0.125,
            memory_used_bytes: 1 << 30,
            disk_free_bytes: 1 << 35,
            instance_usage: r#"[{"app":"demo","server":"echo","cpu_seconds":1.5}]"#.into(),
        };
        store
            .write_heartbeats(&[
                HeartbeatRow {
                    name: "node-a".into(),
                    session_id: 1,
                    last_seen_ms: 9000,
                    load: Some(load.clone()),
                },
                // A heartbeat of a stale session changes nothing.
                HeartbeatRow {
                    name: "node-b".into(),
                    session_id: 99,
                    last_seen_ms: 9000,
                    load: None,
                },
            ])
            .await
            .expect("heartbeats");
        let a = store.get_node("node-a").await.expect("get").expect("a");
        assert_eq!((a.last_seen_ms, a.load), (9000, Some(load)));
        assert!(
            a.cgroups && a.cgroups_note.contains("(v1)"),
            "{}",
            a.cgroups_note
        );
        let b = store.get_node("node-b").await.expect("get").expect("b");
        assert_eq!(b.last_seen_ms, 1000);

        let swept = store.sweep_stale_nodes(5000, &[]).await.expect("sweep");
        assert_eq!(swept, ["node-b"]);
        assert_eq!(
            store
                .get_node("node-b")
                .await
                .expect("get")
                .expect("b")
                .state,
            NodeState::Down
        );
        assert_eq!(
            store
                .get_node("node-a")
                .await
                .expect("get")
                .expect("a")
                .state,
            NodeState::Up
        );
        assert!(
            store
                .sweep_stale_nodes(5000, &[])
                .await
                .expect("sweep")
                .is_empty()
        );
    });
}

fn remove_is_refused_while_up(backend: Backend) {
    with_store(backend, async |store| {
        store
            .insert_node(&join("node-a", "h1", 1, 1000))
            .await
            .expect("insert");
        let err = store.remove_node("node-a").await.expect_err("up");
        assert!(matches!(err, StoreError::NodeUp(_)), "{err}");
        let err = store.remove_node("ghost").await.expect_err("missing");
        assert!(matches!(err, StoreError::NodeNotFound(_)), "{err}");
        store.mark_node_down("node-a", 1, 2000).await.expect("down");
        store.remove_node("node-a").await.expect("remove");
        assert!(store.get_node("node-a").await.expect("get").is_none());
    });
}

backend_tests! {
    servers_instances_and_ports,
    packages_and_rollouts,
    change_feed,
    health_causes_and_event_kinds,
}

const SPEC: &str = r#"
app = "demo"
server = "web"
nodes = ["node-a", "node-b"]
command = ["bin/web"]
[[adapters]]
name = "Main"
port = "auto"
[[adapters]]
name = "Admin"
port = 25000
[health]
kind = "http"
adapter = "Main"
[[config]]
name = "peers.txt"
template = "{% for e in endpoints('demo.web.Main') %}{{ e }}\n{% endfor %}"
"#;

fn servers_instances_and_ports(backend: Backend) {
    use corral_registry::store::{Action, StatusReport};
    with_store(backend, async |store| {
        let spec = corral_registry::spec::parse(SPEC, "web.toml").expect("spec");
        let applied = store.apply_spec(&spec, 1000).await.expect("apply");
        assert_eq!(
            (applied.old, applied.nodes.clone()),
            (None, vec!["node-a".to_string(), "node-b".to_string()])
        );
        let row = store
            .get_server("demo", "web")
            .await
            .expect("get")
            .expect("present");
        assert_eq!(
            row.spec, spec,
            "the spec survives the database (MEDIUMTEXT on MySQL)"
        );
        let a = store
            .instance_ports("demo", "web", "node-a")
            .await
            .expect("ports");
        assert_eq!(
            (a.get("Main"), a.get("Admin")),
            (Some(&20000), Some(&25000))
        );
        // Another server with the same fixed port on node-a is refused.
        let mut other = spec.clone();
        other.server = "other".into();
        other.nodes = vec!["node-a".into()];
        let err = store
            .apply_spec(&other, 1000)
            .await
            .expect_err("port clash");
        assert!(
            err.to_string()
                .contains("port 25000 on node-a is held by demo.web"),
            "{err}"
        );
        let assigned = store.node_assignments("node-b").await.expect("assignments");
        assert_eq!((assigned.len(), assigned[0].running), (1, true));
        let report = StatusReport {
            app: "demo".into(),
            server: "web".into(),
            state: "running".into(),
            pid: 42,
            health: "healthy".into(),
            last_error: "é".repeat(2000),
            ..StatusReport::default()
        };
        assert!(
            store
                .report_status("node-a", &report, 2000)
                .await
                .expect("report")
        );
        assert!(
            !store
                .report_status("node-c", &report, 2000)
                .await
                .expect("not assigned")
        );
        let inst = store.instances_of("demo", "web").await.expect("instances");
        assert_eq!((inst[0].pid, inst[0].health.as_str()), (42, "healthy"));
        assert!(
            inst[0].last_error.len() <= 2048,
            "long errors are cut at a character boundary"
        );
        // What /metrics reads, on both backends.
        let mut by_state = store
            .count_instances_by_state()
            .await
            .expect("instances by state");
        by_state.sort();
        assert_eq!(
            by_state,
            [("pending".to_string(), 1), ("running".to_string(), 1)]
        );
        let restarts = store
            .restarts_by_server()
            .await
            .expect("restarts by server");
        assert_eq!(restarts, [("demo.web".to_string(), 0)]);
        assert!(
            store
                .count_rollouts_by_state()
                .await
                .expect("rollouts")
                .is_empty()
        );
        assert_eq!(
            store
                .control("demo", "web", Some("node-a"), Action::Restart)
                .await
                .expect("restart"),
            ["node-a"]
        );
        assert_eq!(
            store.node_assignments("node-a").await.expect("a")[0].restart_counter,
            1
        );
        assert_eq!(
            store
                .expand("demo", "web", &["node-c".into()], Some("node-a"))
                .await
                .expect("expand"),
            ["node-c"]
        );
        assert_eq!(
            store
                .instance_ports("demo", "web", "node-c")
                .await
                .expect("c")["Main"],
            20000
        );
        assert_eq!(
            store
                .get_server("demo", "web")
                .await
                .expect("get")
                .expect("s")
                .spec
                .nodes
                .len(),
            3
        );
        assert_eq!(
            store
                .control("demo", "web", None, Action::Undeploy)
                .await
                .expect("undeploy")
                .len(),
            3
        );
        assert!(
            store
                .get_server("demo", "web")
                .await
                .expect("get")
                .is_none()
        );
        assert!(
            store.all_ports().await.expect("ports").is_empty(),
            "undeploy releases ports"
        );
    });
}

fn packages_and_rollouts(backend: Backend) {
    use corral_registry::store::{PackageRow, RolloutInstanceRow, RolloutRow};
    with_store(backend, async |store| {
        let pkg = PackageRow {
            app: "demo".into(),
            server: "web".into(),
            version: "1.0.0".into(),
            sha256: "ab".repeat(32),
            size: 3,
            note: "first".into(),
            entries: 0,
            chunk_size: 2,
            created_at_ms: 1000,
        };
        store.begin_upload(&pkg, 60_000).await.expect("begin");
        assert!(
            store
                .get_package("demo", "web", "1.0.0")
                .await
                .expect("get")
                .is_none(),
            "invisible while uploading"
        );
        store
            .put_chunk("demo", "web", "1.0.0", 0, &[1, 2])
            .await
            .expect("chunk 0");
        store
            .put_chunk("demo", "web", "1.0.0", 1, &[3])
            .await
            .expect("chunk 1");
        store
            .finish_upload("demo", "web", "1.0.0", 7)
            .await
            .expect("finish");
        let got = store
            .get_package("demo", "web", "1.0.0")
            .await
            .expect("get")
            .expect("ready");
        assert_eq!((got.entries, got.size), (7, 3));
        assert_eq!(
            store
                .read_chunk("demo", "web", "1.0.0", 1)
                .await
                .expect("read"),
            Some(vec![3])
        );
        assert!(
            store.begin_upload(&pkg, 60_000).await.is_err(),
            "no second upload of a version"
        );

        let spec =
            corral_registry::spec::parse(&format!("package = \"1.0.0\"\n{SPEC}"), "web.toml")
                .expect("spec");
        store.apply_spec(&spec, 1000).await.expect("apply");
        assert_eq!(
            store
                .package_users("demo", "web", "1.0.0")
                .await
                .expect("users"),
            ["node-a", "node-b"]
        );
        let r = RolloutRow {
            id: 0,
            app: "demo".into(),
            server: "web".into(),
            from_version: "1.0.0".into(),
            to_version: "1.0.0".into(),
            state: "running".into(),
            error: String::new(),
            batch: 1,
            min_healthy_ms: 5000,
            deadline_ms: 60000,
            created_at_ms: 1000,
            updated_at_ms: 1000,
        };
        let inst = |node: &str, batch| RolloutInstanceRow {
            node: node.into(),
            batch,
            from_version: "1.0.0".into(),
            phase: "pending".into(),
            percent: 0,
            error: String::new(),
            switched_at_ms: 0,
            healthy_since_ms: 0,
        };
        let id = store
            .create_rollout(&r, &[inst("node-a", 0), inst("node-b", 1)], "me", 5000)
            .await
            .expect("rollout");
        assert!(
            store.create_rollout(&r, &[], "me", 5000).await.is_err(),
            "one active rollout per server"
        );
        assert_eq!(store.get_rollout(id).await.expect("get").state, "running");
        assert!(
            store
                .lease_rollout(id, "me", 2000, 7000)
                .await
                .expect("lease")
        );
        assert!(
            !store
                .lease_rollout(id, "other", 3000, 8000)
                .await
                .expect("held"),
            "another replica waits"
        );
        assert!(
            store
                .lease_rollout(id, "other", 8000, 13000)
                .await
                .expect("expired"),
            "and takes over after"
        );
        let mut a = inst("node-a", 0);
        a.phase = "draining".into();
        store.update_rollout_instance(id, &a).await.expect("update");
        assert!(
            store
                .drained_instances()
                .await
                .expect("drained")
                .contains(&("demo".into(), "web".into(), "node-a".into()))
        );
        store
            .set_rollout_state(id, "succeeded", "", 9000)
            .await
            .expect("state");
        assert!(store.drained_instances().await.expect("drained").is_empty());
        assert_eq!(
            store
                .list_rollouts(Some(("demo", "web")), 10)
                .await
                .expect("list")[0]
                .id,
            id
        );
    });
}

fn change_feed(backend: Backend) {
    with_store(backend, async |store| {
        assert_eq!(store.last_change_id().await.expect("last"), 0);
        store
            .record_changes(&["node-a".into(), "node-b".into()], "desired", "r1", 1000)
            .await
            .expect("record");
        store
            .record_changes(&[], "discovery", "r2", 5000)
            .await
            .expect("record");
        let all = store.changes_after(0).await.expect("after");
        let kinds: Vec<(&str, &str, &str)> = all
            .iter()
            .map(|c| (c.node.as_str(), c.kind.as_str(), c.replica.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("node-a", "desired", "r1"),
                ("node-b", "desired", "r1"),
                ("", "discovery", "r2")
            ]
        );
        assert_eq!(
            store.changes_after(all[1].id).await.expect("after").len(),
            1
        );
        assert_eq!(store.trim_changes(2000).await.expect("trim"), 2);
        assert_eq!(store.last_change_id().await.expect("last"), all[2].id);
    });
}

/// Why a check fails is kept with the instance; events have a kind and are listed by it;
/// a node's instances are listed by server.
fn health_causes_and_event_kinds(backend: Backend) {
    use corral_registry::store::{EventRow, StatusReport};
    with_store(backend, async |store| {
        let spec = corral_registry::spec::parse(SPEC, "web.toml").expect("spec");
        store.apply_spec(&spec, 1000).await.expect("apply");
        let report = StatusReport {
            app: "demo".into(),
            server: "web".into(),
            state: "running".into(),
            health: "unhealthy".into(),
            health_error: "GET /health: HTTP 503 Service Unavailable".into(),
            ..StatusReport::default()
        };
        assert!(
            store
                .report_status("node-a", &report, 2000)
                .await
                .expect("report")
        );
        let on_a = store.instances_on("node-a").await.expect("node-a");
        assert_eq!(on_a.len(), 1);
        assert_eq!(
            (on_a[0].server.as_str(), on_a[0].health_error.as_str()),
            ("web", "GET /health: HTTP 503 Service Unavailable")
        );
        assert_eq!(
            store.instances_on("node-b").await.expect("node-b")[0].health_error,
            ""
        );
        assert!(store.instances_on("node-z").await.expect("none").is_empty());

        let event = |kind: &str, from: &str, to: &str| EventRow {
            id: 0,
            at_ms: 3000,
            app: "demo".into(),
            server: "web".into(),
            node: "node-a".into(),
            from: from.into(),
            to: to.into(),
            reason: "because".into(),
            kind: kind.into(),
        };
        store
            .record_event(&event("state", "starting", "running"))
            .await
            .expect("state event");
        store
            .record_event(&event("health", "healthy", "unhealthy"))
            .await
            .expect("health event");
        let all = store.list_events(None, None, 0, 10).await.expect("all");
        assert_eq!(
            all.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["state", "health"]
        );
        let health = store
            .list_events(Some(("demo", "web")), Some("health"), 0, 10)
            .await
            .expect("health");
        assert_eq!(health.len(), 1);
        assert_eq!(
            (health[0].from.as_str(), health[0].to.as_str()),
            ("healthy", "unhealthy")
        );
        assert!(
            store
                .list_events(None, Some("config"), 0, 10)
                .await
                .expect("config")
                .is_empty()
        );
    });
}

backend_tests! {
    heartbeats_bring_a_swept_node_back,
    a_large_flush_of_heartbeats_writes_each_node,
    events_retention_holds_at_every_write,
    node_reports_are_what_was_written,
    a_round_of_reports_is_one_write,
}

/// A flush of more heartbeats than one statement carries (SQLite writes them 500 to a
/// statement): every node's row gets its own values, the down ones come back, and a
/// stale session's beat changes nothing.
fn a_large_flush_of_heartbeats_writes_each_node(backend: Backend) {
    with_store(backend, async |store| {
        const NODES: i64 = 1_203;
        for i in 0..NODES {
            store
                .insert_node(&join(&format!("n{i:04}"), "h", i, 1000))
                .await
                .expect("insert");
        }
        // Every 100th node swept down meanwhile.
        let alive: Vec<String> = (0..NODES)
            .filter(|i| i % 100 != 0)
            .map(|i| format!("n{i:04}"))
            .collect();
        assert_eq!(
            store
                .sweep_stale_nodes(5000, &alive)
                .await
                .expect("sweep")
                .len(),
            13
        );
        let rows: Vec<HeartbeatRow> = (0..NODES)
            .map(|i| HeartbeatRow {
                name: format!("n{i:04}"),
                // Node 7's session is not this one: its beat is stale.
                session_id: if i == 7 { 99 } else { i },
                last_seen_ms: 10_000 + i,
                load: Some(LoadRow {
                    cpu_percent: i as f64,
                    load1: 0.5,
                    load5: 0.25,
                    load15: 0.125,
                    memory_used_bytes: i,
                    disk_free_bytes: 2 * i,
                    instance_usage: format!(r#"[{{"app":"a","server":"s{i}"}}]"#),
                }),
            })
            .collect();
        let mut revived = store.write_heartbeats(&rows).await.expect("heartbeats");
        revived.sort();
        let want: Vec<String> = (0..NODES)
            .filter(|i| i % 100 == 0)
            .map(|i| format!("n{i:04}"))
            .collect();
        assert_eq!(revived, want);
        for node in store.list_nodes().await.expect("nodes") {
            let i: i64 = node.name[1..].parse().expect("number");
            if i == 7 {
                assert_eq!((node.last_seen_ms, &node.load), (1000, &None), "{node:?}");
                continue;
            }
            assert_eq!(node.state, NodeState::Up, "{node:?}");
            assert_eq!(node.last_seen_ms, 10_000 + i, "{node:?}");
            let load = node.load.expect("load");
            assert_eq!(
                (
                    load.cpu_percent,
                    load.memory_used_bytes,
                    load.disk_free_bytes
                ),
                (i as f64, i, 2 * i)
            );
            assert_eq!(
                load.instance_usage,
                format!(r#"[{{"app":"a","server":"s{i}"}}]"#)
            );
        }
    });
}

/// A node swept `down` while its heartbeats could not be written is `up` again when they
/// are; a heartbeat of a session that has ended since changes nothing.
fn heartbeats_bring_a_swept_node_back(backend: Backend) {
    with_store(backend, async |store| {
        store
            .insert_node(&join("node-a", "h1", 1, 1000))
            .await
            .expect("insert");
        store
            .insert_node(&join("node-b", "h2", 2, 1000))
            .await
            .expect("insert");
        // node-b has a session open on the sweeping replica: it is not swept.
        let swept = store
            .sweep_stale_nodes(5000, &["node-b".into()])
            .await
            .expect("sweep");
        assert_eq!(swept, ["node-a"]);
        let beat = |name: &str, session_id, last_seen_ms| HeartbeatRow {
            name: name.into(),
            session_id,
            last_seen_ms,
            load: None,
        };
        let revived = store
            .write_heartbeats(&[beat("node-a", 1, 9000), beat("node-b", 2, 9000)])
            .await
            .expect("heartbeats");
        assert_eq!(revived, ["node-a"], "only node-a was down");
        let a = store.get_node("node-a").await.expect("get").expect("a");
        assert_eq!((a.state, a.last_seen_ms), (NodeState::Up, 9000));

        // The session ends (at 9500); a heartbeat of it written late does not revive it.
        assert!(store.mark_node_down("node-a", 1, 9500).await.expect("down"));
        let revived = store
            .write_heartbeats(&[beat("node-a", 1, 9400)])
            .await
            .expect("late heartbeat");
        assert!(revived.is_empty());
        let a = store.get_node("node-a").await.expect("get").expect("a");
        assert_eq!((a.state, a.last_seen_ms), (NodeState::Down, 9500));
    });
}

fn event(n: i64) -> corral_registry::store::EventRow {
    corral_registry::store::EventRow {
        id: 0,
        at_ms: n,
        app: "demo".into(),
        server: "web".into(),
        node: "node-a".into(),
        from: "running".into(),
        to: "exited".into(),
        reason: format!("event {n}"),
        kind: "state".into(),
    }
}

/// However events arrive (one by one, in batches larger than the retention), the table
/// never holds more than the retention, and holds the newest ones.
fn events_retention_holds_at_every_write(backend: Backend) {
    with_store(backend, async |store| {
        let keep = 50;
        let mut n = 0;
        for batch in [1usize, 7, 1, 30, 120, 3, 64, 1, 1, 200] {
            let events: Vec<_> = (0..batch)
                .map(|_| {
                    n += 1;
                    event(n)
                })
                .collect();
            store.insert_events(&events, keep).await.expect("insert");
            let all = store
                .list_events(None, None, 0, 10_000)
                .await
                .expect("list");
            let want = n.min(keep);
            assert_eq!(all.len() as i64, want, "after event {n}");
            assert_eq!(all.last().map(|e| e.at_ms), Some(n), "the newest stays");
        }
        assert!(store.insert_events(&[], keep).await.is_ok());
    });
}

fn node_reports_are_what_was_written(backend: Backend) {
    use corral_registry::store::StatusReport;
    with_store(backend, async |store| {
        let spec = corral_registry::spec::parse(SPEC, "web.toml").expect("spec");
        store.apply_spec(&spec, 1000).await.expect("apply");
        let report = StatusReport {
            app: "demo".into(),
            server: "web".into(),
            state: "running".into(),
            pid: 42,
            restarts: 3,
            started_at_ms: 1500,
            version: "1.0.0".into(),
            install_version: "2.0.0".into(),
            install_state: "downloading".into(),
            install_percent: 35,
            health: "healthy".into(),
            ..StatusReport::default()
        };
        assert!(
            store
                .report_status("node-a", &report, 2000)
                .await
                .expect("report")
        );
        let rows = store.node_reports("node-a").await.expect("reports");
        assert_eq!(rows, [("demo".into(), "web".into(), report)]);
        assert!(store.node_reports("node-z").await.expect("none").is_empty());
    });
}

/// A round of reports: events in multi-row inserts (more than one statement's worth) with
/// the retention held, and statuses, each saying whether its instance is assigned there.
fn a_round_of_reports_is_one_write(backend: Backend) {
    use corral_registry::store::StatusReport;
    with_store(backend, async |store| {
        let spec = corral_registry::spec::parse(SPEC, "web.toml").expect("spec");
        store.apply_spec(&spec, 1000).await.expect("apply");
        let crashed = StatusReport {
            app: "demo".into(),
            server: "web".into(),
            state: "backoff".into(),
            restarts: 7,
            last_exit: "code 1".into(),
            last_error: "exited at start-up".into(),
            health: "no_check".into(),
            ..StatusReport::default()
        };
        let events: Vec<_> = (1..=250).map(event).collect();
        let keep = 200;
        let assigned = store
            .write_reports(
                &events,
                &[("node-a", &crashed, 2000), ("node-z", &crashed, 2000)],
                keep,
            )
            .await
            .expect("write");
        assert_eq!(assigned, [true, false], "node-z runs no demo.web");
        let all = store
            .list_events(None, None, 0, 10_000)
            .await
            .expect("list");
        assert_eq!(all.len() as i64, keep);
        assert_eq!(
            (all[0].at_ms, all.last().map(|e| e.at_ms)),
            (51, Some(250)),
            "the newest stay, in order"
        );
        let rows = store.node_reports("node-a").await.expect("reports");
        assert_eq!(rows, [("demo".into(), "web".into(), crashed)]);
        // A round with statuses only writes no event.
        let quiet = store.write_reports(&[], &[], keep).await.expect("empty");
        assert!(quiet.is_empty());
    });
}

backend_tests! {
    joins_at_once_each_record_their_replica,
}

/// Many nodes joining at once each record the replica holding their session, and a new
/// session of a node replaces its record. (On MySQL, a delete then an insert deadlocked
/// when many new names went in at the end of the index at once: 5,132 of 10,000 joins of
/// the `sessions` benchmark failed to record it.)
fn joins_at_once_each_record_their_replica(backend: Backend) {
    with_store(backend, async |store| {
        store
            .replica_seen("r1", "http://127.0.0.1:1", 1000)
            .await
            .expect("replica r1");
        store
            .replica_seen("r2", "http://127.0.0.1:2", 1000)
            .await
            .expect("replica r2");
        let joins: Vec<_> = (1..=300)
            .map(|i: i64| {
                let store = store.clone();
                tokio::spawn(async move {
                    let name = format!("node-{i:04}");
                    store.insert_node(&join(&name, "h1", i, 1000)).await?;
                    store.session_on(&name, i, "r1").await
                })
            })
            .collect();
        for (i, j) in joins.into_iter().enumerate() {
            j.await
                .expect("join task")
                .unwrap_or_else(|e| panic!("join {}: {e}", i + 1));
        }
        for i in 1..=300 {
            let place = store
                .session_place(&format!("node-{i:04}"), 500)
                .await
                .expect("place")
                .expect("recorded");
            assert_eq!(place.replica, "r1");
        }
        // node-0001 joins again, on r2.
        store
            .rejoin_node(&join("node-0001", "h1", 1001, 2000))
            .await
            .expect("rejoin");
        store
            .session_on("node-0001", 1001, "r2")
            .await
            .expect("session on r2");
        let place = store
            .session_place("node-0001", 500)
            .await
            .expect("place")
            .expect("recorded");
        assert_eq!(place.address, "http://127.0.0.1:2");
    });
}
