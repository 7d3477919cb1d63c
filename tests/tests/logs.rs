//! `registry logs`: the instances' captured logs, read by their agents and carried over
//! their sessions; through any replica; following across restarts and rotations; and a
//! service that logs as fast as it can never starves the session.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_tests::lookup::agent_http;
use corral_tests::{Agent, Backend, Registry, TestDb, bin, http_get, test_ips, wait_until};
use serde_json::Value;

const S: Duration = Duration::from_secs(1);

/// A `registry logs -f` running in the background; its stdout lines are collected.
struct Follow {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follow {
    fn start(registry: &Registry, args: &[&str]) -> Follow {
        let mut child = Command::new(bin("registry"))
            .args(["logs", "-f", "--addr", &registry.addr()])
            .args(args)
            .env_remove("CORRAL_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start registry logs -f");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        Follow { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) {
        wait_until(what, 30 * S, || {
            let lines = self.lines();
            if lines.iter().any(|l| pred(l)) {
                Ok(())
            } else {
                Err(format!("{} lines, last: {:?}", lines.len(), lines.last()))
            }
        });
    }

    /// Ctrl-C: the command ends with exit 0.
    fn interrupt(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        let status = wait_until("registry logs -f to end", 10 * S, || {
            self.child
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "still running".to_string())
        });
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        assert!(status.success(), "exit {status}: {err}");
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's count of open log streams, from its /metrics.
fn open_streams(agent: &Agent) -> Result<u64, String> {
    let text = http_get(agent_http(agent), "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix("corral_agent_log_streams "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no corral_agent_log_streams in {text}"))
}

fn wait_no_streams(agent: &Agent) {
    wait_until(
        "the agent to close its log streams",
        10 * S,
        || match open_streams(agent)? {
            0 => Ok(()),
            n => Err(format!("{n} open")),
        },
    );
}

fn spec(name: &str, nodes: &[&str], script: &str) -> String {
    let nodes: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
    format!(
        "app = \"demo\"\nserver = \"{name}\"\nnodes = [{}]\ncommand = [\"sh\", \"-c\", {script:?}]\n",
        nodes.join(", ")
    )
}

fn stdout_of(out: &std::process::Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "registry logs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn refused(out: &std::process::Output, says: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted; stdout {:?}", out.stdout);
    assert!(err.contains(says), "{err:?} should say {says:?}");
}

fn agent_config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join(format!("agent-{}.toml", rand::random::<u32>()));
    std::fs::write(&path, text).expect("agent config");
    path.display().to_string()
}

/// -n, --stream, --since, several instances with their prefix, -o json, and the errors
/// for an unknown server, node and ordinal.
#[test]
fn tail_since_stream_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let r = Registry::start(dir.path(), &db.url, &[]);
    let ips = test_ips(2);
    let _a = Agent::start(dir.path(), &r.addr(), "node-a", &ips[0]);
    let _b = Agent::start(dir.path(), &r.addr(), "node-b", &ips[1]);
    for n in ["node-a", "node-b"] {
        r.wait_node(n, "up", 20 * S, |v| v["state"] == "up");
    }
    let script = "for i in 1 2 3 4 5; do echo \"out $i on $CORRAL_NODE\"; echo \"err $i\" >&2; done; \
                  while [ ! -f go ]; do sleep 0.1; done; echo late; exec sleep 1000";
    assert!(
        r.apply(&spec("talk", &["node-a", "node-b"], script))
            .status
            .success()
    );
    wait_until("the early lines", 30 * S, || {
        let out = r.cli(&[
            "logs",
            "demo.talk",
            "--node",
            "node-a",
            "--stream",
            "stdout",
        ]);
        // Right after apply the agent may not know the instance yet: not an error here.
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let lines = stdout_of(&out);
        if lines.last().map(String::as_str) == Some("out 5 on node-a") {
            Ok(())
        } else {
            Err(format!("{lines:?}"))
        }
    });
    let out = r.cli(&[
        "logs",
        "demo.talk",
        "--node",
        "node-a",
        "--stream",
        "stdout",
        "-n",
        "2",
    ]);
    assert_eq!(stdout_of(&out), ["out 4 on node-a", "out 5 on node-a"]);
    let out = r.cli(&[
        "logs",
        "demo.talk",
        "--ordinal",
        "1",
        "--stream",
        "stderr",
        "-n",
        "1",
    ]);
    assert_eq!(stdout_of(&out), ["err 5"]);
    // Both streams of both instances: each line says where it is from.
    let all = stdout_of(&r.cli(&["logs", "demo.talk", "-n", "1"]));
    for want in [
        "[node-a/0 stdout] out 5 on node-a",
        "[node-a/0 stderr] err 5",
        "[node-b/1 stdout] out 5 on node-b",
        "[node-b/1 stderr] err 5",
    ] {
        assert!(all.iter().any(|l| l == want), "{want:?} in {all:?}");
    }
    let json = stdout_of(&r.cli(&[
        "logs",
        "demo.talk",
        "--node",
        "node-b",
        "-n",
        "1",
        "--stream",
        "stdout",
        "-o",
        "json",
    ]));
    let v: Value = serde_json::from_str(&json[0]).expect("JSON line");
    assert_eq!(
        (&v["node"], &v["ordinal"], &v["stream"], &v["line"]),
        (
            &"node-b".into(),
            &1.into(),
            &"stdout".into(),
            &"out 5 on node-b".into()
        )
    );
    assert!(
        v["time"].as_str().is_some_and(|t| t.starts_with("20")),
        "{v}"
    );

    // --since: lines of the last 2 s only (the early ones are older than that).
    std::thread::sleep(3 * S);
    let instance = _a.instance_dir("demo.talk");
    std::fs::write(instance.join("go"), "").expect("go");
    wait_until("the late line", 30 * S, || {
        let lines = stdout_of(&r.cli(&[
            "logs",
            "demo.talk",
            "--node",
            "node-a",
            "--stream",
            "stdout",
            "-n",
            "1",
        ]));
        if lines == ["late"] {
            Ok(())
        } else {
            Err(format!("{lines:?}"))
        }
    });
    let recent = stdout_of(&r.cli(&[
        "logs",
        "demo.talk",
        "--node",
        "node-a",
        "--stream",
        "stdout",
        "--since",
        "2s",
    ]));
    assert_eq!(recent, ["late"]);
    let hour = stdout_of(&r.cli(&[
        "logs",
        "demo.talk",
        "--node",
        "node-a",
        "--stream",
        "stdout",
        "--since",
        "1h",
    ]));
    assert_eq!(hour.len(), 6, "{hour:?}");

    refused(
        &r.cli(&["logs", "demo.nothing"]),
        "\"demo.nothing\" not found",
    );
    refused(
        &r.cli(&["logs", "demo.talk", "--node", "node-z"]),
        "no instance on node node-z",
    );
    refused(
        &r.cli(&["logs", "demo.talk", "--ordinal", "7"]),
        "no instance with ordinal 7",
    );
    refused(&r.cli(&["logs", "nodots"]), "must be written APP.SERVER");
}

/// `-f` goes on across a restart of the service and across rotations of its log file,
/// never sending a line twice; Ctrl-C ends it with exit 0 and the agent stops tailing.
#[test]
fn follow_across_restart_and_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let r = Registry::start(dir.path(), &db.url, &[]);
    let ip = &test_ips(1)[0];
    let config = agent_config(dir.path(), "log_max_size = \"16 KiB\"\nlog_keep = 2\n");
    let a = Agent::start_with_args(
        &r.addr(),
        "node-a",
        ip,
        &dir.path().join("agent-node-a"),
        &["--config", &config],
    );
    r.wait_node("node-a", "up", 20 * S, |v| v["state"] == "up");
    // About 5 KiB a second: the file passes 16 KiB every few seconds.
    let script = "run=$(date +%s%N); i=0; while :; do i=$((i+1)); \
                  echo \"run $run line $i ................................................................................................................\"; \
                  sleep 0.02; done";
    assert!(
        r.apply(&spec("ticker", &["node-a"], script))
            .status
            .success()
    );
    r.wait_instance("demo.ticker", "node-a", "running", 20 * S, |i| {
        i["state"] == "running"
    });
    let follow = Follow::start(&r, &["demo.ticker", "--stream", "stdout", "-n", "0"]);
    follow.wait_line("a first line", |l| l.contains(" line "));
    assert_eq!(open_streams(&a), Ok(1));

    let rotated = a.instance_dir("demo.ticker").join("logs/stdout.log.1");
    wait_until("a rotation", 30 * S, || {
        std::fs::metadata(&rotated).map_err(|e| e.to_string())
    });
    let at_rotation = follow.lines().len();
    wait_until("lines after the rotation", 30 * S, || {
        let n = follow.lines().len();
        if n > at_rotation + 20 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    });
    let runs = |lines: &[String]| {
        let mut runs: Vec<String> = lines
            .iter()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect();
        runs.dedup();
        runs
    };
    let first_run = runs(&follow.lines());
    assert_eq!(first_run.len(), 1, "{first_run:?}");
    assert!(
        r.cli(&["server", "restart", "demo.ticker"])
            .status
            .success()
    );
    follow.wait_line("a line of the restarted service", |l| {
        !l.contains(&first_run[0])
    });
    let seen = follow.lines();
    let mut keys: Vec<&String> = seen.iter().collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), seen.len(), "no line twice");
    assert_eq!(runs(&seen).len(), 2, "the first run, then the second");
    follow.interrupt();
    wait_no_streams(&a);
}

/// A service printing as fast as it can while followed: the node stays up, heartbeats go
/// on, another instance's reports still arrive, and the lines that could not be carried
/// are counted in a marker.
#[test]
fn a_flood_never_starves_the_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let r = Registry::start(dir.path(), &db.url, &[]);
    let ip = &test_ips(1)[0];
    let config = agent_config(dir.path(), "log_max_size = \"8 MiB\"\nlog_keep = 1\n");
    let a = Agent::start_with_args(
        &r.addr(),
        "node-a",
        ip,
        &dir.path().join("agent-node-a"),
        &["--config", &config],
    );
    r.wait_node("node-a", "up", 20 * S, |v| v["state"] == "up");
    assert!(
        r.apply(&spec("quiet", &["node-a"], "exec sleep 1000"))
            .status
            .success()
    );
    let flood = "i=0; while :; do i=$((i+1)); echo \"flood $i\"; done";
    assert!(r.apply(&spec("flood", &["node-a"], flood)).status.success());
    r.wait_instance("demo.flood", "node-a", "running", 20 * S, |i| {
        i["state"] == "running"
    });
    let quiet = r.wait_instance("demo.quiet", "node-a", "running", 20 * S, |i| {
        i["state"] == "running"
    });

    let follow = Follow::start(&r, &["demo.flood", "--stream", "stdout", "-n", "0"]);
    follow.wait_line("the skip marker", |l| {
        l.starts_with("… ") && l.ends_with(" lines skipped")
    });
    // Heartbeats keep being written while the flood goes on.
    let seen = r.node("node-a").expect("node-a")["last_seen_ms"]
        .as_i64()
        .unwrap_or(0);
    r.wait_node("node-a", "two newer heartbeats", 20 * S, |n| {
        n["state"] == "up" && n["last_seen_ms"].as_i64() > Some(seen + 2000)
    });
    // Another instance's status reports still arrive.
    assert!(r.cli(&["server", "restart", "demo.quiet"]).status.success());
    r.wait_instance("demo.quiet", "node-a", "restarted", 20 * S, |i| {
        i["state"] == "running" && i["pid"] != quiet["pid"]
    });
    assert_eq!(r.node("node-a").expect("node-a")["state"], "up");
    let lines = follow.lines();
    assert!(
        lines.iter().any(|l| l.starts_with("flood ")),
        "flood lines arrive"
    );
    follow.interrupt();
    wait_no_streams(&a);
}

/// The node's session is on replica 1; `registry logs` through replica 2 reads it.
#[test]
fn logs_through_another_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = TestDb::new(Backend::MySql, dir.path()) else {
        return;
    };
    let (d1, d2) = (dir.path().join("r1"), dir.path().join("r2"));
    std::fs::create_dir_all(&d1).expect("mkdir");
    std::fs::create_dir_all(&d2).expect("mkdir");
    let r1 = Registry::start(&d1, &db.url, &[]);
    let r2 = Registry::start(&d2, &db.url, &[]);
    let ip = &test_ips(1)[0];
    let a = Agent::start(dir.path(), &r1.addr(), "node-a", ip);
    r2.wait_node("node-a", "up, seen through replica 2", 20 * S, |v| {
        v["state"] == "up"
    });
    let script =
        "echo hello; while :; do if [ -f more ]; then echo more; rm more; fi; sleep 0.05; done";
    assert!(r2.apply(&spec("far", &["node-a"], script)).status.success());
    wait_until("the line through replica 2", 30 * S, || {
        let out = r2.cli(&["logs", "demo.far", "--stream", "stdout"]);
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && text == "hello\n" {
            Ok(())
        } else {
            Err(format!("{text:?} {}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    let follow = Follow::start(&r2, &["demo.far", "--stream", "stdout", "-n", "1"]);
    follow.wait_line("the tail through replica 2", |l| l == "hello");
    std::fs::write(a.instance_dir("demo.far").join("more"), "").expect("more");
    follow.wait_line("a new line through replica 2", |l| l == "more");
    follow.interrupt();
    wait_no_streams(&a);
}
