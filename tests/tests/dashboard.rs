//! The dashboard in a real headless Chromium: log in, see the nodes, restart an instance
//! and see it change without a reload, patch and watch the progress, expand with a
//! preview. With `CORRAL_SCREENSHOTS=DIR`, a PNG of each page is written to DIR
//! (`scripts/screenshots.sh` refreshes `docs/dashboard/` so).

use std::path::PathBuf;
use std::time::Duration;

use corral_tests::browser::Browser;
use corral_tests::fleet::Fleet;
use corral_tests::packages::{release, write};

const S: Duration = Duration::from_secs(1);
const TOKEN: &str = "dashboard-test-token";

fn upload(f: &Fleet, version: &str) {
    let path = write(
        f.dir.path(),
        &format!("app-{version}.tgz"),
        &release(version, false),
    );
    let out = f.registry.cli(&[
        "package",
        "upload",
        path.to_str().expect("utf8"),
        "--server",
        "demo.app",
        "--version",
        version,
        "--note",
        "built by the dashboard test",
    ]);
    assert!(
        out.status.success(),
        "upload {version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const SPEC: &str = r#"
app = "demo"
server = "app"
nodes = ["node-a", "node-b"]
command = ["bin/server"]
package = "1.0.0"
[[adapters]]
name = "Main"
port = "auto"
[restart]
min_uptime = "1s"
[stop]
timeout = "2s"
[[config]]
name = "app.conf"
template = """
# demo.app, ordinal {{ ordinal }}
listen = {{ node_ip }}:{{ ports.Main }}
"""
"#;

fn shots() -> Option<PathBuf> {
    std::env::var_os("CORRAL_SCREENSHOTS").map(PathBuf::from)
}

fn shot(b: &Browser, name: &str) {
    if let Some(dir) = shots() {
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        b.screenshot(&dir.join(format!("{name}.png")));
    }
}

/// Marks the page, so that a later check can tell it was not reloaded.
fn mark(b: &Browser) {
    b.js("window.__corral_mark = 'same page'; window.confirm = () => true;");
}

fn assert_same_page(b: &Browser, what: &str) {
    assert_eq!(
        b.js("return window.__corral_mark || null;"),
        serde_json::json!("same page"),
        "{what}: the page was reloaded (the update must arrive without one)"
    );
}

#[test]
fn dashboard_in_a_browser() {
    let f = Fleet::start_with(3, &["--admin-token", TOKEN]);
    upload(&f, "1.0.0");
    upload(&f, "2.0.0");
    let out = f.registry.apply(SPEC);
    assert!(out.status.success(), "apply: {out:?}");
    for n in ["node-a", "node-b"] {
        f.registry
            .wait_instance("demo.app", n, "running", 30 * S, |i| i["state"] == "running");
    }
    let base = format!("http://127.0.0.1:{}", f.registry.http_port);
    let b = Browser::start();

    // Log in: every page asks for a token first; a wrong one is refused.
    b.goto(&format!("{base}/servers"));
    assert!(b.url().ends_with("/login"), "not logged in: {}", b.url());
    shot(&b, "login");
    b.fill("input[name=token]", "not-the-token");
    b.click("form.login button");
    b.wait_text(".flash.err", "refused", 10 * S, |t| t.contains("not valid"));
    b.fill("input[name=token]", TOKEN);
    b.click("form.login button");

    // Three nodes, up.
    b.wait_text("#nodes-up", "3 of 3 up", 10 * S, |t| t == "3 / 3");
    assert_eq!(b.count("#nodes tbody tr[data-node]"), 3);
    for n in ["node-a", "node-b", "node-c"] {
        let state = b.text(&format!("#nodes tr[data-node='{n}'] td.state")).expect("row");
        assert_eq!(state, "up", "{n}");
    }
    shot(&b, "nodes");

    b.goto(&format!("{base}/servers"));
    b.wait_text("#servers", "demo.app listed", 10 * S, |t| t.contains("demo.app"));
    shot(&b, "servers");

    // Restart one instance: its pid changes on the page, without a reload.
    b.goto(&format!("{base}/servers/demo.app"));
    let row = "#instances tr[data-node='node-a']";
    let before = f.registry.instance("demo.app", "node-a").expect("instance")["pid"]
        .as_u64()
        .expect("pid");
    b.wait_text(&format!("{row} td.state"), "running", 10 * S, |t| t == "running");
    mark(&b);
    b.click(&format!("{row} button[data-action='restart']"));
    b.wait_text("#result", "restart acknowledged", 10 * S, |t| t.contains("restart"));
    b.wait_text(
        &format!("{row} td:nth-child(8)"),
        "a new pid after the restart",
        30 * S,
        |t| !t.is_empty() && t != before.to_string(),
    );
    b.wait_text(&format!("{row} td.state"), "running again", 30 * S, |t| t == "running");
    assert_same_page(&b, "restart");

    // Stop it: the state shows stopped, still without a reload.
    b.click(&format!("{row} button[data-action='stop']"));
    b.wait_text(&format!("{row} td.state"), "stopped", 30 * S, |t| t == "stopped");
    assert_same_page(&b, "stop");
    b.click(&format!("{row} button[data-action='start']"));
    b.wait_text(&format!("{row} td.state"), "running", 30 * S, |t| t == "running");
    shot(&b, "server");

    // Patch to 2.0.0: the progress follows the rollout to its end on this page.
    b.js("document.querySelector('#patch select').value = '2.0.0';");
    b.click("#patch button[type=submit]");
    b.wait_text("#result .rollout table", "rollout progress shown", 10 * S, |t| {
        t.contains("node-a") && t.contains("node-b")
    });
    b.wait_text("#result .rollout .badge", "rollout succeeded", 60 * S, |t| {
        t == "succeeded"
    });
    assert_eq!(b.count("#result .rollout[data-state='succeeded']"), 1);
    assert_same_page(&b, "patch");
    for n in ["node-a", "node-b"] {
        f.registry.wait_instance("demo.app", n, "on 2.0.0", 30 * S, |i| {
            i["version"] == "2.0.0" && i["state"] == "running"
        });
    }
    shot(&b, "patch");

    // Expand to node-c: a preview first (nothing changes), then apply.
    b.fill("#expand input[name=nodes]", "node-c");
    b.click("#expand button[type=submit]");
    b.wait_text("#result .expand-result", "preview", 10 * S, |t| {
        t.contains("Preview") && t.contains("node-c") && t.contains("Main")
    });
    assert!(
        f.registry.instance("demo.app", "node-c").is_err(),
        "a preview changes nothing"
    );
    shot(&b, "expand-preview");
    b.click("#expand-apply");
    b.wait_text("#result", "expanded", 10 * S, |t| t.contains("Expanded demo.app"));
    b.wait_text(
        "#instances tr[data-node='node-c'] td.state",
        "node-c running",
        30 * S,
        |t| t == "running",
    );
    assert_same_page(&b, "expand");

    // The other pages render what happened.
    b.goto(&format!("{base}/servers/demo.app/node-a"));
    b.wait_text("body", "instance page", 10 * S, |t| {
        t.contains("app.conf") && t.contains("listen = ")
    });
    shot(&b, "instance");
    b.goto(&format!("{base}/events"));
    b.wait_text("#events", "events listed", 10 * S, |t| t.contains("demo.app"));
    // A new event arrives live.
    mark(&b);
    let rows = b.count("#events tbody tr");
    let out = f.registry.cli(&["server", "restart", "demo.app", "--node", "node-b"]);
    assert!(out.status.success(), "restart: {out:?}");
    wait_rows(&b, rows);
    assert_same_page(&b, "events");
    shot(&b, "events");
    b.goto(&format!("{base}/rollouts"));
    b.wait_text("#live", "rollout listed", 10 * S, |t| t.contains("2.0.0"));
    shot(&b, "rollouts");
    b.click("#live table.rollouts a[href^='/rollouts/']");
    b.wait_text(".rollout .badge", "rollout page", 10 * S, |t| t == "succeeded");
    shot(&b, "rollout");
    b.goto(&format!("{base}/packages"));
    b.wait_text("#packages", "packages listed", 10 * S, |t| {
        t.contains("1.0.0") && t.contains("2.0.0")
    });
    shot(&b, "packages");
}

fn wait_rows(b: &Browser, before: usize) {
    corral_tests::wait_until("a new event row, live", 30 * S, || {
        let now = b.count("#events tbody tr");
        if now > before {
            Ok(())
        } else {
            Err(format!("{now} rows"))
        }
    });
}
