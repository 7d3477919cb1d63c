//! Roles and the audit log: a viewer token reads everything but secrets and changes
//! nothing; every change made with a named admin token, and every refused call, is in
//! the audit log with the token's name, what it acted on and how it ended.

use std::process::{Command, Output};
use std::time::Duration;

use corral_tests::exits::exits_within;
use corral_tests::fleet::Fleet;
use corral_tests::packages::{release, write};
use corral_tests::{Backend, Registry, TestDb, bin, http_get, wait_until};
use serde_json::Value;

const S: Duration = Duration::from_secs(1);
const ADMIN: &str = "ops-s3cret";
const VIEWER: &str = "eve-s3cret";

fn fleet() -> Fleet {
    Fleet::start_with(
        1,
        &[
            "--admin-token",
            &format!("ops:{ADMIN}"),
            "--viewer-token",
            &format!("eve:{VIEWER}"),
        ],
    )
}

/// The CLI with an explicit token (or none).
fn cli(registry: &Registry, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("registry"));
    cmd.args(args)
        .arg("--addr")
        .arg(registry.addr())
        .env_remove("CORRAL_TOKEN");
    if let Some(t) = token {
        cmd.env("CORRAL_TOKEN", t);
    }
    cmd.output().expect("run registry CLI")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn must(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what}: {}", stderr(&out));
    out
}

fn spec(dir: &std::path::Path, version: &str) -> String {
    let path = dir.join(format!("spec-{version}.toml"));
    std::fs::write(
        &path,
        format!(
            "app = \"demo\"\nserver = \"app\"\nnodes = [\"node-a\"]\ncommand = [\"bin/server\"]\n\
             package = \"{version}\"\n[restart]\nmin_uptime = \"1s\"\n[stop]\ntimeout = \"2s\"\n"
        ),
    )
    .expect("write spec");
    path.display().to_string()
}

fn package(dir: &std::path::Path, version: &str) -> String {
    write(dir, &format!("app-{version}.tgz"), &release(version, false))
        .display()
        .to_string()
}

fn secret_file(dir: &std::path::Path) -> String {
    let path = dir.join("value.txt");
    std::fs::write(&path, "TOP-SECRET-VALUE").expect("write secret");
    path.display().to_string()
}

/// `registry audit -o json` (with `extra` filters) as the admin, once it holds a record
/// that `want` accepts.
fn audit_until(
    r: &Registry,
    extra: &[&str],
    what: &str,
    want: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    audit_as(r, ADMIN, extra, what, want)
}

fn audit_as(
    r: &Registry,
    token: &str,
    extra: &[&str],
    what: &str,
    want: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    wait_until(what, 20 * S, || {
        let out = cli(
            r,
            Some(token),
            &[&["audit", "-o", "json", "-n", "10000"][..], extra].concat(),
        );
        if !out.status.success() {
            return Err(stderr(&out));
        }
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let records = v.as_array().cloned().unwrap_or_default();
        if want(&records) {
            Ok(records)
        } else {
            Err(format!("{records:#?}"))
        }
    })
}

fn metrics(r: &Registry) -> String {
    http_get(
        format!("127.0.0.1:{}", r.http_port).parse().expect("addr"),
        "/metrics",
    )
    .expect("metrics")
}

/// The value of one sample of `/metrics`, 0 when absent.
fn sample(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_viewer_reads_everything_but_secrets_and_changes_nothing() {
    let f = fleet();
    let r = &f.registry;
    let dir = f.dir.path();
    let (spec1, pkg1, value) = (spec(dir, "1.0.0"), package(dir, "1.0.0"), secret_file(dir));
    let upload = |v: &str, pkg: &str| {
        vec![
            "package",
            "upload",
            pkg,
            "--server",
            "demo.app",
            "--version",
            v,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let up1 = upload("1.0.0", &pkg1);
    let up1: Vec<&str> = up1.iter().map(String::as_str).collect();
    must(cli(r, Some(ADMIN), &up1), "upload");
    must(cli(r, Some(ADMIN), &["apply", "-f", &spec1]), "apply");
    r.wait_instance("demo.app", "node-a", "running", 30 * S, |i| {
        i["state"] == "running"
    });
    let put = [
        "secret", "put", "demo.app", "token", "--all", "--file", &value,
    ];
    must(cli(r, Some(ADMIN), &put), "secret put");
    let pid = r.instance("demo.app", "node-a").expect("instance")["pid"].clone();

    let pkg2 = package(dir, "2.0.0");
    let up2 = upload("2.0.0", &pkg2);
    let up2: Vec<&str> = up2.iter().map(String::as_str).collect();
    // Every command that changes something, and the call it makes.
    let changes: Vec<(Vec<&str>, &str)> = vec![
        (vec!["apply", "-f", &spec1], "Apply"),
        (vec!["apply", "-f", &spec1, "--dry-run"], "Apply"),
        (vec!["server", "stop", "demo.app"], "ControlServer"),
        (vec!["server", "start", "demo.app"], "ControlServer"),
        (vec!["server", "restart", "demo.app"], "ControlServer"),
        (vec!["server", "undeploy", "demo.app"], "ControlServer"),
        (
            vec!["server", "expand", "demo.app", "--to", "node-b"],
            "Expand",
        ),
        (up2.clone(), "UploadPackage"),
        (
            vec!["package", "remove", "demo.app", "1.0.0"],
            "RemovePackage",
        ),
        (
            vec!["patch", "demo.app", "--version", "1.0.0"],
            "StartRollout",
        ),
        (vec!["rollback", "demo.app"], "StartRollout"),
        (vec!["server", "revert", "demo.app", "1"], "RevertServer"),
        (vec!["node", "remove", "node-a"], "RemoveNode"),
        (put.to_vec(), "PutSecret"),
        (
            vec!["secret", "rm", "demo.app", "token", "--all"],
            "RemoveSecret",
        ),
        (vec!["secret", "list"], "ListSecrets"),
    ];
    let before = sample(
        &metrics(r),
        "corral_registry_admin_refused_total{reason=\"permission_denied\",call=\"ControlServer\"}",
    );
    for (args, call) in &changes {
        let out = cli(r, Some(VIEWER), args);
        let err = stderr(&out);
        assert!(!out.status.success(), "viewer {args:?} succeeded");
        assert!(
            err.contains("token \"eve\" has the role viewer, which may not call")
                && err.contains(call),
            "viewer {args:?}: {err}"
        );
    }
    // Nothing changed: the same process runs, the package, node and secret are there.
    let i = r.instance("demo.app", "node-a").expect("instance");
    assert_eq!((&i["state"], &i["pid"]), (&Value::from("running"), &pid));
    let packages = r.json(&["package", "list"]);
    assert_eq!(packages.as_array().map(Vec::len), Some(1), "{packages}");
    assert!(r.node("node-a").is_some());
    let secrets = r.json(&["secret", "list"]);
    assert!(secrets.to_string().contains("token"), "{secrets}");
    assert!(
        r.json(&["rollout", "list"])
            .as_array()
            .is_some_and(Vec::is_empty)
    );

    // Every read but secrets.
    for args in [
        vec!["node", "list"],
        vec!["node", "show", "node-a"],
        vec!["server", "list"],
        vec!["server", "status", "demo.app"],
        vec!["server", "export", "demo.app"],
        vec!["server", "history", "demo.app"],
        vec!["server", "diff", "demo.app", "1"],
        vec!["logs", "demo.app", "-n", "5"],
        vec!["package", "list"],
        vec!["rollout", "list"],
        vec!["events"],
        vec!["audit"],
    ] {
        must(cli(r, Some(VIEWER), &args), &format!("viewer {args:?}"));
    }

    // Discovery takes any valid token.
    let find = cli(r, Some(VIEWER), &["endpoints", "demo.app.Main"]);
    assert!(!stderr(&find).contains("token"), "{}", stderr(&find));

    // Each refusal is in the audit log, and counted.
    let refused = audit_until(r, &["--caller", "eve"], "the viewer's refusals", |rs| {
        rs.len() == changes.len()
    });
    for (rec, (args, call)) in refused.iter().zip(&changes) {
        assert_eq!(rec["call"], *call, "{args:?}: {rec}");
        assert_eq!(rec["outcome"], "refused", "{rec}");
        assert_eq!(rec["role"], "viewer", "{rec}");
        assert!(
            rec["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("127.0.0.1:")),
            "{rec}"
        );
    }
    let after = sample(
        &metrics(r),
        "corral_registry_admin_refused_total{reason=\"permission_denied\",call=\"ControlServer\"}",
    );
    assert_eq!(after, before + 4);
    assert!(!r.json(&["audit"]).to_string().contains("TOP-SECRET-VALUE"));
}

#[test]
fn every_change_is_audited_with_the_tokens_name() {
    let f = fleet();
    let r = &f.registry;
    let dir = f.dir.path();
    let (spec1, pkg1, pkg2, value) = (
        spec(dir, "1.0.0"),
        package(dir, "1.0.0"),
        package(dir, "2.0.0"),
        secret_file(dir),
    );
    // (command, call, target, outcome)
    let steps: Vec<(Vec<&str>, &str, &str, &str)> = vec![
        (
            vec![
                "package",
                "upload",
                &pkg1,
                "--server",
                "demo.app",
                "--version",
                "1.0.0",
            ],
            "UploadPackage",
            "demo.app@1.0.0",
            "ok",
        ),
        (
            vec![
                "package",
                "upload",
                &pkg2,
                "--server",
                "demo.app",
                "--version",
                "2.0.0",
            ],
            "UploadPackage",
            "demo.app@2.0.0",
            "ok",
        ),
        (vec!["apply", "-f", &spec1], "Apply", "demo.app", "ok"),
        (
            vec!["server", "stop", "demo.app"],
            "ControlServer",
            "demo.app stop",
            "ok",
        ),
        (
            vec!["server", "start", "demo.app"],
            "ControlServer",
            "demo.app start",
            "ok",
        ),
        (
            vec!["server", "restart", "demo.app", "--node", "node-a"],
            "ControlServer",
            "demo.app restart on node-a",
            "ok",
        ),
        (
            vec!["server", "expand", "demo.none", "--to", "node-a"],
            "Expand",
            "demo.none to node-a",
            "failed",
        ),
        (
            vec![
                "patch",
                "demo.app",
                "--version",
                "2.0.0",
                "--min-healthy",
                "0s",
            ],
            "StartRollout",
            "demo.app@2.0.0",
            "ok",
        ),
        (
            vec!["rollback", "demo.app"],
            "StartRollout",
            "demo.app rollback to the previous release",
            "ok",
        ),
        (
            vec!["server", "revert", "demo.app", "1", "--dry-run"],
            "RevertServer",
            "demo.app to version 1 (dry run)",
            "ok",
        ),
        (
            vec![
                "secret", "put", "demo.app", "token", "--all", "--file", &value,
            ],
            "PutSecret",
            "demo.app/token (all)",
            "ok",
        ),
        (
            vec!["secret", "rm", "demo.app", "token", "--all"],
            "RemoveSecret",
            "demo.app/token (all)",
            "ok",
        ),
        (
            vec!["package", "remove", "demo.app", "2.0.0"],
            "RemovePackage",
            "demo.app@2.0.0",
            "ok",
        ),
        (
            vec!["node", "remove", "node-a"],
            "RemoveNode",
            "node node-a",
            "failed",
        ),
        (
            vec!["server", "undeploy", "demo.app"],
            "ControlServer",
            "demo.app undeploy",
            "ok",
        ),
    ];
    for (args, _, _, outcome) in &steps {
        let out = cli(r, Some(ADMIN), args);
        assert_eq!(
            out.status.success(),
            *outcome == "ok",
            "{args:?}: {}",
            stderr(&out)
        );
        if args[0] == "apply" {
            r.wait_instance("demo.app", "node-a", "running", 30 * S, |i| {
                i["state"] == "running"
            });
        }
    }
    let records = audit_until(r, &["--caller", "ops"], "the admin's changes", |rs| {
        rs.len() >= steps.len()
    });
    assert_eq!(records.len(), steps.len(), "{records:#?}");
    for (rec, (args, call, target, outcome)) in records.iter().zip(&steps) {
        assert_eq!(
            (&rec["call"], &rec["target"], &rec["outcome"], &rec["role"]),
            (
                &Value::from(*call),
                &Value::from(*target),
                &Value::from(*outcome),
                &Value::from("admin")
            ),
            "{args:?}: {rec}"
        );
        assert_eq!(
            rec["error"].as_str().is_some_and(str::is_empty),
            *outcome == "ok",
            "{rec}"
        );
    }
    // Reads are not audited; a call with a wrong token or none is, as refused, and counted.
    let unauthenticated =
        "corral_registry_admin_refused_total{reason=\"unauthenticated\",call=\"RemoveNode\"}";
    let before = sample(&metrics(r), unauthenticated);
    assert!(
        !cli(r, Some("guess"), &["node", "remove", "node-a"])
            .status
            .success()
    );
    assert!(!cli(r, None, &["node", "remove", "node-a"]).status.success());
    let refused = audit_until(r, &[], "the unauthenticated calls", |rs| {
        rs.iter().filter(|r| r["outcome"] == "refused").count() == 2
    });
    let callers: Vec<&Value> = refused
        .iter()
        .filter(|r| r["outcome"] == "refused")
        .map(|r| &r["caller"])
        .collect();
    assert_eq!(
        callers,
        [&Value::from("(unknown token)"), &Value::from("(no token)")]
    );
    assert_eq!(sample(&metrics(r), unauthenticated), before + 2);
    // --since leaves out what is older.
    let recent = cli(r, Some(ADMIN), &["audit", "--since", "1ms", "-o", "json"]);
    let recent: Value =
        serde_json::from_slice(&must(recent, "audit --since").stdout).expect("json");
    assert!(
        recent.as_array().is_some_and(|a| a.len() < refused.len()),
        "{recent}"
    );
}

#[test]
fn tokens_files_and_bare_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tokens.toml");
    let serve = |text: &str, extra: &[&str]| {
        std::fs::write(&file, text).expect("write tokens");
        let mut cmd = Command::new(bin("registry"));
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(format!("sqlite://{}", dir.path().join("bad.db").display()))
        .arg("--tokens-file")
        .arg(&file)
        .args(extra)
        .env_remove("CORRAL_ADMIN_TOKENS");
        let out = exits_within("registry serve with bad tokens", cmd, 10 * S);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        stderr(&out)
    };
    let entry = |name: &str, role: &str, secret: &str| {
        format!("[[token]]\nname = \"{name}\"\nrole = \"{role}\"\nsecret = \"{secret}\"\n")
    };
    let shown = file.display().to_string();
    let cases = [
        (
            entry("alice", "admin", "a") + &entry("alice", "viewer", "b"),
            vec![],
            format!(
                "tokens file {shown}, entry 2 (\"alice\"): the name is already taken by tokens file {shown}, entry 1 (\"alice\")"
            ),
        ),
        (
            entry("alice", "admin", "a") + &entry("bob", "viewer", "a"),
            vec![],
            format!(
                "tokens file {shown}, entry 2 (\"bob\"): the secret is the same as tokens file {shown}, entry 1 (\"alice\")'s"
            ),
        ),
        (
            entry("alice", "admin", ""),
            vec![],
            format!("tokens file {shown}, entry 1 (\"alice\"): the secret is empty"),
        ),
        (
            entry("alice", "root", "a"),
            vec![],
            "unknown role \"root\" (expected \"admin\" or \"viewer\")".to_string(),
        ),
        (
            entry("al ice", "admin", "a"),
            vec![],
            "entry 1 (\"al ice\"): the name \"al ice\" is not valid".to_string(),
        ),
        (
            entry("admin", "viewer", "b"),
            vec!["--admin-token", "bare"],
            format!(
                "tokens file {shown}, entry 1 (\"admin\"): the name is already taken by --admin-token #1"
            ),
        ),
        (
            "[[token]]\nname = \"x\"\nrole = \"admin\"\nsecret = \"s\"\nextra = 1\n".to_string(),
            vec![],
            format!("the tokens file {shown} is not valid"),
        ),
    ];
    for (text, extra, want) in cases {
        let err = serve(&text, &extra);
        assert!(err.contains(&want), "{text}: want {want:?} in {err}");
    }

    // A bare --admin-token keeps working, named "admin"; a tokens file adds named ones.
    std::fs::write(
        &file,
        entry("carol", "viewer", "carol-s") + &entry("dave", "admin", "dave-s"),
    )
    .expect("write");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let file_arg = file.display().to_string();
    let r = Registry::start(
        dir.path(),
        &db.url,
        &["--admin-token", "bare-s3cret", "--tokens-file", &file_arg],
    );
    let stop = cli(&r, Some("bare-s3cret"), &["server", "stop", "demo.none"]);
    assert!(stderr(&stop).contains("not found"), "{}", stderr(&stop));
    must(
        cli(&r, Some("carol-s"), &["node", "list"]),
        "viewer from the file",
    );
    assert!(
        !cli(&r, Some("carol-s"), &["server", "stop", "demo.none"])
            .status
            .success()
    );
    assert!(
        !cli(&r, Some("dave-s"), &["server", "start", "demo.none"])
            .status
            .success()
    );
    let records = audit_as(&r, "carol-s", &[], "the calls of each token", |rs| {
        rs.len() == 3
    });
    let who: Vec<(&Value, &Value, &Value)> = records
        .iter()
        .map(|r| (&r["caller"], &r["role"], &r["outcome"]))
        .collect();
    let v = Value::from;
    assert_eq!(
        who,
        [
            (&v("admin"), &v("admin"), &v("failed")),
            (&v("carol"), &v("viewer"), &v("refused")),
            (&v("dave"), &v("admin"), &v("failed")),
        ]
    );
}
