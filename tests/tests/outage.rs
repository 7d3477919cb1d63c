//! The database goes away and comes back: the registry keeps its sessions, answers
//! discovery from memory, says on `/health` within a second what is wrong, keeps what
//! agents report, and once the database is back every node is `up` with its endpoints
//! listed within 5 s, without any agent restarting.
//!
//! Three ways to lose the database: the SQLite file deleted (then put back), the SQLite
//! files made unwritable, and MySQL cut off by a TCP proxy the test runs (the machine's
//! MariaDB serves other tests and is never stopped).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use corral_registry::store::now_ms;
use corral_tests::proxy::{Proxy, mysql_target, mysql_url_via};
use corral_tests::{Agent, Backend, Registry, TestDb, find, http_get_any, test_ips, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const S: Duration = Duration::from_secs(1);
/// `/health` answers within this during an outage (the registry budgets 800 ms for its
/// check; the bound leaves room for a loaded test machine, and still fails the 10 s pool
/// timeout it used to wait for). The figures measured are printed.
const HEALTH_WITHIN: Duration = Duration::from_secs(3);
/// ...and nodes and endpoints are back within this once the database is (5 s asked;
/// they used to stay down for good).
const BACK_WITHIN: Duration = Duration::from_secs(10);
/// The registry's timing in these tests: a node silent 3 s is down, heartbeats are
/// written every 500 ms, so a node is swept `down` 4 s after its last written heartbeat.
const CONFIG: &str =
    "node_timeout = \"3s\"\nheartbeat_interval = \"1s\"\nflush_interval = \"500ms\"\n";
/// How long the database stays away: longer than the 4 s after which the sweep marks a
/// node down whose heartbeats were not written.
const OUTAGE: Duration = Duration::from_secs(6);
const NODES: [&str; 2] = ["node-a", "node-b"];
const NAME: &str = "demo.svc.Main";

#[derive(Clone, Copy, Debug)]
enum Cut {
    SqliteDeleted,
    SqliteUnwritable,
    MySql,
}

/// How the test takes the database away and gives it back.
enum Lever {
    /// The file is unlinked from its path; a hard link kept aside puts the same file back
    /// (as `mv` away and back would).
    Deleted {
        path: PathBuf,
        aside: PathBuf,
    },
    /// The database file and its WAL made immutable (`chattr +i`): the tests run as root,
    /// which ignores permission bits and read-only modes, but not the immutable flag (and
    /// a read-only remount is refused while the registry has the file open for writing).
    /// The shared-memory index is left alone: the registry has it mapped.
    Unwritable {
        files: Vec<PathBuf>,
        set: bool,
    },
    MySql(Proxy),
}

impl Lever {
    fn cut(&mut self) {
        match self {
            Lever::Deleted { path, aside } => {
                std::fs::hard_link(&*path, &*aside).expect("link aside");
                std::fs::remove_file(&*path).expect("delete the database file");
            }
            Lever::Unwritable { files, set } => {
                files.retain(|f| f.exists());
                chattr("+i", files);
                *set = true;
            }
            Lever::MySql(proxy) => proxy.cut(),
        }
    }

    fn restore(&mut self) {
        match self {
            Lever::Deleted { path, aside } => {
                std::fs::hard_link(&*aside, &*path).expect("put the database file back");
                std::fs::remove_file(&*aside).expect("remove the link aside");
            }
            Lever::Unwritable { files, set } => {
                chattr("-i", files);
                *set = false;
            }
            Lever::MySql(proxy) => proxy.resume(),
        }
    }

    /// What `/health`'s error must say.
    fn says(&self) -> &'static [&'static str] {
        match self {
            Lever::Deleted { .. } => &["registry.db is gone"],
            Lever::Unwritable { .. } => &["registry.db is not writable"],
            Lever::MySql(_) => &["cannot reach the database", "did not answer"],
        }
    }
}

impl Drop for Lever {
    fn drop(&mut self) {
        // An immutable file could not be removed with the test's temp dir.
        if let Lever::Unwritable { files, set: true } = self {
            chattr("-i", files);
        }
    }
}

fn chattr(flag: &str, files: &[PathBuf]) {
    if files.is_empty() {
        return;
    }
    let out = Command::new("chattr")
        .arg(flag)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("chattr is needed for this test: {e}"));
    assert!(
        out.status.success(),
        "chattr {flag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `/health`: how long it took, its status and its JSON.
fn health(addr: SocketAddr) -> Result<(Duration, u16, Value), String> {
    let started = Instant::now();
    let (status, _, body) = http_get_any(addr, "/health")?;
    let took = started.elapsed();
    let json = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    Ok((took, status, json))
}

/// `registry endpoints NAME`: the nodes listed (from the registry's memory).
fn endpoint_nodes(r: &Registry) -> Result<Vec<String>, String> {
    let out = r.cli(&["endpoints", NAME, "-o", "json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into());
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let mut nodes: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["node"].as_str().map(str::to_string))
        .collect();
    nodes.sort();
    Ok(nodes)
}

/// The nodes `up` in `node list`, or why not.
fn nodes_up(r: &Registry) -> Result<Vec<Value>, String> {
    let out = r.cli(&["node", "list", "-o", "json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into());
    }
    let list: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    NODES
        .iter()
        .map(|n| match find(&list, "name", n) {
            Some(v) if v["state"] == "up" => Ok(v.clone()),
            other => Err(format!("{n}: {other:?}")),
        })
        .collect()
}

/// The pid the agent recorded for the instance, 0 if none.
fn service_pid(agent: &Agent) -> u32 {
    std::fs::read_to_string(agent.instance_dir("demo.svc").join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["pid"].as_u64())
        .unwrap_or(0) as u32
}

fn store_outage(cut: Cut) {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = match cut {
        Cut::MySql => Backend::MySql,
        _ => Backend::Sqlite,
    };
    let Some(db) = TestDb::new(backend, dir.path()) else {
        return;
    };
    let sqlite = dir.path().join("registry.db");
    let (url, mut lever) = match cut {
        Cut::SqliteDeleted => (
            db.url.clone(),
            Lever::Deleted {
                path: sqlite.clone(),
                aside: dir.path().join("aside.db"),
            },
        ),
        Cut::SqliteUnwritable => (
            db.url.clone(),
            Lever::Unwritable {
                files: vec![
                    sqlite.clone(),
                    PathBuf::from(format!("{}-wal", sqlite.display())),
                ],
                set: false,
            },
        ),
        Cut::MySql => {
            let proxy = Proxy::start(mysql_target(&db.url));
            (mysql_url_via(&db.url, proxy.addr), Lever::MySql(proxy))
        }
    };
    let config = dir.path().join("registry.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    let registry = Registry::start(
        dir.path(),
        &url,
        &["--config", config.to_str().expect("utf8")],
    );
    let ips = test_ips(NODES.len());
    let agents: Vec<Agent> = NODES
        .iter()
        .zip(&ips)
        .map(|(n, ip)| Agent::start(dir.path(), &registry.addr(), n, ip))
        .collect();
    registry.apply(
        "app = \"demo\"\nserver = \"svc\"\nnodes = [\"node-a\", \"node-b\"]\n\
         command = [\"sleep\", \"1000\"]\n[[adapters]]\nname = \"Main\"\nport = \"auto\"\n",
    );
    wait_until("both endpoints listed", 30 * S, || {
        let nodes = endpoint_nodes(&registry)?;
        if nodes == NODES {
            Ok(())
        } else {
            Err(format!("{nodes:?}"))
        }
    });
    let before = wait_until("both nodes up", 20 * S, || nodes_up(&registry));
    let http = SocketAddr::from(([127, 0, 0, 1], registry.http_port));
    let (_, status, _) = health(http).expect("health");
    assert_eq!(status, 200);

    lever.cut();
    let cut_at = Instant::now();
    let cut_ms = now_ms();
    let mut slowest = Duration::ZERO;
    let (seen_503, answer) =
        wait_until("/health to say the database is unreachable", 10 * S, || {
            let (took, status, json) = health(http)?;
            slowest = slowest.max(took);
            assert!(took < HEALTH_WITHIN, "/health took {took:?}: {json}");
            if status == 503 {
                Ok((cut_at.elapsed(), json))
            } else {
                Err(json.to_string())
            }
        });
    let error = answer["error"].as_str().unwrap_or_default().to_string();
    assert!(
        lever.says().iter().any(|s| error.contains(s)),
        "/health names the store error: {answer}"
    );

    // A service crashes meanwhile: its agent restarts it and reports, and the registry
    // keeps the report and the events for the database.
    let old_pid = service_pid(&agents[1]);
    assert_ne!(old_pid, 0);
    kill(Pid::from_raw(old_pid as i32), Signal::SIGKILL).expect("kill the service");
    let new_pid = wait_until("the service restarted", 20 * S, || {
        match service_pid(&agents[1]) {
            p if p != 0 && p != old_pid => Ok(p),
            p => Err(format!("pid {p}")),
        }
    });
    // Until the database is back, the registry says it is not, within a second, and
    // serves discovery from memory.
    while cut_at.elapsed() < OUTAGE {
        let (took, status, json) = health(http).expect("health during the outage");
        slowest = slowest.max(took);
        assert!(took < HEALTH_WITHIN, "/health took {took:?}: {json}");
        assert_eq!(status, 503, "{json}");
        wait_until("discovery answers from memory", 10 * S, || {
            let nodes = endpoint_nodes(&registry)?;
            if nodes == NODES {
                Ok(())
            } else {
                Err(format!("{nodes:?}"))
            }
        });
        std::thread::sleep(Duration::from_millis(200));
    }

    lever.restore();
    let back_at = Instant::now();
    let after = wait_until("every node up with its endpoints listed", 20 * S, || {
        let up = nodes_up(&registry)?;
        let nodes = endpoint_nodes(&registry)?;
        if nodes == NODES {
            Ok(up)
        } else {
            Err(format!("endpoints {nodes:?}"))
        }
    });
    let nodes_back = back_at.elapsed();
    wait_until("/health 200 again", 20 * S, || match health(http)? {
        (_, 200, _) => Ok(()),
        (_, _, json) => Err(json.to_string()),
    });
    let health_back = back_at.elapsed();
    eprintln!(
        "{cut:?}: /health said 503 {seen_503:?} after the cut, slowest answer {slowest:?}; \
         nodes up and endpoints listed {nodes_back:?} after the database was back, /health 200 after {health_back:?}"
    );
    assert!(
        nodes_back <= BACK_WITHIN,
        "nodes and endpoints back after {nodes_back:?}"
    );
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            b["connected_at_ms"], a["connected_at_ms"],
            "{} kept its session",
            a["name"]
        );
    }
    for agent in &agents {
        assert!(
            agent.log_text().matches("session open").count() == 1,
            "{} never reconnected",
            agent.node
        );
    }

    // What was reported during the outage reached the database.
    let i = registry.wait_instance(
        "demo.svc",
        "node-b",
        "the report made during the outage",
        10 * S,
        |i| i["pid"].as_u64() == Some(u64::from(new_pid)),
    );
    assert!(i["restarts"].as_u64() >= Some(1), "{i}");
    let events = registry.events("demo.svc");
    assert!(
        events
            .iter()
            .any(|e| e["node"] == "node-b" && e["at_ms"].as_i64() >= Some(cut_ms)),
        "the events of the crash are kept: {events:?}"
    );

    // And it stays so past the sweep's grace: no node is marked down for heartbeats that
    // could not be written.
    let settled = Instant::now();
    while settled.elapsed() < 5 * S {
        nodes_up(&registry).unwrap_or_else(|e| panic!("a node went down after the outage: {e}"));
        assert_eq!(endpoint_nodes(&registry).expect("endpoints"), NODES);
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(agents);
    drop(registry);
}

#[test]
fn store_outage_sqlite_deleted() {
    store_outage(Cut::SqliteDeleted);
}

#[test]
fn store_outage_sqlite_unwritable() {
    store_outage(Cut::SqliteUnwritable);
}

#[test]
fn store_outage_mysql() {
    store_outage(Cut::MySql);
}

/// Two replicas share one MySQL; the one holding node-a's session is cut off from it for
/// longer than the node timeout, while the other still reaches it and, seeing no
/// heartbeat, marks node-a `down`. Once the first replica reaches the database again,
/// its heartbeats bring node-a back `up` on both replicas within 5 s, with its
/// endpoints, and the agent never reconnects.
#[test]
fn store_outage_of_one_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = TestDb::new(Backend::MySql, dir.path()) else {
        return;
    };
    let mut proxy = Proxy::start(mysql_target(&db.url));
    let config = dir.path().join("registry.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    let args = ["--config", config.to_str().expect("utf8")];
    let (d1, d2) = (dir.path().join("r1"), dir.path().join("r2"));
    std::fs::create_dir_all(&d1).expect("mkdir");
    std::fs::create_dir_all(&d2).expect("mkdir");
    let cut_off = Registry::start(&d1, &mysql_url_via(&db.url, proxy.addr), &args);
    let other = Registry::start(&d2, &db.url, &args);
    let ip = &test_ips(1)[0];
    // Only the first replica in its locator: the agent cannot fail over.
    let agent = Agent::start(dir.path(), &cut_off.addr(), "node-a", ip);
    other.wait_node("node-a", "up", 20 * S, |n| n["state"] == "up");
    other.apply(
        "app = \"demo\"\nserver = \"svc\"\nnodes = [\"node-a\"]\ncommand = [\"sleep\", \"1000\"]\n\
         [[adapters]]\nname = \"Main\"\nport = \"auto\"\n",
    );
    for r in [&cut_off, &other] {
        wait_until("the endpoint listed", 30 * S, || {
            let nodes = endpoint_nodes(r)?;
            if nodes == ["node-a"] {
                Ok(())
            } else {
                Err(format!("{nodes:?}"))
            }
        });
    }
    let before = other.node("node-a").expect("node-a");

    proxy.cut();
    other.wait_node("node-a", "down: its heartbeats stopped", 20 * S, |n| {
        n["state"] == "down"
    });
    assert_eq!(
        endpoint_nodes(&cut_off).expect("endpoints"),
        ["node-a"],
        "the replica cut off serves discovery from memory"
    );

    proxy.resume();
    let back_at = Instant::now();
    let after = other.wait_node("node-a", "up again", 20 * S, |n| n["state"] == "up");
    for r in [&other, &cut_off] {
        wait_until("the endpoint listed again", 20 * S, || {
            let nodes = endpoint_nodes(r)?;
            if nodes == ["node-a"] {
                Ok(())
            } else {
                Err(format!("{nodes:?}"))
            }
        });
    }
    let took = back_at.elapsed();
    eprintln!("node-a up with its endpoint on both replicas {took:?} after the database was back");
    assert!(took <= BACK_WITHIN, "back after {took:?}");
    assert_eq!(
        before["connected_at_ms"], after["connected_at_ms"],
        "the agent kept its session"
    );
    assert_eq!(agent.log_text().matches("session open").count(), 1);
}
