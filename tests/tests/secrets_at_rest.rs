//! Secrets at rest and in everything the fleet shows: a value stored for an instance
//! appears in clear only in that instance's files, never in a CLI output, an admin or
//! discovery answer, `/metrics`, an event, a log line of the registry or an agent, or the
//! database (SQLite and MySQL, where replicas share the key). A registry started with
//! another key, or none, refuses to start and names what it cannot open.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corral_tests::secrets::{cli_listings, holding, http_bodies, logs_under, output, put_ok};
use corral_tests::{Agent, Backend, Registry, TestDb, bin, free_port, lookup, wait_until};

const S: Duration = Duration::from_secs(1);

const SPEC: &str = "app = \"demo\"\nserver = \"leak\"\nnodes = [\"node-a\", \"node-b\"]\n\
    command = [\"sh\", \"-c\", \"exec sleep 100000\"]\n\
    [[adapters]]\nname = \"Main\"\nport = \"auto\"\n\
    [metrics]\nadapter = \"Main\"\n\
    [[config]]\nname = \"app.conf\"\ntemplate = \"token={{ secret('tok') }}\"\n\
    [[files]]\nname = \"tok.pem\"\nsecret = \"tok\"\n\
    [[files]]\nname = \"api.txt\"\nsecret = \"api\"\non_change = \"none\"\n";

/// Starts `registry serve` expecting it to refuse: its output, once it has exited.
fn refused_start(db_url: &str, extra: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = Command::new(bin("registry"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http", &format!("127.0.0.1:{}", free_port())])
        .args(["--db", db_url])
        .args(extra)
        .env_remove("CORRAL_SECRET_KEY")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn registry");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > 30 * S {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            panic!("the registry did not refuse to start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!status.success(), "the registry started: {text}");
    text
}

use std::os::unix::process::CommandExt;

/// Every row of every table of a MySQL database, as bytes.
fn mysql_rows(url: &str) -> Vec<(String, Vec<u8>)> {
    use sqlx::{Column, Connection, Row};
    let url = url.to_string();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                let mut conn = sqlx::MySqlConnection::connect(&url).await.expect("connect");
                let tables: Vec<String> = sqlx::query("SHOW TABLES")
                    .fetch_all(&mut conn)
                    .await
                    .expect("tables")
                    .iter()
                    .map(|r| {
                        let b: Vec<u8> = r.try_get_unchecked(0).expect("name");
                        String::from_utf8_lossy(&b).to_string()
                    })
                    .collect();
                let mut out = Vec::new();
                for t in tables {
                    let rows = sqlx::query(&format!("SELECT * FROM `{t}`"))
                        .fetch_all(&mut conn)
                        .await
                        .expect("rows");
                    let mut bytes = Vec::new();
                    for r in &rows {
                        for c in r.columns() {
                            if let Ok(Some(b)) =
                                r.try_get_unchecked::<Option<Vec<u8>>, _>(c.ordinal())
                            {
                                bytes.extend(b);
                                bytes.push(b'|');
                            }
                        }
                        bytes.push(b'\n');
                    }
                    out.push((format!("MySQL table {t} ({} rows)", rows.len()), bytes));
                }
                out
            })
    })
    .join()
    .expect("dump thread")
}

/// The SQLite database: its files as they are on disk, and `sqlite3 .dump`.
fn sqlite_files(db_path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", db_path.display());
        if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    let dump = Command::new("sqlite3")
        .arg(db_path)
        .arg(".dump")
        .output()
        .expect("sqlite3 .dump (Debian's sqlite3)");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(String::from_utf8_lossy(&dump.stdout).contains("INSERT INTO secrets"));
    out.push(("sqlite3 .dump".into(), dump.stdout));
    out
}

fn wait_file(path: &Path, want: &str) {
    wait_until(
        &format!("{} to hold its value", path.display()),
        30 * S,
        || {
            let now = std::fs::read_to_string(path).unwrap_or_default();
            if now == want {
                Ok(())
            } else {
                Err(format!("{} bytes", now.len()))
            }
        },
    );
}

/// The whole check, on one backend: on MySQL with two replicas sharing a key file, the
/// node-b agent on the second, and secrets put and rotated through both.
fn nothing_shows_a_value(backend: Backend) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let Some(db) = TestDb::new(backend, dir) else {
        return;
    };
    let key_file = dir.join("shared.key");
    let key_arg = key_file.to_str().expect("utf8").to_string();
    let extra: Vec<&str> = match backend {
        Backend::Sqlite => vec![],
        Backend::MySql => vec!["--secret-key-file", &key_arg],
    };
    let r1 = Registry::start(dir, &db.url, &extra);
    let r2_dir = dir.join("replica2");
    std::fs::create_dir_all(&r2_dir).expect("mkdir");
    let r2 = (backend == Backend::MySql).then(|| Registry::start(&r2_dir, &db.url, &extra));
    let r_other = r2.as_ref().unwrap_or(&r1);
    let ips = corral_tests::test_ips(2);
    let agents = [
        Agent::start(dir, &r1.addr(), "node-a", &ips[0]),
        Agent::start(dir, &r_other.addr(), "node-b", &ips[1]),
    ];
    for node in ["node-a", "node-b"] {
        r1.wait_node(node, "up", 20 * S, |v| v["state"] == "up");
    }
    let canary = |what: &str| format!("CANARY-{what}-{:016x}", rand::random::<u64>());
    let (tok_a, tok_b, api, tok_a2) = (canary("A"), canary("B"), canary("API"), canary("A2"));
    let mut seen = Vec::new();
    seen.extend(output(
        "put a",
        &put_ok(&r1, dir, "demo.leak", "tok", &["--node", "node-a"], &tok_a),
    ));
    seen.extend(output(
        "put b",
        &put_ok(
            r_other,
            dir,
            "demo.leak",
            "tok",
            &["--node", "node-b"],
            &tok_b,
        ),
    ));
    seen.extend(output(
        "put api",
        &put_ok(&r1, dir, "demo.leak", "api", &["--all", "-o", "json"], &api),
    ));
    seen.extend(output("apply", &r1.apply(SPEC)));
    let file = |agent: &Agent, name: &str| agent.instance_dir("demo.leak").join("conf").join(name);
    wait_file(&file(&agents[0], "tok.pem"), &tok_a);
    wait_file(&file(&agents[1], "tok.pem"), &tok_b);
    wait_file(&file(&agents[1], "app.conf"), &format!("token={tok_b}"));

    // Errors around the values: a template that fails after reading one, and a removal
    // the spec forbids; a dry run of a spec that changes them.
    let bad = SPEC.replace(
        "token={{ secret('tok') }}",
        "{{ secret('tok') | int + [] }}",
    );
    let out = r1.try_apply(&bad, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("withheld"));
    seen.extend(output("bad apply", &out));
    seen.extend(output(
        "dry run",
        &r1.try_apply(&SPEC.replace("none", "restart"), &["--dry-run"]),
    ));
    let out = r1.cli(&["secret", "rm", "demo.leak", "tok", "--node", "node-a"]);
    assert!(!out.status.success());
    seen.extend(output("rm refused", &out));

    // A new value through the other replica reaches node-a's agent on the first.
    seen.extend(output(
        "rotate",
        &put_ok(
            r_other,
            dir,
            "demo.leak",
            "tok",
            &["--node", "node-a"],
            &tok_a2,
        ),
    ));
    wait_file(&file(&agents[0], "tok.pem"), &tok_a2);
    wait_file(&file(&agents[0], "app.conf"), &format!("token={tok_a2}"));
    r1.wait_instance("demo.leak", "node-a", "running again", 30 * S, |i| {
        i["state"] == "running"
    });

    // Everything the fleet shows.
    for (label, r) in [("r1", &r1), ("r2", r_other)] {
        for (l, b) in cli_listings(r, "demo.leak", "node-a") {
            seen.push((format!("{label}: {l}"), b));
        }
        let http: std::net::SocketAddr =
            format!("127.0.0.1:{}", r.http_port).parse().expect("addr");
        let paths: Vec<String> = [
            "/health",
            "/metrics",
            "/v1/endpoints/demo.leak.Main",
            "/v1/prometheus/targets",
            "/",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        seen.extend(http_bodies(http, &paths, &format!("{label} registry")));
    }
    for a in &agents {
        let paths: Vec<String> = ["/health", "/metrics", "/v1/endpoints/demo.leak.Main"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        seen.extend(http_bodies(
            lookup::agent_http(a),
            &paths,
            &format!("agent {}", a.node),
        ));
    }
    seen.extend(logs_under(dir));
    match backend {
        Backend::Sqlite => seen.extend(sqlite_files(&dir.join("registry.db"))),
        Backend::MySql => {
            let rows = mysql_rows(&db.url);
            assert!(
                rows.iter()
                    .any(|(l, _)| l.starts_with("MySQL table secrets (3 rows)")),
                "the dump has the sealed secrets: {:?}",
                rows.iter().map(|r| &r.0).collect::<Vec<_>>()
            );
            seen.extend(rows);
        }
    }

    // Positive control: the search finds a value where it is meant to be.
    let conf = vec![(
        "node-a tok.pem".to_string(),
        std::fs::read(file(&agents[0], "tok.pem")).expect("read"),
    )];
    assert_eq!(holding(&conf, &tok_a2), vec!["node-a tok.pem"]);
    for value in [&tok_a, &tok_b, &api, &tok_a2] {
        let places = holding(&seen, value);
        assert!(
            places.is_empty(),
            "a secret value is shown in clear in {places:#?}"
        );
    }
    assert!(seen.len() > 60, "searched {} places", seen.len());

    // Another key for this database: refused at start, naming what does not open.
    let other_key = dir.join("other.key");
    std::fs::write(&other_key, format!("{}\n", "ef".repeat(32))).expect("write");
    let refused = match backend {
        Backend::MySql => {
            // No key at all, on a database that holds secrets: refused, saying how.
            let none = refused_start(&db.url, &[], &[]);
            assert!(
                none.contains("has no key") && none.contains("--secret-key-file"),
                "{none}"
            );
            refused_start(
                &db.url,
                &["--secret-key-file", other_key.to_str().expect("utf8")],
                &[],
            )
        }
        Backend::Sqlite => {
            let db_key = format!("{}.key", dir.join("registry.db").display());
            let kept = std::fs::read(&db_key).expect("the default key file beside the database");
            drop(agents);
            drop(r1);
            std::fs::write(&db_key, format!("{}\n", "ab".repeat(32))).expect("write");
            let text = refused_start(&db.url, &[], &[]);
            std::fs::remove_file(&db_key).expect("rm");
            let missing = refused_start(&db.url, &[], &[]);
            assert!(
                missing.contains("does not exist") && missing.contains(&db_key),
                "{missing}"
            );
            let env = refused_start(&db.url, &[], &[("CORRAL_SECRET_KEY", &"cd".repeat(32))]);
            assert!(
                env.contains("CORRAL_SECRET_KEY") && env.contains("does not open"),
                "{env}"
            );
            std::fs::write(&db_key, kept).expect("restore");
            text
        }
    };
    assert!(
        refused.contains("does not open")
            && refused.contains("secret")
            && !refused.contains("panicked"),
        "{refused}"
    );
    for value in [&tok_a, &tok_b, &api, &tok_a2] {
        assert!(!refused.contains(value.as_str()));
    }
}

#[test]
fn secret_values_show_nowhere_sqlite() {
    nothing_shows_a_value(Backend::Sqlite);
}

#[test]
fn secret_values_show_nowhere_mysql_replicas_share_the_key() {
    nothing_shows_a_value(Backend::MySql);
}
