//! A bad release never leaves a service dead: a release that cannot be installed (its
//! download fails verification) while the instance is restarting, while its process
//! crashes, or while the agent itself restarts, leaves the previous release running with
//! the install error reported; a patch to it fails and leaves the old release running.

use std::time::Duration;

use corral_tests::packages::{Entry, release, sha256, tar_gz};
use corral_tests::{Agent, Backend, Registry, TestDb, alive, wait_until};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;

const S: Duration = Duration::from_secs(1);

struct Fleet {
    registry: Registry,
    agent: Agent,
    /// More nodes: node-b, ...
    others: Vec<Agent>,
    db: TestDb,
    /// Holds the registry's and agents' files until the fleet is dropped.
    _dir: tempfile::TempDir,
}

fn fleet(registry_args: &[&str]) -> Fleet {
    fleet_of(1, registry_args)
}

fn fleet_of(nodes: usize, registry_args: &[&str]) -> Fleet {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let registry = Registry::start(dir.path(), &db.url, registry_args);
    let ips = corral_tests::test_ips(nodes);
    let mut agents: Vec<Agent> = ips
        .iter()
        .zip(["node-a", "node-b", "node-c"])
        .map(|(ip, node)| Agent::start(dir.path(), &registry.addr(), node, ip))
        .collect();
    for a in &agents {
        registry.wait_node(&a.node, "up", 20 * S, |n| n["state"] == "up");
    }
    let agent = agents.remove(0);
    Fleet {
        registry,
        agent,
        others: agents,
        db,
        _dir: dir,
    }
}

fn upload(f: &Fleet, version: &str, bytes: &[u8]) {
    f.registry.must_upload("demo.app", version, bytes);
}

/// Garbles the last chunk of a stored package behind the registry's back, as a disk or
/// a bug could: the agent's download then fails its sha256 check.
fn corrupt_last_chunk(db_url: &str, version: &str) {
    use sqlx::Connection;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(db_url)
            .await
            .expect("sqlite");
        let done = sqlx::query(
            "UPDATE package_chunks SET data = randomblob(length(data)) \
             WHERE app = 'demo' AND server = 'app' AND version = ?1 AND seq = \
             (SELECT MAX(seq) FROM package_chunks WHERE app = 'demo' AND server = 'app' AND version = ?1)",
        )
        .bind(version)
        .execute(&mut conn)
        .await
        .expect("corrupt a chunk");
        assert_eq!(done.rows_affected(), 1, "one chunk of {version} garbled");
    });
}

fn app_spec(version: &str) -> String {
    app_spec_on(&["node-a"], version)
}

fn app_spec_on(nodes: &[&str], version: &str) -> String {
    let nodes: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
    format!(
        "app = \"demo\"\nserver = \"app\"\nnodes = [{}]\ncommand = [\"bin/server\"]\npackage = \"{version}\"\n\
         [restart]\nmin_uptime = \"1s\"\n[stop]\ntimeout = \"10s\"\n",
        nodes.join(", ")
    )
}

/// A release whose process takes about 3 s to stop on SIGTERM: time for a new spec to
/// arrive while it is stopping.
fn slow_to_stop(version: &str) -> Vec<u8> {
    let script = format!(
        "#!/bin/sh\necho \"version {version} in $PWD\"\ntrap 'sleep 3; exit 0' TERM\nwhile :; do sleep 0.1; done\n"
    );
    tar_gz(&[
        Entry::Dir("bin"),
        Entry::File("bin/server", script.as_bytes(), 0o755),
    ])
}

/// A release of about `mib` MiB, so that its download takes a while at a capped rate.
fn big(version: &str, mib: usize) -> Vec<u8> {
    let noise: Vec<u8> = (0..mib << 20).map(|_| rand::random::<u8>()).collect();
    let script = format!("#!/bin/sh\necho \"version {version}\"\nexec sleep 1000\n");
    tar_gz(&[
        Entry::Dir("bin"),
        Entry::File("bin/server", script.as_bytes(), 0o755),
        Entry::File("data.bin", &noise, 0o644),
    ])
}

fn pid(i: &Value) -> u32 {
    i["pid"].as_u64().unwrap_or(0) as u32
}

fn on_version(f: &Fleet, version: &str) -> Value {
    on_version_at(f, "node-a", version)
}

fn on_version_at(f: &Fleet, node: &str, version: &str) -> Value {
    f.registry.wait_instance(
        "demo.app",
        node,
        &format!("running {version}"),
        30 * S,
        |i| i["state"] == "running" && i["version"] == version && pid(i) != 0,
    )
}

/// Waits until the failed install of `bad` is reported and the instance has settled;
/// then it must run `good` again, with the install error in `last_error` and the
/// install state.
fn falls_back(f: &Fleet, bad: &str, good: &str) -> Value {
    let i = f.registry.wait_instance(
        "demo.app",
        "node-a",
        &format!("the failed install of {bad} reported, the instance settled"),
        60 * S,
        |i| {
            i["last_error"].as_str().is_some_and(|e| e.contains(bad))
                && !matches!(i["state"].as_str(), Some("starting" | "stopping"))
        },
    );
    assert_eq!(
        (i["state"].as_str(), i["version"].as_str()),
        (Some("running"), Some(good)),
        "the previous release runs: {i}"
    );
    assert!(alive(pid(&i)), "its process is alive: {i}");
    let err = i["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("sha256 mismatch"), "the install error: {i}");
    assert_eq!(i["install"]["version"], bad, "{i}");
    assert_eq!(i["install"]["state"], "failed", "{i}");
    i
}

fn killpg_of(pid: u32) {
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// A new spec whose release cannot be installed arrives while the instance is restarting:
/// the instance starts its previous release again instead of staying `failed` with no
/// process; going back to that release's spec (what a rollout's revert does) restarts
/// nothing.
#[test]
fn a_bad_release_during_a_restart_starts_the_previous_release_again() {
    let f = fleet(&[]);
    upload(&f, "1.0.0", &slow_to_stop("1.0.0"));
    upload(&f, "2.0.0", &release("2.0.0", false));
    corrupt_last_chunk(&f.db.url, "2.0.0");
    f.registry.apply(&app_spec("1.0.0"));
    let before = on_version(&f, "1.0.0");

    let out = f.registry.cli(&["server", "restart", "demo.app"]);
    assert!(out.status.success());
    f.registry
        .wait_instance("demo.app", "node-a", "stopping", 10 * S, |i| {
            i["state"] == "stopping"
        });
    f.registry.apply(&app_spec("2.0.0"));
    let after = falls_back(&f, "2.0.0", "1.0.0");
    assert_ne!(pid(&after), pid(&before), "it was restarted");

    // Back to the spec it runs: nothing restarts.
    let events = f.registry.events("demo.app").len();
    f.registry.apply(&app_spec("1.0.0"));
    // A barrier: once the agent runs this, it has handled the spec applied before it.
    f.registry.apply(
        "app = \"demo\"\nserver = \"probe\"\nnodes = [\"node-a\"]\ncommand = [\"sleep\", \"1000\"]\n",
    );
    f.registry
        .wait_instance("demo.probe", "node-a", "running", 20 * S, |i| {
            i["state"] == "running"
        });
    let now = on_version(&f, "1.0.0");
    assert_eq!(
        pid(&now),
        pid(&after),
        "the running release was not restarted"
    );
    let new_events: Vec<Value> = f.registry.events("demo.app")[events..].to_vec();
    assert!(new_events.is_empty(), "no state change: {new_events:?}");
}

/// The running process crashes while the next release downloads: it is restarted on its
/// own release at once, not after the download, and keeps running when that download
/// fails.
#[test]
fn a_crash_while_a_bad_release_downloads_restarts_the_previous_release_at_once() {
    let f = fleet(&["--download-rate", "512 KiB"]);
    upload(&f, "1.0.0", &release("1.0.0", false));
    let bad = big("2.0.0", 3);
    upload(&f, "2.0.0", &bad);
    corrupt_last_chunk(&f.db.url, "2.0.0");
    f.registry.apply(&app_spec("1.0.0"));
    let before = on_version(&f, "1.0.0");

    f.registry.apply(&app_spec("2.0.0"));
    let partial = f
        .agent
        .data_dir
        .join("cache")
        .join(format!("{}.partial", sha256(&bad)));
    wait_until(
        "the download of 2.0.0 under way",
        30 * S,
        || match std::fs::metadata(&partial) {
            Ok(m) if m.len() > 0 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    killpg_of(pid(&before));
    let restarted =
        f.registry
            .wait_instance("demo.app", "node-a", "restarted on 1.0.0", 30 * S, |i| {
                i["state"] == "running" && pid(i) != 0 && pid(i) != pid(&before)
            });
    assert_eq!(restarted["version"], "1.0.0", "{restarted}");
    assert!(
        partial.exists(),
        "restarted while the download still ran, not after it: {restarted}"
    );
    let after = falls_back(&f, "2.0.0", "1.0.0");
    assert_eq!(pid(&after), pid(&restarted), "and left running");
}

/// The agent is killed while a bad release downloads, and the service dies while no
/// agent watches: the next agent starts the previous release again, resumes the
/// download, and keeps the previous release running when it fails.
#[test]
fn an_agent_restart_while_a_bad_release_downloads_keeps_the_previous_release() {
    let mut f = fleet(&["--download-rate", "512 KiB"]);
    upload(&f, "1.0.0", &release("1.0.0", false));
    let bad = big("2.0.0", 3);
    upload(&f, "2.0.0", &bad);
    corrupt_last_chunk(&f.db.url, "2.0.0");
    f.registry.apply(&app_spec("1.0.0"));
    let before = on_version(&f, "1.0.0");

    f.registry.apply(&app_spec("2.0.0"));
    let partial = f
        .agent
        .data_dir
        .join("cache")
        .join(format!("{}.partial", sha256(&bad)));
    wait_until(
        "the download of 2.0.0 under way",
        30 * S,
        || match std::fs::metadata(&partial) {
            Ok(m) if m.len() > 0 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    f.agent.kill();
    killpg_of(pid(&before));
    f.agent.restart();
    let after = falls_back(&f, "2.0.0", "1.0.0");
    assert_ne!(pid(&after), pid(&before));
}

/// A patch to a release that cannot be installed fails, names the install error, and
/// leaves the service on its release: same process, `rollout status` failed.
#[test]
fn a_patch_to_a_bad_release_fails_and_the_old_release_keeps_running() {
    let f = fleet(&[]);
    upload(&f, "1.0.0", &release("1.0.0", false));
    upload(&f, "2.0.0", &release("2.0.0", false));
    corrupt_last_chunk(&f.db.url, "2.0.0");
    f.registry.apply(&app_spec("1.0.0"));
    let before = on_version(&f, "1.0.0");

    let out = f.registry.cli(&[
        "patch",
        "demo.app",
        "--version",
        "2.0.0",
        "--min-healthy",
        "1s",
        "--deadline",
        "30s",
    ]);
    assert!(!out.status.success(), "a patch to a bad release fails");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("demo.app@node-a") && err.contains("sha256 mismatch"),
        "names the instance and the install error: {err}"
    );
    let rollouts = f
        .registry
        .json(&["rollout", "list", "--server", "demo.app"]);
    assert_eq!(rollouts[0]["state"], "failed", "{rollouts}");
    let after = on_version(&f, "1.0.0");
    assert_eq!(pid(&after), pid(&before), "the old release kept running");
    assert_eq!(after["install"]["state"], "failed", "{after}");
    let spec = f.registry.json(&["server", "status", "demo.app"]);
    assert_eq!(spec[0]["version"], "1.0.0");
}

/// A release that was downloaded ahead of time but cannot be installed when its batch
/// switches (here: its unpacked release and cached package were damaged on the node
/// meanwhile): the agent keeps the old release running and reports the install error,
/// the rollout fails at once naming it (not at its deadline), and its revert to the old
/// release restarts nothing.
#[test]
fn a_release_that_cannot_be_installed_at_the_switch_is_reverted_without_a_restart() {
    let f = fleet_of(2, &[]);
    let good = release("2.0.0", false);
    upload(&f, "1.0.0", &release("1.0.0", false));
    upload(&f, "2.0.0", &good);
    f.registry
        .apply(&app_spec_on(&["node-a", "node-b"], "1.0.0"));
    on_version_at(&f, "node-a", "1.0.0");
    let before = on_version_at(&f, "node-b", "1.0.0");

    let patch = {
        let mut cmd = std::process::Command::new(corral_tests::bin("registry"));
        cmd.args([
            "patch",
            "demo.app",
            "--version",
            "2.0.0",
            "--batch",
            "1",
            "--min-healthy",
            "3s",
            "--deadline",
            "40s",
            "--addr",
            &f.registry.addr(),
        ]);
        std::thread::spawn(move || cmd.output().expect("patch"))
    };
    // While node-a proves itself on 2.0.0, node-b waits with 2.0.0 downloaded.
    wait_until("node-a on 2.0.0, node-b waiting", 30 * S, || {
        let r = &f.registry.json(&["rollout", "list"])[0];
        let phase = |n: &str| {
            corral_tests::find(&r["instances"], "node", n).and_then(|i| i["phase"].as_str())
        };
        match (phase("node-a"), phase("node-b")) {
            (Some("starting"), Some("ready")) => Ok(()),
            _ => Err(r.to_string()),
        }
    });
    let dir = f.others[0].instance_dir("demo.app");
    std::fs::remove_file(dir.join("releases/2.0.0.sha256")).expect("release marker");
    std::fs::remove_dir_all(dir.join("releases/2.0.0")).expect("release");
    let cached = f.others[0].data_dir.join("cache").join(sha256(&good));
    std::fs::write(&cached, vec![0u8; good.len()]).expect("damage the cached package");

    let out = patch.join().expect("patch thread");
    assert!(!out.status.success(), "the patch fails");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("demo.app@node-b") && err.contains("cannot install 2.0.0"),
        "names the instance and the install error: {err}"
    );
    let r = &f.registry.json(&["rollout", "list"])[0];
    assert_eq!(r["state"], "failed", "{r}");
    let b = on_version_at(&f, "node-b", "1.0.0");
    assert_eq!(
        pid(&b),
        pid(&before),
        "node-b's old release was never stopped: {b}"
    );
    assert_eq!(b["install"]["state"], "failed", "{b}");
    assert!(
        b["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("2.0.0")),
        "{b}"
    );
    on_version_at(&f, "node-a", "2.0.0");
}
