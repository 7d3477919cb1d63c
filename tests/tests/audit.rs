//! The audit log's store, on SQLite and MySQL: written, listed with filters, trimmed to
//! the newest records; and a registry on each backend that records who did what.

use std::process::{Command, Output};
use std::time::Duration;

use corral_registry::store::{AuditRow, Store};
use corral_tests::packages::{release, write};
use corral_tests::proxy::{Proxy, mysql_target, mysql_url_via};
use corral_tests::{Backend, Registry, TestDb, backend_tests, bin, wait_until};
use serde_json::Value;

backend_tests! {
    audit_store_lists_filters_and_trims,
    a_registry_audits_who_did_what,
}

fn row(n: i64, caller: &str) -> AuditRow {
    AuditRow {
        id: 0,
        at_ms: 1_000 + n,
        caller: caller.into(),
        role: "admin".into(),
        source: "127.0.0.1:5000".into(),
        method: "Apply".into(),
        target: format!("demo.s{n}"),
        outcome: if n % 2 == 0 { "ok" } else { "failed" }.into(),
        error: if n % 2 == 0 { "" } else { "no" }.into(),
    }
}

fn audit_store_lists_filters_and_trims(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = TestDb::new(backend, dir.path()) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = Store::open(&db.url).await.expect("open store");
        for n in 0..30 {
            let caller = if n % 3 == 0 { "alice" } else { "bob" };
            store.record_audit(&row(n, caller)).await.expect("record");
        }
        // Newest last; a limit keeps the newest.
        let all = store.list_audit(0, None, 100).await.expect("list");
        assert_eq!(all.len(), 30);
        assert_eq!(all[29].target, "demo.s29");
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(
            (all[1].outcome.as_str(), all[1].error.as_str()),
            ("failed", "no")
        );
        let newest = store.list_audit(0, None, 5).await.expect("list");
        assert_eq!(
            newest.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            [1025, 1026, 1027, 1028, 1029]
        );
        let alice = store.list_audit(0, Some("alice"), 100).await.expect("list");
        assert_eq!(alice.len(), 10);
        assert!(alice.iter().all(|r| r.caller == "alice"));
        let since = store
            .list_audit(1_020, Some("bob"), 100)
            .await
            .expect("list");
        assert_eq!(
            since.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            [1020, 1022, 1023, 1025, 1026, 1028, 1029]
        );
        // Trimming keeps the newest.
        assert_eq!(store.trim_audit(10).await.expect("trim"), 20);
        assert_eq!(store.trim_audit(10).await.expect("trim"), 0);
        let kept = store.list_audit(0, None, 100).await.expect("list");
        assert_eq!(kept.first().map(|r| r.at_ms), Some(1020));
        assert_eq!(kept.len(), 10);
        // What does not fit a column is cut, not refused.
        let mut long = row(99, "carol");
        long.error = "e".repeat(5000);
        store.record_audit(&long).await.expect("long record");
        let last = store.list_audit(0, Some("carol"), 1).await.expect("list");
        assert_eq!(last[0].error.len(), 2048);
        store.close().await;
    });
}

fn cli(r: &Registry, token: &str, args: &[&str]) -> Output {
    Command::new(bin("registry"))
        .args(args)
        .arg("--addr")
        .arg(r.addr())
        .env("CORRAL_TOKEN", token)
        .output()
        .expect("run registry CLI")
}

fn a_registry_audits_who_did_what(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = TestDb::new(backend, dir.path()) else {
        return;
    };
    let r = Registry::start(
        dir.path(),
        &db.url,
        &["--admin-token", "ops:ops-s", "--viewer-token", "eve:eve-s"],
    );
    let pkg = write(dir.path(), "p.tgz", &release("1.0.0", false));
    let pkg = pkg.to_str().expect("utf8");
    let upload = [
        "package",
        "upload",
        pkg,
        "--server",
        "demo.app",
        "--version",
        "1.0.0",
    ];
    let remove = ["package", "remove", "demo.app", "1.0.0"];
    assert!(cli(&r, "ops-s", &upload).status.success());
    assert!(!cli(&r, "eve-s", &remove).status.success());
    assert!(cli(&r, "ops-s", &remove).status.success());
    assert!(!cli(&r, "ops-s", &remove).status.success());
    let records = wait_until("the audit records", Duration::from_secs(20), || {
        let out = cli(&r, "eve-s", &["audit", "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        match v.as_array() {
            Some(a) if a.len() == 4 => Ok(a.clone()),
            _ => Err(format!("{v} {}", String::from_utf8_lossy(&out.stderr))),
        }
    });
    let seen: Vec<(&str, &str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["caller"].as_str().unwrap_or_default(),
                r["call"].as_str().unwrap_or_default(),
                r["target"].as_str().unwrap_or_default(),
                r["outcome"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ops", "UploadPackage", "demo.app@1.0.0", "ok"),
            ("eve", "RemovePackage", "", "refused"),
            ("ops", "RemovePackage", "demo.app@1.0.0", "ok"),
            ("ops", "RemovePackage", "demo.app@1.0.0", "failed"),
        ]
    );
    assert!(
        records[3]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not found"))
    );
    // -n keeps the newest; --caller only that token's; the table has a header and rows.
    let out = cli(&r, "ops-s", &["audit", "--caller", "eve", "-n", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.contains("refused") && l.contains("eve"))
    );
}

/// Calls refused while the database is unreachable (the gate needs no database) are
/// kept and written once it answers again; none is lost. (The writer waits for a
/// connection, up to the pool's timeout, then tries again every second.)
#[test]
fn refusals_during_a_database_outage_are_written_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(db) = TestDb::new(Backend::MySql, dir.path()) else {
        return;
    };
    let mut proxy = Proxy::start(mysql_target(&db.url));
    let r = Registry::start(
        dir.path(),
        &mysql_url_via(&db.url, proxy.addr),
        &["--admin-token", "ops:ops-s", "--viewer-token", "eve:eve-s"],
    );
    proxy.cut();
    for _ in 0..3 {
        let out = cli(&r, "eve-s", &["server", "stop", "demo.app"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("role viewer"));
    }
    assert!(
        !cli(&r, "guess", &["server", "stop", "demo.app"])
            .status
            .success()
    );
    proxy.resume();
    let records = wait_until("the refusals written", Duration::from_secs(30), || {
        let out = cli(&r, "ops-s", &["audit", "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        match v.as_array() {
            Some(a) if a.len() == 4 => Ok(a.clone()),
            _ => Err(format!("{v} {}", String::from_utf8_lossy(&out.stderr))),
        }
    });
    let callers: Vec<&str> = records
        .iter()
        .map(|r| r["caller"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(callers, ["eve", "eve", "eve", "(unknown token)"]);
    assert!(records.iter().all(|r| r["outcome"] == "refused"));
}
