//! Status says what is wrong: `server status` has one value per header with HEALTH a
//! column of its own; why a check fails (HTTP status, connection refused, timeout, the
//! last line of an exec check) is in status (table and JSON) and in events; health
//! changes are events of kind "health"; `node show` lists the node's instances.

use std::time::Duration;

use corral_tests::{Agent, Backend, Registry, TestDb, bin, find, wait_until};
use serde_json::Value;

const S: Duration = Duration::from_secs(1);

struct Fleet {
    registry: Registry,
    agent: Agent,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

fn fleet() -> Fleet {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let registry = Registry::start(dir.path(), &db.url, &[]);
    let ip = &corral_tests::test_ips(1)[0];
    let agent = Agent::start(dir.path(), &registry.addr(), "node-a", ip);
    registry.wait_node("node-a", "up", 20 * S, |n| n["state"] == "up");
    Fleet {
        registry,
        agent,
        _db: db,
        _dir: dir,
    }
}

/// `demo.NAME` on node-a with an auto port `Main` and a check (TOML after `[health]`).
fn spec(name: &str, command: &[&str], check: &str) -> String {
    let command: Vec<String> = command.iter().map(|c| format!("{c:?}")).collect();
    format!(
        "app = \"demo\"\nserver = \"{name}\"\nnodes = [\"node-a\"]\ncommand = [{}]\n\
         [[adapters]]\nname = \"Main\"\nport = \"auto\"\n\
         [health]\ninterval = \"100ms\"\ntimeout = \"500ms\"\nstart_period = \"0s\"\nunhealthy_after = 1\n{check}",
        command.join(", ")
    )
}

fn testsvc() -> String {
    bin("corral-testsvc").display().to_string()
}

fn health(f: &Fleet, server: &str, want: &str) -> Value {
    f.registry
        .wait_instance(server, "node-a", &format!("health {want}"), 20 * S, |i| {
            i["health"] == want
        })
}

/// A table's rows as maps from header to cell, cut at the columns the header line
/// sets; panics when a row has a value outside them or an empty column.
fn table(text: &str) -> Vec<Vec<(String, String)>> {
    let mut lines = text.lines();
    let header = lines.next().expect("a header line");
    let mut starts = Vec::new();
    let mut names = Vec::new();
    for (i, c) in header.char_indices() {
        // A column starts after two spaces (names may hold one). Headers are ASCII, so
        // byte and character positions agree.
        if c != ' ' && (i == 0 || header[..i].ends_with("  ")) {
            starts.push(i);
        }
    }
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(header.len());
        names.push(header[start..end].trim().to_string());
    }
    lines
        .map(|line| {
            let chars: Vec<char> = line.chars().collect();
            let cells: Vec<(String, String)> = starts
                .iter()
                .enumerate()
                .map(|(n, &start)| {
                    let end = starts.get(n + 1).copied().unwrap_or(chars.len());
                    let cell: String = chars
                        .get(start.min(chars.len())..end.min(chars.len()))
                        .map(|c| c.iter().collect())
                        .unwrap_or_default();
                    if n + 1 < starts.len() {
                        assert!(
                            end == 0 || chars.get(end - 1).is_none_or(|c| *c == ' '),
                            "a value runs into column {}: {line:?}\n{text}",
                            names[n + 1]
                        );
                    }
                    (names[n].clone(), cell.trim().to_string())
                })
                .collect();
            for (name, cell) in &cells {
                assert!(!cell.is_empty(), "column {name} is empty: {line:?}\n{text}");
            }
            cells
        })
        .collect()
}

fn cell<'a>(row: &'a [(String, String)], name: &str) -> &'a str {
    row.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no column {name}: {row:?}"))
}

fn stdout(f: &Fleet, args: &[&str]) -> String {
    let out = f.registry.cli(args);
    assert!(
        out.status.success(),
        "registry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An http check answering 503: status says so in HEALTH and LAST ERROR (table) and in
/// `health_error` (JSON); the change is a `health` event with the cause; passing again
/// clears it and is an event too.
#[test]
fn a_failing_http_check_says_why_in_status_and_events() {
    let f = fleet();
    f.registry.apply(&spec(
        "web",
        &[&testsvc()],
        "kind = \"http\"\npath = \"/health\"\n",
    ));
    health(&f, "demo.web", "healthy");
    let flag = f.agent.instance_dir("demo.web").join("unhealthy");
    std::fs::write(&flag, "").expect("flag");
    let i = health(&f, "demo.web", "unhealthy");
    assert_eq!(
        i["health_error"], "GET /health: HTTP 503 Service Unavailable",
        "{i}"
    );
    assert_eq!(i["last_error"], "", "no instance error: {i}");

    let text = stdout(&f, &["server", "status", "demo.web"]);
    let rows = table(&text);
    assert_eq!(rows.len(), 1, "{text}");
    let row = &rows[0];
    assert_eq!(
        row.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [
            "NODE",
            "ORDINAL",
            "STATE",
            "DESIRED",
            "PID",
            "RESTARTS",
            "STARTED",
            "VERSION",
            "HEALTH",
            "CPU",
            "MEMORY",
            "PIDS",
            "LAST EXIT",
            "LAST ERROR"
        ],
        "{text}"
    );
    assert_eq!(cell(row, "NODE"), "node-a", "{text}");
    assert_eq!(cell(row, "ORDINAL"), "0", "{text}");
    assert_eq!(cell(row, "STATE"), "running", "{text}");
    assert_eq!(cell(row, "HEALTH"), "unhealthy", "{text}");
    assert_eq!(
        cell(row, "LAST ERROR"),
        "health check: GET /health: HTTP 503 Service Unavailable",
        "{text}"
    );

    // The last health event: from healthy (a first probe may have found the service
    // not listening yet) to unhealthy, with the cause.
    let health_events = |to: &str| {
        wait_until(&format!("a health event to {to}"), 10 * S, || {
            let v = f.registry.json(&[
                "events", "--server", "demo.web", "--kind", "health", "--limit", "100",
            ]);
            let list = v.as_array().cloned().unwrap_or_default();
            match list.last() {
                Some(e) if e["to"] == to => Ok(list),
                _ => Err(v.to_string()),
            }
        })
    };
    let events = health_events("unhealthy");
    assert!(events.iter().all(|e| e["kind"] == "health"), "{events:?}");
    let last = &events[events.len() - 1];
    assert_eq!(
        (&last["from"], &last["reason"]),
        (
            &Value::from("healthy"),
            &Value::from("GET /health: HTTP 503 Service Unavailable")
        ),
        "{events:?}"
    );
    // State events are kind "state"; every event line names its kind.
    let states = f
        .registry
        .json(&["events", "--server", "demo.web", "--kind", "state"]);
    assert!(
        states
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|e| e["kind"] == "state")),
        "{states}"
    );
    let lines = stdout(&f, &["events", "--server", "demo.web"]);
    assert!(
        lines
            .lines()
            .any(|l| l.contains(" health ") && l.contains("healthy -> unhealthy")),
        "{lines}"
    );
    let bad = f.registry.cli(&["events", "--kind", "weather"]);
    assert_eq!(bad.status.code(), Some(2), "an unknown kind is bad input");

    std::fs::remove_file(&flag).expect("unflag");
    let i = health(&f, "demo.web", "healthy");
    assert_eq!(i["health_error"], "", "cleared once it passes: {i}");
    let events = health_events("healthy");
    let last = &events[events.len() - 1];
    assert_eq!(
        (&last["from"], &last["reason"]),
        (&Value::from("unhealthy"), &Value::from("check passed")),
        "{events:?}"
    );
}

/// A tcp check on a port nobody listens on, an exec check that fails with a message, and
/// one that times out: each says why.
#[test]
fn each_kind_of_check_failure_is_named() {
    let f = fleet();
    f.registry
        .apply(&spec("deaf", &["sleep", "1000"], "kind = \"tcp\"\n"));
    f.registry.apply(&spec(
        "grumpy",
        &["sleep", "1000"],
        "kind = \"exec\"\ncommand = [\"sh\", \"-c\", \"echo checking; echo 'database is read-only' >&2; exit 3\"]\n",
    ));
    f.registry.apply(&spec(
        "slow",
        &["sleep", "1000"],
        "kind = \"exec\"\ncommand = [\"sleep\", \"5\"]\n",
    ));
    let deaf = health(&f, "demo.deaf", "unhealthy");
    let port = f
        .registry
        .json(&["endpoints", "demo.deaf.Main"])
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(port, 0, "an unhealthy instance is not listed");
    let cause = deaf["health_error"].as_str().unwrap_or_default();
    assert!(
        cause.starts_with("connect to ") && cause.ends_with(": connection refused"),
        "{deaf}"
    );
    let grumpy = health(&f, "demo.grumpy", "unhealthy");
    assert_eq!(
        grumpy["health_error"], "sh exited with code 3: database is read-only",
        "{grumpy}"
    );
    let slow = health(&f, "demo.slow", "unhealthy");
    assert_eq!(
        slow["health_error"], "exec check timed out after 500ms",
        "{slow}"
    );
}

/// `node show` lists the node's instances, table and JSON, whatever their errors hold.
#[test]
fn node_show_lists_the_nodes_instances() {
    let f = fleet();
    f.registry.apply(
        "app = \"demo\"\nserver = \"calm\"\nnodes = [\"node-a\"]\ncommand = [\"sleep\", \"1000\"]\n",
    );
    // A spawn failure: its error is long and names a path.
    f.registry.apply(
        "app = \"demo\"\nserver = \"broken\"\nnodes = [\"node-a\"]\ncommand = [\"/nonexistent/a/very/long/path/to/a/program/that/is/not/there/at/all/anywhere\"]\n",
    );
    f.registry
        .wait_instance("demo.calm", "node-a", "running", 20 * S, |i| {
            i["state"] == "running"
        });
    f.registry
        .wait_instance("demo.broken", "node-a", "failed", 20 * S, |i| {
            i["state"] == "failed"
        });

    let node = f.registry.json(&["node", "show", "node-a"]);
    assert_eq!(node["name"], "node-a");
    let instances = &node["instances"];
    let calm = find(instances, "server", "demo.calm").expect("demo.calm listed");
    assert_eq!(calm["state"], "running", "{node}");
    assert!(calm["pid"].as_u64().is_some_and(|p| p > 0), "{calm}");
    let broken = find(instances, "server", "demo.broken").expect("demo.broken listed");
    assert_eq!(broken["state"], "failed");
    assert!(
        broken["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("/nonexistent/")),
        "{broken}"
    );
    for key in ["health", "version", "node"] {
        assert!(calm.get(key).is_some(), "{key} in {calm}");
    }
    // The event of the failure says why, not the start before it.
    let events = f.registry.events("demo.broken");
    let failed = events
        .iter()
        .find(|e| e["to"] == "failed")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("/nonexistent/") && r.contains("next try in")),
        "{events:?}"
    );

    let text = stdout(&f, &["node", "show", "node-a"]);
    let (_, instances) = text
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("the node, then its instances: {text}"));
    let rows = table(instances);
    assert_eq!(rows.len(), 2, "{instances}");
    let calm = rows
        .iter()
        .find(|r| cell(r, "SERVER") == "demo.calm")
        .expect("calm row");
    assert_eq!(
        (
            cell(calm, "STATE"),
            cell(calm, "HEALTH"),
            cell(calm, "LAST ERROR")
        ),
        ("running", "-", "-"),
        "{instances}"
    );
    let broken = rows
        .iter()
        .find(|r| cell(r, "SERVER") == "demo.broken")
        .expect("broken row");
    assert_eq!(cell(broken, "STATE"), "failed");
    assert_eq!(cell(broken, "PID"), "-");
    let err = cell(broken, "LAST ERROR");
    assert!(
        err.contains("/nonexistent/") && err.chars().count() <= 80,
        "cut to the column's width: {instances}"
    );
}
