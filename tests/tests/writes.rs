//! The registry writes only what changed: a status report that changes nothing writes no
//! change-feed row and recomputes nothing, install progress updates the instance row
//! only, a replica does not apply its own change-feed rows again, and the events table
//! never holds more than its retention.

use std::net::SocketAddr;
use std::time::Duration;

use corral_registry::store::{Action, Store, now_ms};
use corral_tests::packages::{Entry, tar_gz, write};
use corral_tests::{Agent, Backend, Registry, TestDb, http_get, test_ips, wait_until};

const S: Duration = Duration::from_secs(1);

/// A registry on SQLite, its agents, and a handle on the same database for the test to
/// read (and write the odd change-feed row) while the registry runs.
struct Fleet {
    registry: Registry,
    agents: Vec<Agent>,
    store: Store,
    rt: tokio::runtime::Runtime,
    _db: TestDb,
    dir: tempfile::TempDir,
}

fn fleet(nodes: &[&str], registry_args: &[&str], config: &str) -> Fleet {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let config_path = dir.path().join("registry.toml");
    std::fs::write(&config_path, config).expect("write config");
    let args = [
        &["--config", config_path.to_str().expect("utf8")][..],
        registry_args,
    ]
    .concat();
    let registry = Registry::start(dir.path(), &db.url, &args);
    let ips = test_ips(nodes.len());
    let agents: Vec<Agent> = nodes
        .iter()
        .zip(&ips)
        .map(|(n, ip)| Agent::start(dir.path(), &registry.addr(), n, ip))
        .collect();
    for n in nodes {
        registry.wait_node(n, "up", 20 * S, |v| v["state"] == "up");
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = rt.block_on(Store::open(&db.url)).expect("open the store");
    Fleet {
        registry,
        agents,
        store,
        rt,
        _db: db,
        dir,
    }
}

impl Fleet {
    fn changes(&self) -> Vec<corral_registry::store::Change> {
        self.rt
            .block_on(self.store.changes_after(0))
            .expect("read the change feed")
    }

    /// Waits until no report or event waits to be written (or is being written).
    fn written(&self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.registry.http_port));
        wait_until("reports and events written", 10 * S, || {
            let body = http_get(addr, "/health")?;
            let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            let waiting = &v["waiting"];
            if waiting["statuses"] == 0 && waiting["events"] == 0 {
                Ok(())
            } else {
                Err(body)
            }
        });
    }

    /// A counter of the registry's `/metrics`.
    fn counter(&self, name: &str) -> u64 {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.registry.http_port));
        let text = http_get(addr, "/metrics").expect("metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}")) as u64
    }
}

fn sleeper(server: &str, node: &str) -> String {
    format!(
        "app = \"demo\"\nserver = \"{server}\"\nnodes = [\"{node}\"]\ncommand = [\"sleep\", \"1000\"]\n"
    )
}

/// Install progress (a report every 5 %) updates the instance row, which rollouts read,
/// but is not a discovery change: no change-feed row, no recomputation.
#[test]
fn install_progress_updates_the_row_only() {
    // Packages travel in 1 MiB chunks: 12 of them make a report every ~8 %.
    let f = fleet(&["node-a"], &["--download-rate", "2 MiB"], "");
    let mut noise = vec![0u8; 12 << 20];
    rand::fill(&mut noise[..]);
    let package = tar_gz(&[
        Entry::Dir("bin"),
        Entry::File("bin/server", b"#!/bin/sh\nexec sleep 1000\n", 0o755),
        Entry::File("data.bin", &noise, 0o644),
    ]);
    let path = write(f.dir.path(), "big.tgz", &package);
    let out = f.registry.cli(&[
        "package",
        "upload",
        path.to_str().expect("utf8"),
        "--server",
        "demo.big",
        "--version",
        "1.0.0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.registry.apply(
        "app = \"demo\"\nserver = \"big\"\nnodes = [\"node-a\"]\ncommand = [\"bin/server\"]\npackage = \"1.0.0\"\n",
    );
    let progress = || -> Result<(String, i64), String> {
        let rows =
            f.rt.block_on(f.store.instances_of("demo", "big"))
                .map_err(|e| e.to_string())?;
        let i = rows.first().ok_or("no instance")?;
        Ok((i.install_state.clone(), i.install_percent))
    };
    let (_, started) = wait_until("the download under way", 30 * S, || match progress()? {
        (state, p) if state == "downloading" && p > 0 && p <= 40 => Ok((state, p)),
        other => Err(format!("{other:?}")),
    });
    // The agent batches reports: the change to `downloading` (which discovery depends on)
    // and the first progress can be one report, whose change-feed row follows its write.
    // Counting starts at the next progress, a later round.
    let (_, first) = wait_until("the download going on", 30 * S, || match progress()? {
        (state, p) if state == "downloading" && p > started && p <= 60 => Ok((state, p)),
        other => Err(format!("{other:?}")),
    });
    let changes_at_start = f.changes().len();
    let recomputes_at_start = f.counter("corral_registry_discovery_recomputes_total");
    let mut seen = vec![first];
    wait_until("the download nearly done", 60 * S, || {
        let (state, p) = progress()?;
        if state == "downloading" && seen.last() != Some(&p) {
            seen.push(p);
        }
        if state == "downloading" && p >= 90 {
            Ok(())
        } else {
            Err(format!("{state} {p}"))
        }
    });
    let changes = f.changes().len() - changes_at_start;
    let recomputes = f.counter("corral_registry_discovery_recomputes_total") - recomputes_at_start;
    assert!(
        seen.len() >= 4,
        "the instance row follows the progress: {seen:?}"
    );
    assert!(
        changes == 0 && recomputes <= 1,
        "progress {seen:?} appended {changes} change-feed rows and recomputed discovery {recomputes} times"
    );
    f.registry
        .wait_instance("demo.big", "node-a", "running", 60 * S, |i| {
            i["state"] == "running"
        });
}

/// An agent that restarts sends every status again; what did not change writes nothing:
/// the change feed gets the node's down and up, no row per instance.
#[test]
fn statuses_sent_again_write_no_change() {
    let mut f = fleet(&["node-a"], &[], "");
    let servers = ["s1", "s2", "s3", "s4"];
    for s in servers {
        f.registry.apply(&sleeper(s, "node-a"));
    }
    for s in servers {
        f.registry
            .wait_instance(&format!("demo.{s}"), "node-a", "running", 20 * S, |i| {
                i["state"] == "running"
            });
    }
    let node = f.registry.node("node-a").expect("node-a");
    f.written();
    let before = f.changes().len();
    f.agents[0].restart();
    let back = f
        .registry
        .wait_node("node-a", "a new session", 20 * S, |n| {
            n["state"] == "up" && n["connected_at_ms"].as_i64() > node["connected_at_ms"].as_i64()
        });
    // The agent sends its statuses before anything else; a heartbeat written after the
    // session opened shows they have been handled.
    f.registry
        .wait_node("node-a", "a heartbeat of the new session", 20 * S, |n| {
            n["last_seen_ms"].as_i64() > back["connected_at_ms"].as_i64()
        });
    f.written();
    let rows = f.changes().len() - before;
    assert!(
        rows <= 2,
        "{rows} change-feed rows for a node down and up again with {} unchanged instances",
        servers.len()
    );
    for s in servers {
        let i = f
            .registry
            .instance(&format!("demo.{s}"), "node-a")
            .expect("instance");
        assert_eq!(i["state"], "running", "{i}");
    }
}

/// A replica does not apply again the change-feed rows it wrote itself: an apply sends
/// the node's desired state once, not once more when the feed comes round. Another
/// writer's row (here the test's) is followed as before, and serves as a barrier: rows
/// are followed in order, so once it is handled, the apply's row was too.
#[test]
fn a_replica_skips_its_own_changes() {
    let f = fleet(&["node-a", "node-b"], &[], "");
    f.registry.apply(&sleeper("fence", "node-b"));
    let fence = f
        .registry
        .wait_instance("demo.fence", "node-b", "running", 20 * S, |i| {
            i["state"] == "running"
        });
    let sent_before = f.counter("corral_registry_desired_states_sent_total");

    f.registry.apply(&sleeper("subject", "node-a"));
    f.registry
        .wait_instance("demo.subject", "node-a", "running", 20 * S, |i| {
            i["state"] == "running"
        });
    // The barrier: a restart of the fence written by "another replica".
    f.rt.block_on(async {
        f.store
            .control("demo", "fence", Some("node-b"), Action::Restart)
            .await
            .expect("restart the fence");
        f.store
            .record_changes(&["node-b".into()], "desired", "another-replica", now_ms())
            .await
            .expect("record the change");
    });
    f.registry
        .wait_instance("demo.fence", "node-b", "restarted", 20 * S, |i| {
            i["state"] == "running" && i["pid"] != fence["pid"]
        });
    let sent = f.counter("corral_registry_desired_states_sent_total") - sent_before;
    assert_eq!(
        sent, 2,
        "one desired state for the apply (node-a), one for the other replica's change (node-b)"
    );
}

/// Services that crash and restart many times a second make a burst of events; the
/// table never holds more than the retention (within 10 %).
#[test]
fn events_retention_holds_under_a_burst() {
    let retention = 100;
    let f = fleet(
        &["node-a"],
        &[],
        &format!("event_retention = {retention}\n"),
    );
    for s in ["c1", "c2", "c3", "c4"] {
        f.registry.apply(&format!(
            "app = \"demo\"\nserver = \"{s}\"\nnodes = [\"node-a\"]\ncommand = [\"sh\", \"-c\", \"sleep 0.02\"]\n\
             [restart]\npolicy = \"always\"\nmin_uptime = \"10ms\"\ninitial_delay = \"10ms\"\nmax_delay = \"10ms\"\n"
        ));
    }
    let mut most = 0;
    wait_until("ten times the retention in events", 120 * S, || {
        let events =
            f.rt.block_on(f.store.list_events(None, None, 0, 100_000))
                .map_err(|e| e.to_string())?;
        most = most.max(events.len());
        assert!(
            events.len() <= retention * 11 / 10,
            "{} events in the table; the retention is {retention}",
            events.len()
        );
        let last = events.last().map_or(0, |e| e.id);
        if last >= 10 * retention as i64 {
            Ok(())
        } else {
            Err(format!("{} events, the last is #{last}", events.len()))
        }
    });
    eprintln!("at most {most} events in the table (retention {retention})");
    assert_eq!(f.counter("corral_registry_events_dropped_total"), 0);
}
