//! Running services: restart on crash, backoff and crash loops, policies, clean stops of
//! whole process groups, agent and registry restarts, spawn failures, spec checking.

use std::path::Path;
use std::time::Duration;

use corral_tests::{Agent, Backend, Registry, TestDb, alive, processes_with, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const S: Duration = Duration::from_secs(1);

struct Fleet {
    registry: Registry,
    agent: Agent,
    _db: TestDb,
    dir: tempfile::TempDir,
}

fn fleet_with(agent_args: &[&str]) -> Fleet {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let registry = Registry::start(dir.path(), &db.url, &[]);
    let data = dir.path().join("agent-node-a");
    let agent = Agent::start_with_args(&registry.addr(), "node-a", "127.0.0.2", &data, agent_args);
    registry.wait_node("node-a", "node-a up", 20 * S, |n| n["state"] == "up");
    Fleet {
        registry,
        agent,
        _db: db,
        dir,
    }
}

fn fleet() -> Fleet {
    fleet_with(&[])
}

/// A spec for `demo.NAME` on node-a; `extra` is appended as more TOML.
fn spec(name: &str, command: &[&str], extra: &str) -> String {
    let command: Vec<String> = command.iter().map(|c| format!("{c:?}")).collect();
    format!(
        "app = \"demo\"\nserver = \"{name}\"\nnodes = [\"node-a\"]\ncommand = [{}]\n{extra}",
        command.join(", ")
    )
}

fn pid_of(i: &Value) -> u32 {
    i["pid"].as_u64().unwrap_or(0) as u32
}

fn running(i: &Value) -> bool {
    i["state"] == "running" && pid_of(i) != 0
}

fn sigkill(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill");
}

/// A child killed with SIGKILL is restarted at once (no backoff: its run was longer
/// than min_uptime), with the exit reported.
#[test]
fn crash_then_immediate_restart() {
    let f = fleet();
    f.registry.apply(&spec(
        "sleeper",
        &["sleep", "1000"],
        "[restart]\nmin_uptime = \"1s\"\n",
    ));
    let first = f
        .registry
        .wait_instance("demo.sleeper", "node-a", "running", 20 * S, running);
    assert_eq!(first["restarts"], 0);
    // Outlive min_uptime, so the crash is not a quick failure.
    std::thread::sleep(Duration::from_millis(1100));
    sigkill(pid_of(&first));
    let second = f
        .registry
        .wait_instance("demo.sleeper", "node-a", "restarted", 20 * S, |i| {
            running(i) && pid_of(i) != pid_of(&first)
        });
    assert_eq!(second["restarts"], 1);
    assert_eq!(second["last_exit"], "signal SIGKILL");
    let events = f.registry.events("demo.sleeper");
    let restart = events
        .iter()
        .find(|e| {
            e["from"] == "running" && e["reason"].as_str().is_some_and(|r| r.contains("SIGKILL"))
        })
        .expect("an event for the crash");
    assert_eq!(
        restart["to"], "starting",
        "restarted directly, without backoff: {events:?}"
    );
}

/// A child that keeps failing at once backs off with growing delays and ends up
/// crash-looping (and is still retried).
#[test]
fn crash_loop_backs_off_then_crash_loops() {
    let f = fleet();
    let extra = "[restart]\nmin_uptime = \"5s\"\ninitial_delay = \"300ms\"\nmax_delay = \"3s\"\nmax_quick_failures = 5\n";
    f.registry
        .apply(&spec("crasher", &["sh", "-c", "exit 3"], extra));
    let i = f
        .registry
        .wait_instance("demo.crasher", "node-a", "crash-looping", 30 * S, |i| {
            i["state"] == "crash-looping"
        });
    assert_eq!(i["last_exit"], "code 3");
    let events = f.registry.events("demo.crasher");
    // The delays the agent chose, from "next try in ..." in the backoff events.
    let delays: Vec<Duration> = events
        .iter()
        .filter(|e| e["to"] == "backoff")
        .filter_map(|e| {
            humantime::parse_duration(e["reason"].as_str()?.split("next try in ").nth(1)?).ok()
        })
        .collect();
    assert_eq!(
        delays.len(),
        3,
        "2nd, 3rd and 4th quick failures back off: {events:?}"
    );
    assert!(
        delays.windows(2).all(|w| w[1] > w[0]),
        "delays grow: {delays:?}"
    );
    // The starts after each backoff really waited that long.
    let starts: Vec<i64> = events
        .iter()
        .filter(|e| e["from"] == "backoff")
        .map(|e| e["at_ms"].as_i64().unwrap_or(0))
        .collect();
    let backoffs: Vec<i64> = events
        .iter()
        .filter(|e| e["to"] == "backoff")
        .map(|e| e["at_ms"].as_i64().unwrap_or(0))
        .collect();
    for ((start, entered), delay) in starts.iter().zip(&backoffs).zip(&delays) {
        assert!(
            start - entered >= delay.as_millis() as i64 - 5,
            "waited {}ms for a {delay:?} backoff",
            start - entered
        );
    }
    // Still retried while crash-looping.
    let restarts = i["restarts"].as_u64().unwrap_or(0);
    f.registry
        .wait_instance("demo.crasher", "node-a", "retried", 20 * S, |i| {
            i["restarts"].as_u64().unwrap_or(0) > restarts
        });
}

/// `never` leaves a failed child exited; `on-failure` leaves a clean exit and restarts a
/// failure.
#[test]
fn never_and_on_failure_policies() {
    let f = fleet();
    f.registry.apply(&spec(
        "never",
        &["sh", "-c", "exit 1"],
        "[restart]\npolicy = \"never\"\n",
    ));
    f.registry.apply(&spec(
        "clean",
        &["sh", "-c", "exit 0"],
        "[restart]\npolicy = \"on-failure\"\n",
    ));
    f.registry.apply(&spec(
        "failing",
        &["sh", "-c", "exit 2"],
        "[restart]\npolicy = \"on-failure\"\ninitial_delay = \"50ms\"\n",
    ));
    let never = f
        .registry
        .wait_instance("demo.never", "node-a", "exited", 20 * S, |i| {
            i["state"] == "exited"
        });
    assert_eq!(
        (never["last_exit"].as_str(), never["restarts"].as_u64()),
        (Some("code 1"), Some(0))
    );
    let clean = f
        .registry
        .wait_instance("demo.clean", "node-a", "exited", 20 * S, |i| {
            i["state"] == "exited"
        });
    assert_eq!(
        (clean["last_exit"].as_str(), clean["restarts"].as_u64()),
        (Some("code 0"), Some(0))
    );
    f.registry
        .wait_instance("demo.failing", "node-a", "restarted", 20 * S, |i| {
            i["restarts"].as_u64() >= Some(2)
        });
    // Nothing restarts the exited ones later either: by the time the agent has restarted
    // the failing one twice more (after 100 and 200 ms of backoff), a restart of the one
    // that exited (due after at most its 100 ms initial delay) would have shown.
    f.registry.wait_instance(
        "demo.failing",
        "node-a",
        "restarted twice more",
        20 * S,
        |i| i["restarts"].as_u64() >= Some(4),
    );
    assert_eq!(
        f.registry.instance("demo.never", "node-a").expect("never")["restarts"],
        0
    );
}

/// Deploys `demo.probe` and waits until it runs: a barrier after which the agent has
/// handled every desired state sent before it.
fn deployed_after(registry: &Registry) {
    registry.apply(&spec("probe", &["sleep", "1000"], ""));
    registry.wait_instance("demo.probe", "node-a", "running", 20 * S, running);
}

fn read_pid(path: &Path) -> Result<u32, String> {
    std::fs::read_to_string(path)
        .map_err(|e| e.to_string())?
        .trim()
        .parse()
        .map_err(|e| format!("{e}"))
}

/// Stopping a child that ignores SIGTERM and has grandchildren: after the timeout the
/// whole group is killed; nothing of it is left.
#[test]
fn stop_kills_the_whole_group_after_the_timeout() {
    let f = fleet();
    let script = "trap '' TERM; sleep 1000 & echo $! > gc1; sleep 1000 & echo $! > gc2; wait";
    f.registry.apply(&spec(
        "stubborn",
        &["sh", "-c", script, "corral-test-stubborn"],
        "[stop]\ntimeout = \"1s\"\n",
    ));
    let i = f
        .registry
        .wait_instance("demo.stubborn", "node-a", "running", 20 * S, running);
    let dir = f.agent.instance_dir("demo.stubborn");
    let grandchildren = wait_until("grandchildren started", 20 * S, || {
        Ok::<_, String>([read_pid(&dir.join("gc1"))?, read_pid(&dir.join("gc2"))?])
    });
    let mut group = vec![pid_of(&i)];
    group.extend(grandchildren);
    assert!(group.iter().all(|p| alive(*p)));

    let out = f.registry.cli(&["server", "stop", "demo.stubborn"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.registry
        .wait_instance("demo.stubborn", "node-a", "stopped", 20 * S, |i| {
            i["state"] == "stopped"
        });
    for pid in &group {
        assert!(!alive(*pid), "process {pid} of the group survived the stop");
    }
    assert!(processes_with("corral-test-stubborn").is_empty());
    let events = f.registry.events("demo.stubborn");
    assert!(
        events
            .iter()
            .any(|e| e["reason"].as_str().is_some_and(|r| r.contains("SIGKILL"))),
        "the stop needed SIGKILL: {events:?}"
    );
    // Started again on request.
    f.registry.cli(&["server", "start", "demo.stubborn"]);
    f.registry
        .wait_instance("demo.stubborn", "node-a", "running again", 20 * S, running);
}

/// SIGKILL the agent and start it again: the child keeps its pid, is not restarted and
/// runs exactly once. A child that died meanwhile is restarted and its exit reported.
#[test]
fn agent_restart_adopts_children() {
    let mut f = fleet();
    let marker = "corral-test-adopt";
    f.registry.apply(&spec(
        "kept",
        &["sh", "-c", "while :; do sleep 1; done", marker],
        "",
    ));
    f.registry.apply(&spec(
        "lost",
        &["sleep", "1000"],
        "[restart]\nmin_uptime = \"1s\"\n",
    ));
    let kept = f
        .registry
        .wait_instance("demo.kept", "node-a", "running", 20 * S, running);
    let lost = f
        .registry
        .wait_instance("demo.lost", "node-a", "running", 20 * S, running);
    let before = f.registry.node("node-a").expect("node-a");

    f.agent.kill();
    sigkill(pid_of(&lost));
    assert!(alive(pid_of(&kept)), "services outlive the agent");
    f.agent.restart();
    f.registry
        .wait_node("node-a", "node-a back on a new session", 20 * S, |n| {
            n["state"] == "up" && n["connected_at_ms"].as_i64() > before["connected_at_ms"].as_i64()
        });
    let relost = f
        .registry
        .wait_instance("demo.lost", "node-a", "restarted", 20 * S, |i| {
            running(i) && pid_of(i) != pid_of(&lost)
        });
    assert_eq!(relost["restarts"], 1);
    let events = f.registry.events("demo.lost");
    assert!(
        events.iter().any(|e| e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("while the agent was away"))),
        "{events:?}"
    );

    let after = f.registry.instance("demo.kept", "node-a").expect("kept");
    assert_eq!(pid_of(&after), pid_of(&kept), "adopted, not restarted");
    assert_eq!(after["restarts"], 0);
    assert_eq!(after["state"], "running");
    assert_eq!(
        processes_with(marker),
        vec![pid_of(&kept)],
        "exactly one copy"
    );

    // The adopted child is still supervised: a crash is noticed and restarted.
    sigkill(pid_of(&kept));
    f.registry.wait_instance(
        "demo.kept",
        "node-a",
        "restarted after adoption",
        20 * S,
        |i| running(i) && pid_of(i) != pid_of(&kept),
    );
    assert_eq!(processes_with(marker).len(), 1);
}

/// A registry restart restarts no service; a restart request happens exactly once, even
/// across an agent restart.
#[test]
fn registry_restart_and_restart_exactly_once() {
    let mut f = fleet();
    f.registry.apply(&spec("steady", &["sleep", "1000"], ""));
    let first = f
        .registry
        .wait_instance("demo.steady", "node-a", "running", 20 * S, running);
    let before = f.registry.node("node-a").expect("node-a");
    f.registry.restart();
    f.registry
        .wait_node("node-a", "node-a back on a new session", 20 * S, |n| {
            n["state"] == "up" && n["connected_at_ms"].as_i64() > before["connected_at_ms"].as_i64()
        });
    let after = f
        .registry
        .wait_instance("demo.steady", "node-a", "reported again", 20 * S, |i| {
            i["reported_at_ms"].as_i64() >= before["connected_at_ms"].as_i64()
        });
    assert_eq!(
        (pid_of(&after), after["restarts"].as_u64()),
        (pid_of(&first), Some(0)),
        "nothing restarted"
    );

    let out = f.registry.cli(&["server", "restart", "demo.steady"]);
    assert!(out.status.success());
    let restarted = f
        .registry
        .wait_instance("demo.steady", "node-a", "restarted", 20 * S, |i| {
            running(i) && pid_of(i) != pid_of(&first)
        });
    assert_eq!(restarted["restarts"], 1);
    // Replaying the desired state (a new session) must not restart it again.
    let node = f.registry.node("node-a").expect("node-a");
    f.agent.kill();
    f.agent.restart();
    f.registry.wait_node("node-a", "node-a back", 20 * S, |n| {
        n["state"] == "up" && n["connected_at_ms"].as_i64() > node["connected_at_ms"].as_i64()
    });
    // The agent handles desired state in order: once a server deployed after the replay
    // runs, the replay has been handled.
    deployed_after(&f.registry);
    let last = f
        .registry
        .instance("demo.steady", "node-a")
        .expect("steady");
    assert_eq!(
        (pid_of(&last), last["restarts"].as_u64()),
        (pid_of(&restarted), Some(1))
    );
}

/// A missing binary, a file without execute permission and an unknown user put the
/// instance in `failed` with the OS error; the agent and its other instances carry on.
#[test]
fn spawn_failures_are_reported() {
    let f = fleet();
    let noexec = f.dir.path().join("not-executable");
    std::fs::write(&noexec, "#!/bin/sh\n").expect("write");
    f.registry.apply(&spec("healthy", &["sleep", "1000"], ""));
    f.registry
        .apply(&spec("missing", &["/nonexistent/corral-test-binary"], ""));
    f.registry
        .apply(&spec("noexec", &[noexec.to_str().expect("utf8")], ""));
    f.registry.apply(&spec(
        "nobody-here",
        &["sleep", "1000"],
        "user = \"corral-no-such-user\"\n",
    ));
    let failed = |name: &str, needle: &str| {
        let i = f
            .registry
            .wait_instance(name, "node-a", "failed", 20 * S, |i| i["state"] == "failed");
        let err = i["last_error"].as_str().unwrap_or_default().to_string();
        assert!(err.contains(needle), "{name}: {err}");
    };
    failed("demo.missing", "No such file or directory");
    failed("demo.noexec", "Permission denied");
    failed("demo.nobody-here", "unknown user \"corral-no-such-user\"");
    f.registry
        .wait_instance("demo.healthy", "node-a", "running", 20 * S, running);
    assert_eq!(f.registry.node("node-a").expect("node")["state"], "up");
}

/// The environment and log files a child gets.
#[test]
fn children_get_their_environment_and_log_files() {
    let f = fleet();
    let extra = "env = { GREETING = \"hi\" }\n[[adapters]]\nname = \"p2p\"\nport = 30303\n";
    let script = "echo \"$CORRAL_APP $CORRAL_SERVER $CORRAL_NODE $CORRAL_NODE_IP $CORRAL_PORT_P2P $GREETING $PWD\"; echo oops >&2; exec sleep 1000";
    f.registry.apply(&spec("env", &["sh", "-c", script], extra));
    let i = f
        .registry
        .wait_instance("demo.env", "node-a", "running", 20 * S, running);
    corral_tests::assert_service_process(pid_of(&i));
    let dir = f.agent.instance_dir("demo.env");
    let stdout = wait_until("stdout written", 20 * S, || {
        let s = std::fs::read_to_string(dir.join("logs/stdout.log")).map_err(|e| e.to_string())?;
        if s.is_empty() {
            Err("empty".into())
        } else {
            Ok(s)
        }
    });
    assert_eq!(
        stdout.trim(),
        format!("demo env node-a 127.0.0.2 30303 hi {}", dir.display())
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("logs/stderr.log")).expect("stderr"),
        "oops\n"
    );
    for sub in ["conf", "logs", "data"] {
        assert!(dir.join(sub).is_dir(), "{sub}/ exists");
    }
}

/// `--dry-run` and a rejected spec change nothing.
#[test]
fn dry_run_and_rejected_specs_change_nothing() {
    let f = fleet();
    let out = f
        .registry
        .try_apply(&spec("dry", &["sleep", "1000"], ""), &["--dry-run"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("would create server demo.dry"));
    assert_eq!(f.registry.json(&["server", "list"]), serde_json::json!([]));

    let good = spec("svc", &["sleep", "1000"], "");
    f.registry.apply(&good);
    let before = f
        .registry
        .wait_instance("demo.svc", "node-a", "running", 20 * S, running);
    let bad = format!("{good}state = \"paused\"\n[restart]\npolicy = \"sometimes\"\n");
    let out = f.registry.try_apply(&bad, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 problems") && err.contains("state:") && err.contains("restart.policy:"),
        "{err}"
    );
    deployed_after(&f.registry);
    let after = f.registry.instance("demo.svc", "node-a").expect("svc");
    assert_eq!(
        (pid_of(&after), after["restarts"].as_u64()),
        (pid_of(&before), Some(0))
    );
    // An unchanged spec applied again changes nothing either.
    let out = f.registry.apply(&good);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no change"));
}

/// By default the agent leaves its services running when it is stopped; with
/// --stop-services-on-exit it stops them.
#[test]
fn sigterm_leaves_services_unless_asked() {
    let f = fleet();
    f.registry.apply(&spec("stays", &["sleep", "1000"], ""));
    let i = f
        .registry
        .wait_instance("demo.stays", "node-a", "running", 20 * S, running);
    f.agent.signal(Signal::SIGTERM);
    let mut agent = f.agent;
    assert_eq!(agent.wait_exit(20 * S), Some(0));
    assert!(alive(pid_of(&i)), "the service outlives the agent");
    sigkill(pid_of(&i));

    let g = fleet_with(&["--stop-services-on-exit"]);
    g.registry.apply(&spec("goes", &["sleep", "1000"], ""));
    let i = g
        .registry
        .wait_instance("demo.goes", "node-a", "running", 20 * S, running);
    g.agent.signal(Signal::SIGTERM);
    let mut agent = g.agent;
    assert_eq!(agent.wait_exit(30 * S), Some(0));
    assert!(!alive(pid_of(&i)), "stopped with the agent");
}

/// `registry events --follow` prints state changes as they happen.
#[test]
fn events_follow_prints_changes_as_they_happen() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    let f = fleet();
    let mut follower = std::process::Command::new(corral_tests::bin("registry"))
        .args([
            "events",
            "--follow",
            "--server",
            "demo.followed",
            "--addr",
            &f.registry.addr(),
        ])
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn follower");
    let stdout = follower.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    f.registry.apply(&spec("followed", &["sleep", "1000"], ""));
    let mut seen = Vec::new();
    let got_running = wait_until("a followed event", 20 * S, || {
        while let Ok(line) = rx.try_recv() {
            seen.push(line);
        }
        if seen
            .iter()
            .any(|l| l.contains("demo.followed@node-a") && l.contains("-> running"))
        {
            Ok(seen.clone())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    let _ = nix::sys::signal::killpg(Pid::from_raw(follower.id() as i32), Signal::SIGKILL);
    let _ = follower.wait();
    assert!(
        got_running.iter().all(|l| l.contains("demo.followed")),
        "{got_running:?}"
    );
}

/// Log files are rotated by size, keeping the configured number of old files.
#[test]
fn logs_rotate_by_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "log_max_size = \"4 KiB\"\nlog_keep = 2\n").expect("config");
    let f = fleet_with(&["--config", config.to_str().expect("utf8")]);
    let script = "i=0; while :; do i=$((i+1)); echo line $i of a chatty service that logs a lot; sleep 0.001; done";
    f.registry.apply(&spec("chatty", &["sh", "-c", script], ""));
    let logs = f.agent.instance_dir("demo.chatty").join("logs");
    wait_until("two rotations", 30 * S, || {
        if logs.join("stdout.log.2").exists() {
            Ok(())
        } else {
            Err("no stdout.log.2 yet".into())
        }
    });
    assert!(
        !logs.join("stdout.log.3").exists(),
        "only 2 old files are kept"
    );
    let old = std::fs::read_to_string(logs.join("stdout.log.1")).expect("stdout.log.1");
    assert!(
        old.len() as u64 > 4096 && old.contains("line"),
        "{} bytes",
        old.len()
    );
}
