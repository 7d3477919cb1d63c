//! The admin CLI's usage: a flag value that cannot work exits 2 naming the flag; the
//! common options go before or after the subcommand; a registry that does not answer is
//! "cannot reach the registry at ADDR: …" (exit 1) from every subcommand; and no value
//! silently becomes a default.

use std::process::{Command, Output};
use std::time::Duration;

use corral_tests::exits::exits_within;
use corral_tests::packages::{release, write};
use corral_tests::{Agent, Backend, Registry, TestDb, bin, free_port, test_ips};
use serde_json::Value;

fn registry_cli(args: &[&str]) -> Output {
    Command::new(bin("registry"))
        .args(args)
        .env_remove("CORRAL_ADDR")
        .env_remove("CORRAL_TOKEN")
        .output()
        .expect("run registry")
}

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

/// `--addr` with a scheme or port that cannot work, from the flag or CORRAL_ADDR, and
/// other flag values that cannot work: exit 2 naming the flag and the value, before
/// anything is sent.
#[test]
fn bad_flag_values_are_usage_errors() {
    for (addr, why) in [
        ("ftp://x", "scheme \"ftp\""),
        ("http://127.0.0.1:99999", "port \"99999\""),
        ("http://127.0.0.1:0", "port \"0\""),
        ("127.0.0.1:17890", "no scheme"),
        ("http://127.0.0.1:17890/some/path", "no path"),
    ] {
        assert_exit(
            &registry_cli(&["node", "list", "--addr", addr]),
            2,
            &["--addr", addr, why],
        );
        let out = Command::new(bin("registry"))
            .args(["server", "list"])
            .env("CORRAL_ADDR", addr)
            .output()
            .expect("run registry");
        assert_exit(&out, 2, &["--addr", addr]);
    }
    for args in [
        &["server", "stop", "demo.x", "--node", ""][..],
        &["package", "list", "--server", ""],
        &["events", "--server", ""],
        &["rollback", "demo.x", "--to", ""],
        &["server", "expand", "demo.x", "--to", "node-a", "--from", ""],
    ] {
        assert_exit(&registry_cli(args), 2, &["must not be empty"]);
    }
    // A CORRAL_ADDR meant for the CLI does not stop the daemon: serve names its own flag.
    let out = Command::new(bin("registry"))
        .args(["serve", "--listen", "nonsense"])
        .env("CORRAL_ADDR", "ftp://x")
        .output()
        .expect("run registry");
    assert_exit(&out, 2, &["--listen", "nonsense"]);
    assert!(!stderr(&out).contains("ftp://x"), "{}", stderr(&out));
    // The admin options belong to the admin commands: not silently ignored elsewhere.
    assert_exit(
        &registry_cli(&["serve", "--addr", "http://127.0.0.1:1"]),
        2,
        &["--addr", "registry serve"],
    );
    assert_exit(
        &registry_cli(&["tls", "init", "/nonexistent", "--token", "t"]),
        2,
        &["--token", "registry tls"],
    );
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

/// `--addr`, `--token` and `-o` work before the subcommand, after it, and mixed.
#[test]
fn admin_options_go_before_or_after_the_subcommand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, registry) = start_registry(dir.path());
    let addr = registry.addr();
    for args in [
        vec!["--addr", &addr, "node", "list", "-o", "json"],
        vec!["-o", "json", "--addr", &addr, "node", "list"],
        vec!["node", "list", "-o", "json", "--addr", &addr],
        vec!["node", "--addr", &addr, "list", "--output", "json"],
        vec![
            "--addr", &addr, "--token", "unused", "server", "list", "-o", "json",
        ],
        vec!["--output=json", "events", "--addr", &addr, "--limit", "5"],
    ] {
        let out = registry_cli(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let json: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stderr(&out)));
        assert!(json.is_array(), "{args:?}: {json}");
    }
}

/// Every admin subcommand, pointed at a port nobody listens on, at the registry's HTTP
/// port (HTTP, not gRPC), or at a registry that goes away mid-stream, says "cannot reach
/// the registry at ADDR: …" and exits 1.
#[test]
fn every_subcommand_says_when_it_cannot_reach_the_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, mut registry) = start_registry(dir.path());
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        "app = \"demo\"\nserver = \"x\"\nnodes = [\"node-a\"]\ncommand = [\"true\"]\n",
    )
    .expect("write spec");
    let spec = spec.to_str().expect("utf8");
    let package = write(dir.path(), "p.tgz", &release("1.0.0", false));
    let package = package.to_str().expect("utf8");
    let commands: Vec<Vec<&str>> = vec![
        vec!["node", "list"],
        vec!["node", "show", "node-a"],
        vec!["node", "remove", "node-a"],
        vec!["apply", "-f", spec],
        vec!["apply", "-f", spec, "--dry-run"],
        vec!["server", "list"],
        vec!["server", "status", "demo.x"],
        vec!["server", "start", "demo.x"],
        vec!["server", "stop", "demo.x"],
        vec!["server", "restart", "demo.x"],
        vec!["server", "undeploy", "demo.x"],
        vec!["server", "expand", "demo.x", "--to", "node-b"],
        vec!["server", "restart", "demo.x", "--wait"],
        vec!["server", "history", "demo.x"],
        vec!["server", "diff", "demo.x", "1"],
        vec!["server", "revert", "demo.x", "1", "--dry-run"],
        vec![
            "package",
            "upload",
            package,
            "--server",
            "demo.x",
            "--version",
            "1.0.0",
        ],
        vec!["package", "list"],
        vec!["package", "remove", "demo.x", "1.0.0"],
        vec!["patch", "demo.x", "--version", "1.0.0"],
        vec!["rollback", "demo.x"],
        vec!["rollout", "list"],
        vec!["rollout", "status", "1"],
        vec!["endpoints", "demo.x.Main"],
        vec!["events"],
        vec!["events", "--follow"],
    ];
    let closed = format!("http://127.0.0.1:{}", free_port());
    let http = format!("http://127.0.0.1:{}", registry.http_port);
    for addr in [&closed, &http] {
        for cmd in &commands {
            let out = registry_cli(&[&cmd[..], &["--addr", addr]].concat());
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{cmd:?} at {addr}: {err}");
            assert!(
                err.starts_with(&format!("registry: cannot reach the registry at {addr}: ")),
                "{cmd:?} at {addr}: {err}"
            );
            assert!(!err.contains("h2 protocol error"), "{cmd:?}: {err}");
        }
    }
    let out = registry_cli(&["node", "list", "--addr", &http]);
    assert!(stderr(&out).contains("not gRPC"), "{}", stderr(&out));

    // A follow whose registry goes away ends with the same message, not silently with 0.
    let addr = registry.addr();
    let mut follow = Command::new(bin("registry"));
    follow
        .args(["events", "--follow", "--addr", &addr])
        .env_remove("CORRAL_TOKEN");
    let follower = std::thread::spawn(move || {
        exits_within("events --follow", follow, Duration::from_secs(60))
    });
    // The follower is connected once the registry logs its call; then the registry goes.
    corral_tests::wait_until("the follower to connect", Duration::from_secs(20), || {
        let metrics = corral_tests::http_get(
            std::net::SocketAddr::from(([127, 0, 0, 1], registry.http_port)),
            "/metrics",
        )?;
        if metrics.contains("FollowEvents") {
            Ok(())
        } else {
            Err("no FollowEvents call yet".to_string())
        }
    });
    registry.kill();
    let out = follower.join().expect("follower");
    assert_exit(
        &out,
        1,
        &[&format!("cannot reach the registry at {addr}: ")],
    );
}

/// A peer that accepts the connection and never answers: the command gives up within
/// seconds, saying so, instead of hanging.
#[test]
fn a_registry_that_never_answers_is_given_up_on() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("local addr"));
    let mut cmd = Command::new(bin("registry"));
    cmd.args(["node", "list", "--addr", &addr])
        .env_remove("CORRAL_TOKEN");
    let out = exits_within("node list at a silent peer", cmd, Duration::from_secs(30));
    drop(listener);
    assert_exit(
        &out,
        1,
        &[
            &format!("cannot reach the registry at {addr}: "),
            "did not answer",
        ],
    );
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
