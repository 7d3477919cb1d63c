//! No value silently becomes a default: an explicit 0 is honoured or refused.

use std::process::{Command, Output};
use std::time::Duration;

use corral_tests::exits::exits_within;
use corral_tests::packages::{release, write};
use corral_tests::{Agent, Backend, Registry, TestDb, bin, test_ips};
use serde_json::Value;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_exit(out: &Output, code: i32, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

fn start_registry(dir: &std::path::Path) -> (TestDb, Registry) {
    let db = TestDb::new(Backend::Sqlite, dir).expect("sqlite");
    let registry = Registry::start(dir, &db.url, &[]);
    (db, registry)
}

/// Values the registry checks, before any lookup: a batch of 0 or a deadline of 0s
/// cannot work and are refused (exit 2), not replaced by a default.
#[test]
fn zero_values_that_cannot_work_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, registry) = start_registry(dir.path());
    for (args, needles) in [
        (
            &["patch", "demo.x", "--version", "1.0.0", "--batch", "0"][..],
            &["batch (--batch) is 0"][..],
        ),
        (
            &["patch", "demo.x", "--version", "1.0.0", "--deadline", "0s"],
            &["deadline (--deadline) is 0s"],
        ),
        (
            &["rollback", "demo.x", "--batch", "0"],
            &["batch (--batch) is 0"],
        ),
        (&["events", "--limit", "20000"], &["limit 20000", "10,000"]),
    ] {
        assert_exit(&registry.cli(args), 2, needles);
    }
}

/// Zero is not a default in disguise for the daemons either: settings that cannot be 0
/// are refused at start-up (exit 2, naming the key), not taken as 1 or left to hang.
#[test]
fn daemons_refuse_zero_where_it_cannot_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "locator = \"http://127.0.0.1:1\"\nnode = \"zero\"\nkeep_releases = 0\n",
    )
    .expect("write");
    let mut agent = Command::new(bin("agent"));
    agent
        .args([
            "run",
            "--config",
            config.to_str().expect("utf8"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env_remove("CORRAL_LOCATOR");
    let out = exits_within(
        "agent with keep_releases = 0",
        agent,
        Duration::from_secs(10),
    );
    assert_exit(&out, 2, &["keep_releases must be greater than zero"]);

    let db = format!("sqlite://{}", dir.path().join("r.db").display());
    let mut registry = Command::new(bin("registry"));
    registry.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--db",
        &db,
        "--download-rate",
        "0",
    ]);
    let out = exits_within(
        "registry --download-rate 0",
        registry,
        Duration::from_secs(10),
    );
    assert_exit(&out, 2, &["download_rate", "greater than zero"]);
}

/// `patch --min-healthy 0s` means 0 (running is enough), not the 5 s default; `events
/// --limit 0` means no past events, not 100.
#[test]
fn an_explicit_zero_is_honoured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, registry) = start_registry(dir.path());
    let ip = test_ips(1).remove(0);
    let _agent = Agent::start(dir.path(), &registry.addr(), "zero-a", &ip);
    registry.wait_node("zero-a", "up", Duration::from_secs(20), |n| {
        n["state"] == "up"
    });
    for v in ["1.0.0", "2.0.0"] {
        let path = write(dir.path(), &format!("zero-{v}.tgz"), &release(v, false));
        let out = registry.cli(&[
            "package",
            "upload",
            path.to_str().expect("utf8"),
            "--server",
            "demo.zero",
            "--version",
            v,
        ]);
        assert!(out.status.success(), "upload {v}: {}", stderr(&out));
    }
    registry.apply(
        "app = \"demo\"\nserver = \"zero\"\nnodes = [\"zero-a\"]\ncommand = [\"bin/server\"]\n\
         package = \"1.0.0\"\n[stop]\ntimeout = \"2s\"\n",
    );
    registry.wait_instance(
        "demo.zero",
        "zero-a",
        "running 1.0.0",
        Duration::from_secs(30),
        |i| i["state"] == "running" && i["version"] == "1.0.0",
    );

    let out = registry.cli(&[
        "patch",
        "demo.zero",
        "--version",
        "2.0.0",
        "--min-healthy",
        "0s",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "patch: {}", stderr(&out));
    let rollout: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(rollout["state"], "succeeded", "{rollout}");
    assert_eq!(rollout["min_healthy_ms"], 0, "{rollout}");
    assert_eq!(
        rollout["deadline_ms"], 60_000,
        "unset is the default: {rollout}"
    );
    assert_eq!(rollout["batch"], 1, "unset is the default: {rollout}");

    let all = registry.json(&["events", "--limit", "1000"]);
    assert!(
        all.as_array().is_some_and(|a| a.len() > 1),
        "the patch made events: {all}"
    );
    assert_eq!(
        registry.json(&["events", "--limit", "0"]),
        serde_json::json!([])
    );
    assert_eq!(
        registry
            .json(&["events", "--limit", "1"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}
