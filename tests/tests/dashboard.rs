//! The dashboard in a real headless Chromium: log in, see the nodes, restart an instance
//! and see it change without a reload, patch and watch the progress, expand with a
//! preview, follow an instance's log, see the audit log; a viewer sees no action button
//! and is refused every action. With `CORRAL_SCREENSHOTS=DIR`, a PNG of each page is written to DIR
//! (`scripts/screenshots.sh` refreshes `docs/dashboard/` so).

use std::path::PathBuf;
use std::time::Duration;

use corral_tests::browser::Browser;
use corral_tests::fleet::Fleet;
use corral_tests::lookup::agent_http;
use corral_tests::packages::{release, write};
use corral_tests::{Agent, http_get, wait_until};
use serde_json::Value;

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
    // A server that keeps failing, so that the pages show what trouble looks like.
    let out = f.registry.apply(
        "app = \"demo\"\nserver = \"worker\"\nnodes = [\"node-c\"]\n\
         command = [\"sh\", \"-c\", \"echo 'cannot open /etc/worker.conf' >&2; exit 3\"]\n",
    );
    assert!(out.status.success(), "apply: {out:?}");
    for n in ["node-a", "node-b"] {
        f.registry
            .wait_instance("demo.app", n, "running", 30 * S, |i| {
                i["state"] == "running"
            });
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
        let state = b
            .text(&format!("#nodes tr[data-node='{n}'] td.state"))
            .expect("row");
        assert_eq!(state, "up", "{n}");
    }
    shot(&b, "nodes");

    b.goto(&format!("{base}/servers"));
    b.wait_text("#servers", "demo.app listed", 10 * S, |t| {
        t.contains("demo.app")
    });
    shot(&b, "servers");

    // Restart one instance: its pid changes on the page, without a reload.
    b.goto(&format!("{base}/servers/demo.app"));
    let row = "#instances tr[data-node='node-a']";
    let before = f.registry.instance("demo.app", "node-a").expect("instance")["pid"]
        .as_u64()
        .expect("pid");
    b.wait_text(&format!("{row} td.state"), "running", 10 * S, |t| {
        t == "running"
    });
    mark(&b);
    b.click(&format!("{row} button[data-action='restart']"));
    b.wait_text("#result", "restart acknowledged", 10 * S, |t| {
        t.contains("restart")
    });
    b.wait_text(
        &format!("{row} td:nth-child(8)"),
        "a new pid after the restart",
        30 * S,
        |t| !t.is_empty() && t != before.to_string(),
    );
    b.wait_text(&format!("{row} td.state"), "running again", 30 * S, |t| {
        t == "running"
    });
    assert_same_page(&b, "restart");

    // Stop it: the state shows stopped, still without a reload.
    b.click(&format!("{row} button[data-action='stop']"));
    b.wait_text(&format!("{row} td.state"), "stopped", 30 * S, |t| {
        t == "stopped"
    });
    assert_same_page(&b, "stop");
    b.click(&format!("{row} button[data-action='start']"));
    b.wait_text(&format!("{row} td.state"), "running", 30 * S, |t| {
        t == "running"
    });
    shot(&b, "server");

    // Patch to 2.0.0: the progress follows the rollout to its end on this page.
    b.js("document.querySelector('#patch select').value = '2.0.0';");
    b.click("#patch button[type=submit]");
    b.wait_text(
        "#result .rollout table",
        "rollout progress shown",
        10 * S,
        |t| t.contains("node-a") && t.contains("node-b"),
    );
    b.wait_text(
        "#result .rollout .badge",
        "rollout succeeded",
        60 * S,
        |t| t == "succeeded",
    );
    assert_eq!(b.count("#result .rollout[data-state='succeeded']"), 1);
    assert_same_page(&b, "patch");
    for n in ["node-a", "node-b"] {
        f.registry
            .wait_instance("demo.app", n, "on 2.0.0", 30 * S, |i| {
                i["version"] == "2.0.0" && i["state"] == "running"
            });
    }
    // The page's own rollout list catches up without a reload too.
    b.wait_text(
        "#live table.rollouts tbody tr",
        "listed as succeeded",
        30 * S,
        |t| t.contains("succeeded"),
    );
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
    b.wait_text("#result", "expanded", 10 * S, |t| {
        t.contains("Expanded demo.app")
    });
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
    b.goto(&format!("{base}/events"));
    b.wait_text("#events", "events listed", 10 * S, |t| {
        t.contains("demo.app")
    });
    // A new event arrives live.
    mark(&b);
    let rows = b.count("#events tbody tr");
    let out = f
        .registry
        .cli(&["server", "restart", "demo.app", "--node", "node-b"]);
    assert!(out.status.success(), "restart: {out:?}");
    wait_rows(&b, rows);
    assert_same_page(&b, "events");
    shot(&b, "events");
    b.goto(&format!("{base}/rollouts"));
    b.wait_text("#live", "rollout listed", 10 * S, |t| t.contains("2.0.0"));
    shot(&b, "rollouts");
    b.click("#live table.rollouts a[href^='/rollouts/']");
    b.wait_text(".rollout .badge", "rollout page", 10 * S, |t| {
        t == "succeeded"
    });
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

/// `curl` with the given arguments: (status code, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Without a session every page asks for a login; a POST needs the session's CSRF token
/// and a same-origin Origin, and each refusal names what is wrong; a registry without
/// admin tokens asks for no login.
#[test]
fn sessions_csrf_and_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = corral_tests::TestDb::new(corral_tests::Backend::Sqlite, dir.path()).expect("db");
    let r = corral_tests::Registry::start(dir.path(), &db.url, &["--admin-token", TOKEN]);
    let base = format!("http://127.0.0.1:{}", r.http_port);
    let origin = format!("Origin: {base}");

    let (code, _) = curl(&[&format!("{base}/servers")]);
    assert_eq!(code, 303, "no session: to the login page");
    let (code, body) = curl(&["-H", &origin, "-d", "token=wrong", &format!("{base}/login")]);
    assert!(code == 401 && body.contains("not valid"), "{code} {body}");
    let (code, body) = curl(&[
        "-H",
        "Origin: http://evil.example",
        "-d",
        &format!("token={TOKEN}"),
        &format!("{base}/login"),
    ]);
    assert!(
        code == 403 && body.contains("evil.example"),
        "{code} {body}"
    );

    let out = std::process::Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "-H", &origin])
        .args(["-d", &format!("token={TOKEN}"), &format!("{base}/login")])
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&out.stdout).to_string();
    let cookie_line = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {headers}"));
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie_line.contains(attr), "{attr}: {cookie_line}");
    }
    let cookie = cookie_line
        .split_once(':')
        .map(|(_, v)| v.trim())
        .and_then(|v| v.split(';').next())
        .expect("cookie")
        .to_string();
    let cookie_h = format!("Cookie: {cookie}");
    let (code, page) = curl(&["-H", &cookie_h, &format!("{base}/servers")]);
    assert_eq!(code, 200, "{page}");
    let csrf = page
        .split("x-csrf-token&quot;:&quot;")
        .nth(1)
        .and_then(|s| s.split("&quot;").next())
        .expect("csrf token in the page")
        .to_string();
    let csrf_h = format!("x-csrf-token: {csrf}");
    let form = "server=demo.nope&action=restart";
    let act = format!("{base}/act/control");

    let (code, body) = curl(&["-H", &cookie_h, "-H", &origin, "-d", form, &act]);
    assert!(code == 403 && body.contains("CSRF"), "{code} {body}");
    let (code, body) = curl(&["-H", &cookie_h, "-H", &csrf_h, "-d", form, &act]);
    assert!(code == 403 && body.contains("Origin"), "{code} {body}");
    let evil = "Origin: http://evil.example";
    let (code, body) = curl(&["-H", &cookie_h, "-H", &csrf_h, "-H", evil, "-d", form, &act]);
    assert!(
        code == 403 && body.contains("evil.example"),
        "{code} {body}"
    );
    let (code, body) = curl(&["-H", &csrf_h, "-H", &origin, "-d", form, &act]);
    assert_eq!(code, 303, "no session: {body}");
    // All present: the action runs and the admin error names the server.
    let (code, body) = curl(&[
        "-H", &cookie_h, "-H", &csrf_h, "-H", &origin, "-d", form, &act,
    ]);
    assert!(code == 404 && body.contains("demo.nope"), "{code} {body}");
    let bad = "server=demo.nope&action=explode";
    let (code, body) = curl(&[
        "-H", &cookie_h, "-H", &csrf_h, "-H", &origin, "-d", bad, &act,
    ]);
    assert!(code == 400 && body.contains("explode"), "{code} {body}");

    // Logged out: the session no longer opens pages.
    let logout = format!("{base}/logout");
    let (code, _) = curl(&[
        "-H", &cookie_h, "-H", &csrf_h, "-H", &origin, "-X", "POST", &logout,
    ]);
    assert_eq!(code, 303);
    let (code, _) = curl(&["-H", &cookie_h, &format!("{base}/servers")]);
    assert_eq!(code, 303, "the session ended");

    // Without admin tokens there is no login.
    let open_dir = tempfile::tempdir().expect("tempdir");
    let open_db =
        corral_tests::TestDb::new(corral_tests::Backend::Sqlite, open_dir.path()).expect("db");
    let open = corral_tests::Registry::start(open_dir.path(), &open_db.url, &[]);
    let (code, body) = curl(&[&format!("http://127.0.0.1:{}/", open.http_port)]);
    assert!(code == 200 && body.contains("Nodes"), "{code}");
    // htmx is served from the binary, cached for good.
    let out = std::process::Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null"])
        .arg(format!(
            "http://127.0.0.1:{}/assets/htmx-2.0.11.min.js",
            open.http_port
        ))
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        headers.contains("200") && headers.contains("max-age=31536000"),
        "{headers}"
    );
}

/// On a TLS HTTP port the dashboard works the same, and the session cookie is `Secure`.
#[test]
fn dashboard_behind_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let out = std::process::Command::new(corral_tests::bin("registry"))
        .args(["tls", "init"])
        .arg(&certs)
        .output()
        .expect("tls init");
    assert!(out.status.success(), "{out:?}");
    let p = |f: &str| certs.join(f).display().to_string();
    let db = corral_tests::TestDb::new(corral_tests::Backend::Sqlite, dir.path()).expect("db");
    let (cert, key) = (p("registry.pem"), p("registry.key"));
    let r = corral_tests::Registry::start(
        dir.path(),
        &db.url,
        &[
            "--admin-token",
            TOKEN,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--http-tls-cert",
            &cert,
            "--http-tls-key",
            &key,
        ],
    );
    let base = format!("https://127.0.0.1:{}", r.http_port);
    let ca = p("ca.pem");
    let out = std::process::Command::new("curl")
        .args(["-s", "--cacert", &ca, "-D", "-", "-o", "/dev/null"])
        .args(["-H", &format!("Origin: {base}")])
        .args(["-d", &format!("token={TOKEN}"), &format!("{base}/login")])
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&out.stdout).to_string();
    let cookie = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no session cookie over TLS: {headers}"));
    assert!(cookie.contains("; Secure"), "{cookie}");
    let id = cookie
        .split_once(':')
        .and_then(|(_, v)| v.trim().split(';').next())
        .expect("cookie")
        .to_string();
    let (code, body) = curl(&[
        "--cacert",
        &ca,
        "-H",
        &format!("Cookie: {id}"),
        &format!("{base}/"),
    ]);
    assert!(code == 200 && body.contains("Nodes"), "{code} {body}");
    // The caller's address is known on TLS too: a wrong token is audited with it.
    let (code, _) = curl(&[
        "--cacert",
        &ca,
        "-H",
        &format!("Origin: {base}"),
        "-d",
        "token=guess",
        &format!("{base}/login"),
    ]);
    assert_eq!(code, 401);
    wait_until("the failed login over TLS, audited", 20 * S, || {
        let out = r.cli(&["audit", "-o", "json"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        v.as_array()
            .into_iter()
            .flatten()
            .find(|r| {
                r["call"] == "Login"
                    && r["source"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("127.0.0.1:"))
            })
            .map(|_| ())
            .ok_or(text)
    });
}

const VIEWER: &str = "dashboard-viewer-token";

/// A registry with an admin token named "ops" (secret [`TOKEN`]) and a viewer token named
/// "eve" (secret [`VIEWER`]), one node, and `demo.echo` on it: it prints a line on stdout
/// and one on stderr when it starts, then echoes the name of each file that appears in
/// `pokes` (both streams) and removes it.
fn roles_fleet() -> (Fleet, PathBuf) {
    let f = Fleet::start_with(
        1,
        &[
            "--admin-token",
            &format!("ops:{TOKEN}"),
            "--viewer-token",
            &format!("eve:{VIEWER}"),
        ],
    );
    let pokes = f.dir.path().join("pokes");
    std::fs::create_dir_all(&pokes).expect("pokes dir");
    let script = format!(
        "echo \"started $$\"; echo 'warming up' >&2; cd {}; \
         while :; do for p in poke-*; do [ -e \"$p\" ] || continue; \
         echo \"saw $p <b>not bold</b>\"; echo \"complained about $p\" >&2; \
         [ \"$p\" = poke-many ] && seq 1 1500 | sed 's/^/many /'; rm -f \"$p\"; done; \
         sleep 0.1; done",
        pokes.display()
    );
    let spec = format!(
        "app = \"demo\"\nserver = \"echo\"\nnodes = [\"node-a\"]\n\
         command = [\"sh\", \"-c\", {script:?}]\n[stop]\ntimeout = \"2s\"\n"
    );
    let out = f.registry.apply(&spec);
    assert!(out.status.success(), "apply: {out:?}");
    f.registry
        .wait_instance("demo.echo", "node-a", "running", 30 * S, |i| {
            i["state"] == "running"
        });
    (f, pokes)
}

/// The agent's count of open log streams, from its /metrics.
fn open_streams(agent: &Agent) -> Result<u64, String> {
    let text = http_get(agent_http(agent), "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix("corral_agent_log_streams "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no corral_agent_log_streams in {text}"))
}

fn wait_streams(agent: &Agent, want: u64, what: &str) {
    wait_until(what, 20 * S, || match open_streams(agent)? {
        n if n == want => Ok(()),
        n => Err(format!("{n} open")),
    });
}

/// Everything an action is made with; a viewer's page has none of it.
const ACTION_ELEMENTS: &str = "button[data-action], [hx-post^='/act/'], #patch, #rollback, \
                               #expand, #result";

/// `registry audit -o json` (as the admin), until `want` holds.
fn audit_until(
    f: &Fleet,
    extra: &[&str],
    what: &str,
    want: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    wait_until(what, 20 * S, || {
        let out = f
            .registry
            .cli(&[&["audit", "-o", "json", "-n", "10000"][..], extra].concat());
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).to_string());
        }
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let rows = v.as_array().cloned().unwrap_or_default();
        if want(&rows) {
            Ok(rows)
        } else {
            Err(format!("{v}"))
        }
    })
}

/// Follow a log on the instance page (new lines appear without a reload; stderr marked;
/// text, never HTML); leaving the page ends the stream at the agent; the audit page lists
/// the admin's dashboard restart with the token's name; a viewer sees no action anywhere
/// but reads the pages, the log and the audit.
#[test]
fn log_tail_roles_and_audit_in_a_browser() {
    let (f, pokes) = roles_fleet();
    let agent = f.agent("node-a");
    let base = format!("http://127.0.0.1:{}", f.registry.http_port);
    let b = Browser::start();
    b.goto(&format!("{base}/login"));
    b.fill("input[name=token]", "a-guess");
    b.click("form.login button");
    b.wait_text(".flash.err", "refused", 10 * S, |t| t.contains("not valid"));
    b.fill("input[name=token]", TOKEN);
    b.click("form.login button");
    b.wait_text("#nodes-up", "logged in", 10 * S, |t| t == "1 / 1");

    // The tail first: both streams, stderr marked.
    b.goto(&format!("{base}/servers/demo.echo/node-a"));
    b.wait_text("#log-lines", "the tail", 20 * S, |t| {
        t.contains("started") && t.contains("warming up")
    });
    b.wait_text("#log-state", "following", 10 * S, |t| t == "following");
    assert!(
        b.count("#log-lines .l.stderr") >= 1,
        "stderr lines are marked"
    );
    wait_streams(agent, 1, "one log stream open for the page");
    mark(&b);

    // A new line appears without a reload, as text.
    std::fs::write(pokes.join("poke-1"), "").expect("poke");
    b.wait_text("#log-lines", "the new line, live", 20 * S, |t| {
        t.contains("saw poke-1 <b>not bold</b>") && t.contains("complained about poke-1")
    });
    assert_eq!(b.count("#log-lines b"), 0, "log lines are text, not HTML");
    assert_same_page(&b, "log tail");
    shot(&b, "instance");
    // The page keeps the last lines only.
    std::fs::write(pokes.join("poke-many"), "").expect("poke");
    b.wait_text("#log-lines", "the last of many lines", 20 * S, |t| {
        t.contains("many 1500")
    });
    let kept = b.count("#log-lines .l");
    assert!((900..=1000).contains(&kept), "{kept} lines kept");

    // Restart from the page: the log follows into the new run.
    let starts = |t: &str| t.matches("started ").count();
    let before = starts(&b.text("#log-lines").expect("log"));
    b.click(".actions button[data-action='restart']");
    b.wait_text("#result", "restart acknowledged", 10 * S, |t| {
        t.contains("restart requested")
    });
    b.wait_text(
        "#log-lines",
        "the restarted run's first line",
        30 * S,
        |t| starts(t) > before,
    );
    assert_same_page(&b, "restart with the log open");

    // Leaving the page ends the stream at the agent.
    b.goto(&format!("{base}/audit"));
    wait_streams(agent, 0, "the log stream closed after leaving the page");
    b.wait_text("#audit tbody", "the restart, audited", 20 * S, |t| {
        t.contains("ControlServer") && t.contains("demo.echo restart on node-a")
    });
    let row = "#audit tbody tr[data-outcome='ok']";
    assert_eq!(b.text(&format!("{row} td.caller")).expect("row"), "ops");
    assert!(
        b.text(&format!("{row} td.source"))
            .expect("row")
            .starts_with("127.0.0.1:")
    );

    // A viewer: logs in, reads every page, sees no action.
    b.click("header.top button");
    b.wait_text("form.login", "logged out", 10 * S, |t| t.contains("Log in"));
    b.fill("input[name=token]", VIEWER);
    b.click("form.login button");
    b.wait_text("#nodes-up", "the viewer logged in", 10 * S, |t| {
        t == "1 / 1"
    });
    assert!(
        b.text("header.top .right")
            .expect("header")
            .contains("view only")
    );
    for (page, ready) in [
        ("/", "#nodes"),
        ("/servers", "#servers"),
        ("/servers/demo.echo", "#instances"),
        ("/servers/demo.echo/node-a", "#log-lines"),
    ] {
        b.goto(&format!("{base}{page}"));
        b.wait_text(ready, "the page", 10 * S, |t| {
            t.contains("node-a") || t.contains("demo.echo") || t.contains("started")
        });
        assert_eq!(
            b.count(ACTION_ELEMENTS),
            0,
            "{page}: a viewer sees no action"
        );
    }
    b.wait_text("#log-lines", "the viewer follows the log", 20 * S, |t| {
        t.contains("started")
    });
    // A viewer's page has the session's CSRF token; a POST made with it is still refused.
    let status = b.js(
        "const h = JSON.parse(document.body.getAttribute('hx-headers')); \
         return fetch('/act/control', {method: 'POST', body: 'server=demo.echo&action=stop', \
           headers: {'x-csrf-token': h['x-csrf-token'], \
                     'content-type': 'application/x-www-form-urlencoded'}}).then(r => r.status);",
    );
    assert_eq!(status, serde_json::json!(403), "a viewer's POST");
    b.goto(&format!("{base}/audit?caller=ops"));
    b.wait_text("#audit tbody", "the audit, for a viewer", 10 * S, |t| {
        t.contains("demo.echo restart on node-a") && t.contains("ops")
    });
    assert_eq!(
        b.count("#audit tbody tr[data-outcome='refused']"),
        0,
        "filtered by caller"
    );
    b.goto(&format!("{base}/audit"));
    b.wait_text("#audit tbody", "every record", 10 * S, |t| {
        t.contains("ops") && t.contains("eve") && t.contains("Login")
    });
    assert!(b.count("#audit tbody tr[data-outcome='refused']") >= 2);
    shot(&b, "audit");
}

/// Logs in with `token` by curl; the session's cookie header and CSRF header.
fn curl_login(base: &str, token: &str) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            &format!("Origin: {base}"),
        ])
        .args(["-d", &format!("token={token}"), &format!("{base}/login")])
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&out.stdout).to_string();
    let cookie = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .and_then(|l| l.split_once(':'))
        .and_then(|(_, v)| v.trim().split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {headers}"))
        .to_string();
    let cookie_h = format!("Cookie: {cookie}");
    let (code, page) = curl(&["-H", &cookie_h, &format!("{base}/servers")]);
    assert_eq!(code, 200, "{page}");
    let csrf = page
        .split("x-csrf-token&quot;:&quot;")
        .nth(1)
        .and_then(|s| s.split("&quot;").next())
        .expect("csrf token in the page");
    (cookie_h, format!("x-csrf-token: {csrf}"))
}

/// A viewer's session is refused every action (with a valid CSRF token and Origin): 403
/// naming the role, nothing changes, each refusal is audited and counted. An admin's
/// dashboard restart is audited as ok with the token's name and the source address; a
/// wrong token at the login is a refused "Login".
#[test]
fn dashboard_roles_and_audit_by_curl() {
    let (f, _pokes) = roles_fleet();
    let base = format!("http://127.0.0.1:{}", f.registry.http_port);
    let origin = format!("Origin: {base}");
    let pid = |f: &Fleet| {
        f.registry
            .instance("demo.echo", "node-a")
            .expect("instance")["pid"]
            .clone()
    };
    let before = pid(&f);

    let (cookie, csrf) = curl_login(&base, VIEWER);
    // Pages are never stored; a viewer reads logs: a log of an instance that is not there
    // ends at once, saying why.
    let out = std::process::Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "-H", &cookie])
        .arg(format!("{base}/servers/demo.echo"))
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(headers.contains("cache-control: no-store"), "{headers}");
    let (code, body) = curl(&[
        "-H",
        &cookie,
        &format!("{base}/servers/demo.echo/node-x/log"),
    ]);
    assert!(
        code == 200 && body.contains("event: end") && body.contains("no instance on node node-x"),
        "{code} {body}"
    );
    let posts = [
        ("control", "server=demo.echo&action=stop", "ControlServer"),
        (
            "control",
            "server=demo.echo&node=node-a&action=restart",
            "ControlServer",
        ),
        (
            "patch",
            "server=demo.echo&version=1.0.0&batch=1",
            "StartRollout",
        ),
        ("rollback", "server=demo.echo", "StartRollout"),
        (
            "expand",
            "server=demo.echo&nodes=node-a&preview=true",
            "Expand",
        ),
        (
            "expand",
            "server=demo.echo&nodes=node-a&preview=false",
            "Expand",
        ),
    ];
    for (path, form, call) in posts {
        let url = format!("{base}/act/{path}");
        let (code, body) = curl(&["-H", &cookie, "-H", &csrf, "-H", &origin, "-d", form, &url]);
        assert!(
            code == 403 && body.contains("role viewer") && body.contains(call),
            "viewer {path} {form}: {code} {body}"
        );
    }
    // Logging out is no change to the fleet: a viewer may.
    let (code, _) = curl(&[
        "-H",
        &cookie,
        "-H",
        &csrf,
        "-H",
        &origin,
        "-X",
        "POST",
        &format!("{base}/logout"),
    ]);
    assert_eq!(code, 303);
    let refused = audit_until(&f, &["--caller", "eve"], "the viewer's refusals", |rs| {
        rs.len() >= posts.len()
    });
    for rec in &refused {
        assert_eq!(rec["outcome"], "refused", "{rec}");
        assert_eq!(rec["role"], "viewer", "{rec}");
        assert!(
            rec["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("127.0.0.1:")),
            "{rec}"
        );
        assert!(
            rec["error"]
                .as_str()
                .is_some_and(|e| e.contains("role viewer")),
            "{rec}"
        );
    }
    for call in ["ControlServer", "StartRollout", "Expand"] {
        assert!(
            refused.iter().any(|r| r["call"] == call),
            "{call}: {refused:?}"
        );
    }
    // Nothing changed.
    assert_eq!(pid(&f), before, "the instance was not restarted");
    let i = f
        .registry
        .instance("demo.echo", "node-a")
        .expect("instance");
    assert_eq!(i["state"], "running", "{i}");
    let out = f.registry.cli(&["rollout", "list", "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[]",
        "no rollout started"
    );

    // The admin's restart: ok, with the token's name and where it came from.
    let (cookie, csrf) = curl_login(&base, TOKEN);
    let form = "server=demo.echo&node=node-a&action=restart";
    let (code, body) = curl(&[
        "-H",
        &cookie,
        "-H",
        &csrf,
        "-H",
        &origin,
        "-d",
        form,
        &format!("{base}/act/control"),
    ]);
    assert!(
        code == 200 && body.contains("restart requested"),
        "{code} {body}"
    );
    let ok = audit_until(&f, &["--caller", "ops"], "the admin's restart", |rs| {
        rs.iter().any(|r| r["call"] == "ControlServer")
    });
    let rec = ok
        .iter()
        .find(|r| r["call"] == "ControlServer")
        .expect("record");
    assert_eq!(rec["outcome"], "ok", "{rec}");
    assert_eq!(rec["role"], "admin", "{rec}");
    assert_eq!(rec["target"], "demo.echo restart on node-a", "{rec}");
    assert!(
        rec["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{rec}"
    );
    // A failing action is audited as failed, with the error.
    let (code, _) = curl(&[
        "-H",
        &cookie,
        "-H",
        &csrf,
        "-H",
        &origin,
        "-d",
        "server=demo.nope&action=stop",
        &format!("{base}/act/control"),
    ]);
    assert_eq!(code, 404);
    audit_until(&f, &["--caller", "ops"], "the failed action", |rs| {
        rs.iter().any(|r| {
            r["outcome"] == "failed"
                && r["target"] == "demo.nope stop"
                && r["error"].as_str().is_some_and(|e| e.contains("demo.nope"))
        })
    });

    // A wrong token at the login: a refused "Login", counted.
    let (code, _) = curl(&["-H", &origin, "-d", "token=guess", &format!("{base}/login")]);
    assert_eq!(code, 401);
    audit_until(
        &f,
        &["--caller", "(unknown token)"],
        "the failed login",
        |rs| {
            rs.iter()
                .any(|r| r["call"] == "Login" && r["outcome"] == "refused")
        },
    );
    let metrics = http_get(
        format!("127.0.0.1:{}", f.registry.http_port)
            .parse()
            .expect("addr"),
        "/metrics",
    )
    .expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("admin_refused") && l.contains("call=\"Login\"")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.contains("admin_refused")
            && l.contains("call=\"ControlServer\"")
            && l.contains("permission_denied")),
        "{metrics}"
    );
}
