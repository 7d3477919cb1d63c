//! Spec history (`registry server history|diff|revert`) and the small things operators
//! expect: `server start|stop|restart --wait`, `registry completions`, `node show` with
//! the node's instances.

use std::process::{Command, Output};
use std::time::Duration;

use corral_registry::store::{Action, Store};
use corral_tests::fleet::{Fleet, instances};
use corral_tests::packages::release;
use corral_tests::{Backend, TestDb, backend_tests, bin};

const S: Duration = Duration::from_secs(1);

fn text(out: &Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs a CLI command that must succeed; its stdout.
fn ok(f: &Fleet, args: &[&str]) -> String {
    let (ok, stdout, stderr) = text(&f.registry.cli(args));
    assert!(ok, "registry {args:?} failed: {stderr}{stdout}");
    stdout
}

fn spec(name: &str, nodes: &[&str], package: &str, greeting: &str) -> String {
    let nodes: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
    format!(
        "app = \"demo\"\nserver = \"{name}\"\nnodes = [{}]\ncommand = [\"bin/server\"]\n\
         package = \"{package}\"\n[env]\nGREETING = \"{greeting}\"\n[restart]\nmin_uptime = \"1s\"\n",
        nodes.join(", ")
    )
}

fn upload(f: &Fleet, server: &str, versions: &[&str]) {
    for v in versions {
        f.registry.must_upload(server, v, &release(v, false));
    }
}

/// (version, action, summary) of every kept version.
fn history(f: &Fleet, server: &str) -> Vec<(u64, String, String)> {
    let v = f.registry.json(&["server", "history", server]);
    v["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|e| {
            (
                e["version"].as_u64().expect("version"),
                e["action"].as_str().expect("action").to_string(),
                e["summary"].as_str().expect("summary").to_string(),
            )
        })
        .collect()
}

fn actions(f: &Fleet, server: &str) -> Vec<String> {
    history(f, server).into_iter().map(|v| v.1).collect()
}

/// The value of `name` in a process's environment.
fn env_of(pid: u64, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
}

/// apply, apply, patch, rollback, expand: five versions in order; a diff between two
/// shows the changed lines; a dry-run revert changes nothing; a revert stores a new
/// version equal to the old one and the instances converge to it.
#[test]
fn history_diff_and_revert_round_trip() {
    let f = Fleet::start(2);
    upload(&f, "demo.hist", &["1.0.0", "2.0.0"]);
    let out = f.registry.apply(&spec("hist", &["node-a"], "1.0.0", "one"));
    assert!(
        text(&out).1.contains("stored as spec version 1"),
        "{}",
        text(&out).1
    );
    let v2 = spec("hist", &["node-a"], "1.0.0", "two");
    f.registry.apply(&v2);
    let (_, again, _) = text(&f.registry.apply(&v2));
    assert!(
        again.contains("no change (no new spec version stored)"),
        "{again}"
    );
    f.registry
        .wait_instance("demo.hist", "node-a", "running 1.0.0", 30 * S, |i| {
            i["state"] == "running" && i["version"] == "1.0.0"
        });
    ok(
        &f,
        &[
            "patch",
            "demo.hist",
            "--version",
            "2.0.0",
            "--min-healthy",
            "1s",
        ],
    );
    ok(&f, &["rollback", "demo.hist", "--to", "1.0.0"]);
    ok(&f, &["server", "expand", "demo.hist", "--to", "node-b"]);

    let kept = history(&f, "demo.hist");
    assert_eq!(
        kept.iter()
            .map(|(v, a, _)| (*v, a.as_str()))
            .collect::<Vec<_>>(),
        [
            (1, "apply"),
            (2, "apply"),
            (3, "patch"),
            (4, "rollback"),
            (5, "expand")
        ],
        "{kept:?}"
    );
    assert_eq!(kept[2].2, "release 2.0.0, 1 instance");
    assert_eq!(kept[4].2, "release 1.0.0, 2 instances");
    let table = ok(&f, &["server", "history", "demo.hist"]);
    assert!(
        table.contains("VERSION") && table.contains("demo.hist: current version 5"),
        "{table}"
    );

    let diff = ok(&f, &["server", "diff", "demo.hist", "1", "2"]);
    assert!(
        diff.contains("--- demo.hist version 1\n+++ demo.hist version 2\n")
            && diff.contains("-env = { GREETING = \"one\" }")
            && diff.contains("+env = { GREETING = \"two\" }"),
        "{diff}"
    );
    assert!(
        !diff.lines().any(|l| l.starts_with("-package")),
        "only changed lines: {diff}"
    );
    // The rollback went back to what version 2 was.
    let same = ok(&f, &["server", "diff", "demo.hist", "2", "4"]);
    assert_eq!(same, "demo.hist: versions 2 and 4 are identical\n");
    let to_current = f.registry.json(&["server", "diff", "demo.hist", "4"]);
    assert_eq!(to_current["to"], 5, "{to_current}");
    assert!(
        to_current["diff"]
            .as_str()
            .expect("diff")
            .contains("+nodes = [\"node-a\", \"node-b\"]"),
        "{to_current}"
    );

    // A dry run prints the diff from the current spec and changes nothing.
    let dry = ok(&f, &["server", "revert", "demo.hist", "1", "--dry-run"]);
    assert!(
        dry.contains("dry run, nothing changed")
            && dry.contains("-env = { GREETING = \"two\" }")
            && dry.contains("+env = { GREETING = \"one\" }")
            && dry.contains("-nodes = [\"node-a\", \"node-b\"]")
            && dry.contains("and would:\n  remove instances on node-b (they would be stopped)"),
        "{dry}"
    );
    assert_eq!(
        history(&f, "demo.hist").len(),
        5,
        "a dry run stores nothing"
    );
    assert_eq!(
        instances(&f.registry, "demo.hist").expect("status").len(),
        2
    );

    let reverted = ok(&f, &["server", "revert", "demo.hist", "1"]);
    assert!(
        reverted.contains("reverted demo.hist to version 1")
            && reverted.contains("stored as version 6"),
        "{reverted}"
    );
    assert_eq!(
        history(&f, "demo.hist").last().map(|v| (v.0, v.1.clone())),
        Some((6, "revert to 1".to_string()))
    );
    let same = ok(&f, &["server", "diff", "demo.hist", "1", "6"]);
    assert_eq!(same, "demo.hist: versions 1 and 6 are identical\n");
    let exported = ok(&f, &["server", "export", "demo.hist"]);
    assert!(
        exported.contains("nodes = [\"node-a\"]") && exported.contains("\"one\""),
        "{exported}"
    );
    // The instances converge: node-b's goes, node-a's runs with version 1's environment.
    corral_tests::wait_until("demo.hist back to version 1", 30 * S, || {
        let list = instances(&f.registry, "demo.hist")?;
        let [i] = list.as_slice() else {
            return Err(format!("{list:?}"));
        };
        let pid = i["pid"].as_u64().unwrap_or(0);
        let greeting = env_of(pid, "GREETING");
        if i["node"] == "node-a"
            && i["state"] == "running"
            && i["version"] == "1.0.0"
            && greeting.as_deref() == Some("one")
        {
            Ok(())
        } else {
            Err(format!("{i} GREETING={greeting:?}"))
        }
    });
    // Reverting to what is in force is no change and no version.
    let none = ok(&f, &["server", "revert", "demo.hist", "6"]);
    assert!(none.contains("no change"), "{none}");
    assert_eq!(history(&f, "demo.hist").len(), 6);

    // The history outlives the server; a revert creates it again, numbering on.
    ok(&f, &["server", "undeploy", "demo.hist"]);
    let gone = ok(&f, &["server", "history", "demo.hist"]);
    assert!(
        gone.contains("demo.hist is not deployed now (removed after version 6)"),
        "{gone}"
    );
    assert_eq!(
        f.registry.json(&["server", "history", "demo.hist"])["deployed"],
        false
    );
    let back = ok(&f, &["server", "revert", "demo.hist", "5"]);
    assert!(
        back.contains("create server demo.hist") && back.contains("stored as version 7"),
        "{back}"
    );
    assert_eq!(
        history(&f, "demo.hist").last().map(|v| (v.0, v.1.clone())),
        Some((7, "revert to 5".to_string()))
    );
    assert_eq!(
        instances(&f.registry, "demo.hist").expect("status").len(),
        2
    );
}

/// A revert whose package or secret was removed since is refused, naming it, and changes
/// nothing; so is a version that is not kept.
#[test]
fn a_revert_whose_package_is_gone_is_refused() {
    let f = Fleet::start(1);
    upload(&f, "demo.gone", &["1.0.0", "3.0.0"]);
    f.registry.apply(&spec("gone", &["node-a"], "3.0.0", "x"));
    f.registry.apply(&spec("gone", &["node-a"], "1.0.0", "x"));
    f.registry
        .wait_instance("demo.gone", "node-a", "running 1.0.0", 30 * S, |i| {
            i["state"] == "running" && i["version"] == "1.0.0"
        });
    corral_tests::wait_until("package 3.0.0 removed", 30 * S, || {
        let (ok, out, err) = text(&f.registry.cli(&["package", "remove", "demo.gone", "3.0.0"]));
        if ok {
            Ok(())
        } else {
            Err(format!("{out}{err}"))
        }
    });
    for extra in [&["--dry-run"][..], &[]] {
        let (ok, out, err) = text(
            &f.registry
                .cli(&[&["server", "revert", "demo.gone", "1"], extra].concat()),
        );
        assert!(!ok, "{out}");
        assert!(
            err.contains("demo.gone version 1")
                && err.contains("demo.gone 3.0.0 has not been uploaded"),
            "{err}"
        );
    }
    assert_eq!(actions(&f, "demo.gone"), ["apply", "apply"]);
    let i = f
        .registry
        .instance("demo.gone", "node-a")
        .expect("instance");
    assert_eq!(i["version"], "1.0.0", "{i}");

    // A secret that version 1 needs was removed since: refused too, nothing changed.
    let base =
        "app = \"demo\"\nserver = \"sec\"\nnodes = [\"node-a\"]\ncommand = [\"sleep\", \"1000\"]\n";
    let dir = f.dir.path();
    corral_tests::secrets::put_ok(&f.registry, dir, "demo.sec", "tok", &["--all"], "v");
    f.registry.apply(&format!(
        "{base}[[files]]\nname = \"tok.pem\"\nsecret = \"tok\"\n"
    ));
    f.registry.apply(base);
    ok(&f, &["secret", "rm", "demo.sec", "tok", "--all"]);
    let (ok_, out, err) = text(&f.registry.cli(&["server", "revert", "demo.sec", "1"]));
    assert!(
        !ok_ && err.contains("demo.sec version 1") && err.contains("secret \"tok\" is not set"),
        "{out}{err}"
    );
    assert_eq!(actions(&f, "demo.sec"), ["apply", "apply"]);

    let (ok, _, err) = text(&f.registry.cli(&["server", "revert", "demo.gone", "9"]));
    assert!(
        !ok && err.contains("demo.gone has no spec version 9: versions 1 to 2 are kept"),
        "{err}"
    );
    let (ok, _, err) = text(&f.registry.cli(&["server", "diff", "demo.gone", "0"]));
    assert!(!ok && err.contains("0"), "{err}");
    let (ok, _, err) = text(&f.registry.cli(&["server", "history", "demo.nothing"]));
    assert!(!ok && err.contains("not found"), "{err}");
}

fn command_spec(name: &str, command: &str, extra: &str) -> String {
    format!(
        "app = \"demo\"\nserver = \"{name}\"\nnodes = [\"node-a\"]\ncommand = [{command}]\n{extra}"
    )
}

/// `--wait` waits for the result: restart, stop and start of a steady server exit 0 once
/// done; a server whose command exits at once fails, naming the instance and the cause.
/// `node show` lists the node's instances.
#[test]
fn wait_for_the_result_and_node_show() {
    let f = Fleet::start(1);
    f.registry
        .apply(&command_spec("steady", "\"sleep\", \"1000\"", ""));
    let out = ok(&f, &["server", "restart", "demo.steady", "--wait"]);
    assert!(
        out.contains("demo.steady: running again on node-a"),
        "{out}"
    );
    let out = ok(
        &f,
        &[
            "server",
            "stop",
            "demo.steady",
            "--wait",
            "--timeout",
            "30s",
        ],
    );
    assert!(out.contains("demo.steady: stopped on node-a"), "{out}");
    let i = f
        .registry
        .instance("demo.steady", "node-a")
        .expect("status");
    assert_eq!(i["state"], "stopped", "stopped when --wait returns: {i}");
    ok(
        &f,
        &[
            "server",
            "start",
            "demo.steady",
            "--wait",
            "--timeout",
            "30s",
        ],
    );
    let i = f
        .registry
        .instance("demo.steady", "node-a")
        .expect("status");
    assert_eq!(i["state"], "running", "running when --wait returns: {i}");

    // A server that keeps failing quickly: --wait gives up at --timeout, naming it.
    f.registry.apply(&command_spec(
        "flaky",
        "\"sh\", \"-c\", \"exit 4\"",
        "[restart]\ninitial_delay = \"500ms\"\n",
    ));
    let (ok_, out, err) = text(&f.registry.cli(&[
        "server",
        "restart",
        "demo.flaky",
        "--wait",
        "--timeout",
        "2s",
    ]));
    assert!(!ok_, "{out}");
    assert!(
        err.contains(
            "timed out after 2s waiting for an instance to be running again: demo.flaky@node-a:"
        ),
        "{err}"
    );

    // --timeout needs --wait: a usage error.
    let out = f
        .registry
        .cli(&["server", "start", "demo.steady", "--timeout", "5s"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).2);

    f.registry.apply(&command_spec(
        "crashy",
        "\"sh\", \"-c\", \"echo boom >&2; exit 3\"",
        "[restart]\nmax_quick_failures = 2\ninitial_delay = \"100ms\"\n",
    ));
    let (ok_, out, err) = text(&f.registry.cli(&[
        "server",
        "restart",
        "demo.crashy",
        "--wait",
        "--timeout",
        "60s",
    ]));
    assert!(!ok_, "a crash loop fails the wait: {out}");
    assert!(
        err.contains("demo.crashy@node-a did not reach running again: it is crash-looping"),
        "{err}"
    );

    // node show: the node's instances with their ordinal, state and release.
    let shown = ok(&f, &["node", "show", "node-a"]);
    let (_, table) = shown.split_once("\n\n").expect("node, then instances");
    let header = table.lines().next().expect("header");
    for column in [
        "SERVER", "ORDINAL", "STATE", "HEALTH", "VERSION", "CPU", "MEMORY", "PIDS",
    ] {
        assert!(header.contains(column), "{column}: {table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("demo.steady ") && l.contains("running")),
        "{table}"
    );
    let node = f.registry.json(&["node", "show", "node-a"]);
    let steady = corral_tests::find(&node["instances"], "server", "demo.steady")
        .unwrap_or_else(|| panic!("{node}"));
    assert_eq!(steady["ordinal"], 0, "{steady}");
    assert_eq!(steady["state"], "running", "{steady}");
    assert!(steady.get("usage").is_some(), "{steady}");
}

/// The completion scripts: bash's parses with `bash -n`, the others are written.
#[test]
fn completions() {
    let dir = tempfile::tempdir().expect("tempdir");
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin("registry"))
            .args(["completions", shell])
            .output()
            .expect("registry completions");
        let (ok, script, err) = text(&out);
        assert!(ok && script.contains("registry"), "{shell}: {err}");
        if shell == "bash" {
            let path = dir.path().join("registry.bash");
            std::fs::write(&path, &script).expect("write");
            let check = Command::new("bash")
                .arg("-n")
                .arg(&path)
                .output()
                .expect("bash -n");
            assert!(check.status.success(), "{}", text(&check).2);
            assert!(script.contains("revert"), "the new commands are in it");
        }
    }
    let out = Command::new(bin("registry"))
        .args(["completions", "powershell"])
        .output()
        .expect("registry completions");
    assert_eq!(out.status.code(), Some(2));
}

fn store_spec(greeting: usize) -> corral_registry::spec::Spec {
    let toml = format!(
        "app = \"demo\"\nserver = \"many\"\nnodes = [\"node-a\"]\ncommand = [\"sleep\", \"1000\"]\n\
         [env]\nN = \"{greeting}\"\n"
    );
    corral_registry::spec::parse(&toml, "test").expect("spec")
}

backend_tests! {
    the_newest_50_versions_are_kept,
}

/// 55 applies keep versions 6-55; an apply that changes nothing stores none; the history
/// outlives the server, and its numbers go on when it is created again.
fn the_newest_50_versions_are_kept(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = TestDb::new(backend, dir.path()) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = Store::open(&db.url).await.expect("open");
        for n in 1..=55 {
            store
                .apply_spec(&store_spec(n), 1000 + n as i64)
                .await
                .expect("apply");
        }
        store
            .apply_spec(&store_spec(55), 2000)
            .await
            .expect("apply");
        let kept = store.spec_history("demo", "many").await.expect("history");
        assert_eq!(kept.len(), 50);
        assert_eq!(kept.first().map(|v| v.version), Some(6));
        assert_eq!(kept.last().map(|v| v.version), Some(55));
        assert!(kept.iter().all(|v| v.action == "apply"));
        let last = kept.last().expect("last");
        assert!(last.spec_toml.contains("N = \"55\""), "{}", last.spec_toml);
        assert_eq!(last.summary, "command, 1 instance");
        assert!(
            store
                .spec_version("demo", "many", 5)
                .await
                .expect("read")
                .is_none()
        );

        store
            .control("demo", "many", None, Action::Undeploy)
            .await
            .expect("undeploy");
        assert!(
            store
                .get_server("demo", "many")
                .await
                .expect("read")
                .is_none()
        );
        assert_eq!(
            store
                .spec_history("demo", "many")
                .await
                .expect("history")
                .len(),
            50
        );
        store.apply_spec(&store_spec(1), 3000).await.expect("apply");
        let latest = store
            .latest_spec_version("demo", "many")
            .await
            .expect("read")
            .expect("a version");
        assert_eq!((latest.version, latest.at_ms), (56, 3000));
        let kept: Vec<i64> = store
            .spec_history("demo", "many")
            .await
            .expect("history")
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(kept, (7..=56).collect::<Vec<_>>());
        store.close().await;
    });
}
