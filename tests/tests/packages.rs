//! Packages and rolling patches: upload, deploy, patch in batches, automatic rollback,
//! crafted packages refused on both sides, interrupted downloads, registry restarts.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use corral_tests::packages::{Entry, release, sha256, tar_gz};
use corral_tests::{Agent, Backend, Registry, TestDb, bin, wait_until};
use serde_json::Value;

const S: Duration = Duration::from_secs(1);

struct Fleet {
    registry: Registry,
    agents: Vec<Agent>,
    db: TestDb,
    /// Holds the registry's and agents' files until the fleet is dropped.
    _dir: tempfile::TempDir,
}

fn fleet(nodes: &[(&str, &str)], registry_args: &[&str]) -> Fleet {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let registry = Registry::start(dir.path(), &db.url, registry_args);
    let agents: Vec<Agent> = nodes
        .iter()
        .map(|(n, ip)| Agent::start(dir.path(), &registry.addr(), n, ip))
        .collect();
    for (n, _) in nodes {
        registry.wait_node(n, "up", 20 * S, |v| v["state"] == "up");
    }
    Fleet {
        registry,
        agents,
        db,
        _dir: dir,
    }
}

fn two_nodes() -> Fleet {
    fleet(&[("node-a", "127.0.0.2"), ("node-b", "127.0.0.3")], &[])
}

fn upload(f: &Fleet, version: &str, bytes: &[u8]) -> std::process::Output {
    upload_to(f, "demo.app", version, bytes)
}

fn upload_to(f: &Fleet, server: &str, version: &str, bytes: &[u8]) -> std::process::Output {
    f.registry.upload(server, version, bytes)
}

fn must_upload(f: &Fleet, version: &str, bytes: &[u8]) {
    f.registry.must_upload("demo.app", version, bytes);
}

fn app_spec(nodes: &[&str], version: &str) -> String {
    let nodes: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
    format!(
        "app = \"demo\"\nserver = \"app\"\nnodes = [{}]\ncommand = [\"bin/server\"]\npackage = \"{version}\"\n\
         [restart]\nmin_uptime = \"1s\"\n[stop]\ntimeout = \"2s\"\n",
        nodes.join(", ")
    )
}

fn on_version(f: &Fleet, node: &str, version: &str) -> Value {
    f.registry.wait_instance(
        "demo.app",
        node,
        &format!("running {version}"),
        30 * S,
        |i| i["state"] == "running" && i["version"] == version,
    )
}

fn pid(i: &Value) -> u64 {
    i["pid"].as_u64().unwrap_or(0)
}

/// Deploy 1.0.0 on two nodes; patch to 2.0.0 in batches of 1 with the new code running;
/// a patch to a release that exits at start fails, exits non-zero and leaves both on
/// 2.0.0; a rollback goes back to 1.0.0.
#[test]
fn patch_in_batches_and_roll_back_a_broken_release() {
    let f = two_nodes();
    must_upload(&f, "1.0.0", &release("1.0.0", false));
    must_upload(&f, "2.0.0", &release("2.0.0", false));
    must_upload(&f, "3.0.0", &release("3.0.0", true));
    f.registry.apply(&app_spec(&["node-a", "node-b"], "1.0.0"));
    for n in ["node-a", "node-b"] {
        on_version(&f, n, "1.0.0");
    }

    let out = f.registry.cli(&[
        "patch",
        "demo.app",
        "--version",
        "2.0.0",
        "--batch",
        "1",
        "--min-healthy",
        "1s",
    ]);
    assert!(
        out.status.success(),
        "patch 2.0.0: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (n, agent) in ["node-a", "node-b"].iter().zip(&f.agents) {
        on_version(&f, n, "2.0.0");
        let log = std::fs::read_to_string(agent.instance_dir("demo.app").join("logs/stdout.log"))
            .expect("log");
        assert!(
            log.contains("version 2.0.0 in") && log.contains("releases/2.0.0"),
            "new code runs from its release: {log}"
        );
        let current =
            std::fs::read_link(agent.instance_dir("demo.app").join("current")).expect("current");
        assert_eq!(current, Path::new("releases/2.0.0"));
    }
    let rollouts = f
        .registry
        .json(&["rollout", "list", "--server", "demo.app"]);
    let done = &rollouts[0];
    assert_eq!(done["state"], "succeeded");
    let batches: Vec<u64> = done["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["batch"].as_u64().unwrap_or(9))
        .collect();
    assert_eq!(batches, [0, 1], "batches of 1");
    let before: Vec<Value> = ["node-a", "node-b"]
        .iter()
        .map(|n| on_version(&f, n, "2.0.0"))
        .collect();

    let out = f.registry.cli(&[
        "patch",
        "demo.app",
        "--version",
        "3.0.0",
        "--batch",
        "1",
        "--min-healthy",
        "1s",
        "--deadline",
        "30s",
    ]);
    assert!(
        !out.status.success(),
        "a broken release must fail the patch"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("demo.app@node-a") && err.contains("code 1"),
        "names the instance and its error: {err}"
    );
    let a = on_version(&f, "node-a", "2.0.0");
    let b = on_version(&f, "node-b", "2.0.0");
    assert_ne!(
        pid(&a),
        pid(&before[0]),
        "node-a was switched and rolled back"
    );
    assert_eq!(pid(&b), pid(&before[1]), "node-b was never touched");
    let status = f
        .registry
        .json(&["rollout", "list", "--server", "demo.app"]);
    assert_eq!(status[0]["state"], "failed");
    // The spec still says 2.0.0: a later apply of the same file changes nothing.
    let server = f.registry.json(&["server", "list"]);
    assert_eq!(server[0]["server"], "demo.app");

    let out = f.registry.cli(&["rollback", "demo.app"]);
    assert!(
        out.status.success(),
        "rollback: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in ["node-a", "node-b"] {
        on_version(&f, n, "1.0.0");
    }
}

/// The registry refuses crafted packages at upload, naming the offending entry; nothing
/// is stored.
#[test]
fn crafted_packages_are_refused_at_upload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("registry.toml");
    std::fs::write(&config, "max_unpacked_size = \"1 MiB\"\n").expect("config");
    let f = fleet(
        &[("node-a", "127.0.0.2")],
        &["--config", config.to_str().expect("utf8")],
    );
    let zeros = vec![0u8; 8 << 20];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "traversal",
            tar_gz(&[Entry::RawFile("../../escaped", b"x")]),
            "../../escaped",
        ),
        (
            "absolute",
            tar_gz(&[Entry::RawFile("/tmp/corral-escaped", b"x")]),
            "/tmp/corral-escaped",
        ),
        (
            "symlink",
            tar_gz(&[Entry::Symlink("lib", "../../../etc")]),
            "outside the release",
        ),
        (
            "hardlink",
            tar_gz(&[Entry::HardLink("passwd", "../../etc/passwd")]),
            "outside the release",
        ),
        ("device", tar_gz(&[Entry::Device("dev/tty")]), "device file"),
        (
            "bomb",
            tar_gz(&[Entry::File("zeros", &zeros, 0o644)]),
            "unpacks to more than",
        ),
        (
            "corrupt",
            b"\x1f\x8b\x08\x00this is not really gzip at all".to_vec(),
            "not a valid .tar.gz",
        ),
    ];
    for (name, bytes, needle) in &cases {
        let out = upload(&f, name, bytes);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} must be refused");
        assert!(err.contains(needle), "{name}: {err}");
    }
    // A wrong sha256 on the wire, from a client that lies.
    let good = release("1.0.0", false);
    let status = raw_upload(&f.registry.addr(), "1.0.0", &good, &"0".repeat(64));
    assert!(
        status.message().contains("sha256 mismatch"),
        "{}",
        status.message()
    );
    assert_eq!(
        f.registry.json(&["package", "list"]),
        serde_json::json!([]),
        "nothing was stored"
    );
    assert!(!Path::new("/tmp/corral-escaped").exists());
    // A good package still goes in under the same version afterwards.
    must_upload(&f, "1.0.0", &good);
}

fn raw_upload(addr: &str, version: &str, bytes: &[u8], sha: &str) -> tonic::Status {
    use corral_proto::v1::admin_client::AdminClient;
    use corral_proto::v1::upload_chunk::Body;
    use corral_proto::v1::{UploadChunk, UploadHeader};
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = AdminClient::connect(addr.to_string())
            .await
            .expect("connect");
        let msgs = vec![
            UploadChunk {
                body: Some(Body::Header(UploadHeader {
                    server: "demo.app".into(),
                    version: version.into(),
                    note: String::new(),
                    size: bytes.len() as u64,
                    sha256: sha.into(),
                })),
            },
            UploadChunk {
                body: Some(Body::Data(bytes.to_vec())),
            },
        ];
        client
            .upload_package(tokio_stream::iter(msgs))
            .await
            .expect_err("refused")
    })
}

/// Puts a package straight into the database, past the registry's checks, to prove the
/// agent checks again.
fn smuggle(db_url: &str, version: &str, bytes: &[u8], sha: &str) {
    use sqlx::Connection;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(db_url).await.expect("sqlite");
        sqlx::query("INSERT INTO packages (app, server, version, sha256, size, note, entries, chunk_size, state, created_at_ms) VALUES ('demo', 'app', ?, ?, ?, '', 1, 1048576, 'ready', 1)")
            .bind(version)
            .bind(sha)
            .bind(bytes.len() as i64)
            .execute(&mut conn)
            .await
            .expect("insert package");
        sqlx::query("INSERT INTO package_chunks (app, server, version, seq, data) VALUES ('demo', 'app', ?, 0, ?)")
            .bind(version)
            .bind(bytes)
            .execute(&mut conn)
            .await
            .expect("insert chunk");
    });
}

/// Crafted packages that reach an agent anyway are refused there: nothing is written
/// outside the release and the running release keeps running. So is a download whose
/// bytes do not match the sha256.
#[test]
fn the_agent_refuses_what_the_registry_would_have() {
    let f = fleet(&[("node-a", "127.0.0.2")], &[]);
    must_upload(&f, "1.0.0", &release("1.0.0", false));
    f.registry.apply(&app_spec(&["node-a"], "1.0.0"));
    let running = on_version(&f, "node-a", "1.0.0");
    let instance_dir = f.agents[0].instance_dir("demo.app");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "evil-traversal",
            tar_gz(&[Entry::RawFile("../../escaped", b"x")]),
            "`..`",
        ),
        (
            "evil-symlink",
            tar_gz(&[Entry::Symlink("lib", "../../../etc")]),
            "outside the release",
        ),
        (
            "evil-hardlink",
            tar_gz(&[Entry::HardLink("passwd", "../../etc/passwd")]),
            "outside the release",
        ),
        (
            "evil-device",
            tar_gz(&[Entry::Device("dev/tty")]),
            "device file",
        ),
    ];
    for (version, bytes, needle) in
        cases
            .iter()
            .map(|(v, b, n)| (*v, b.clone(), *n))
            .chain(std::iter::once((
                "evil-checksum",
                release("evil", false),
                "sha256 mismatch",
            )))
    {
        let sha = if version == "evil-checksum" {
            "0".repeat(64)
        } else {
            sha256(&bytes)
        };
        smuggle(&f.db.url, version, &bytes, &sha);
        f.registry.apply(&app_spec(&["node-a"], version));
        let i = f.registry.wait_instance(
            "demo.app",
            "node-a",
            &format!("{version} refused"),
            30 * S,
            |i| {
                i["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains(version))
            },
        );
        let err = i["last_error"].as_str().unwrap_or_default();
        assert!(err.contains(needle), "{version}: {err}");
        assert_eq!(
            (pid(&i), i["version"].as_str()),
            (pid(&running), Some("1.0.0")),
            "{version}: the running release keeps running"
        );
        assert!(
            !instance_dir.join("escaped").exists()
                && !instance_dir.join("releases/escaped").exists()
        );
        assert!(
            !instance_dir.join(format!("releases/{version}")).exists(),
            "no release for {version}"
        );
        assert!(
            !instance_dir
                .join(format!("releases/{version}.partial"))
                .exists()
        );
    }
    assert_eq!(
        std::fs::read_link(instance_dir.join("current")).expect("current"),
        Path::new("releases/1.0.0")
    );
}

/// An agent killed in the middle of a download resumes it when it comes back, and a
/// half-unpacked release left by a crash is thrown away: the instance ends up on a
/// complete release with nothing partial left.
#[test]
fn an_agent_killed_mid_download_recovers() {
    let mut f = fleet(&[("node-a", "127.0.0.2")], &["--download-rate", "2 MiB"]);
    let noise: Vec<u8> = (0..6 << 20).map(|_| rand::random::<u8>()).collect();
    let script = b"#!/bin/sh\necho big release\nexec sleep 1000\n";
    let big = tar_gz(&[
        Entry::Dir("bin"),
        Entry::File("bin/server", script, 0o755),
        Entry::File("data.bin", &noise, 0o644),
    ]);
    must_upload(&f, "1.0.0", &big);
    f.registry.apply(&app_spec(&["node-a"], "1.0.0"));
    let cache = f.agents[0].data_dir.join("cache");
    let partial = cache.join(format!("{}.partial", sha256(&big)));
    wait_until("a partial download", 30 * S, || {
        match std::fs::metadata(&partial) {
            Ok(m) if m.len() > 512 * 1024 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    f.agents[0].kill();
    let got = std::fs::metadata(&partial).expect("partial kept").len();
    assert!(
        got < big.len() as u64,
        "killed before the end ({got} bytes)"
    );
    // As if a crash had also interrupted an unpack.
    let instance_dir = f.agents[0].instance_dir("demo.app");
    std::fs::create_dir_all(instance_dir.join("releases/1.0.0.partial/bin")).expect("mkdir");
    std::fs::write(
        instance_dir.join("releases/1.0.0.partial/bin/server"),
        "half",
    )
    .expect("write");

    f.agents[0].restart();
    on_version(&f, "node-a", "1.0.0");
    assert!(
        f.agents[0].log_text().contains("resuming a download"),
        "the download resumed"
    );
    assert!(!partial.exists(), "no partial download is left");
    assert!(cache.join(sha256(&big)).exists());
    assert!(
        !instance_dir.join("releases/1.0.0.partial").exists(),
        "no partial release is left"
    );
    assert_eq!(
        std::fs::read_link(instance_dir.join("current")).expect("current"),
        Path::new("releases/1.0.0")
    );
    assert_eq!(
        std::fs::read(instance_dir.join("releases/1.0.0/data.bin")).expect("data"),
        noise
    );
    // The registry counts the chunks it sent (the whole package at least once, over the
    // two downloads) and those it read from the database for them: one more at most, the
    // chunk the download cut by the kill had read and could no longer send.
    let text = corral_tests::http_get(
        format!("127.0.0.1:{}", f.registry.http_port)
            .parse()
            .expect("addr"),
        "/metrics",
    )
    .expect("metrics");
    let counter = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    let sent = counter("corral_registry_package_chunks_sent_total");
    let read = counter("corral_registry_package_chunks_read_total");
    let chunks = (big.len() as u64).div_ceil(1 << 20);
    assert!(
        sent >= chunks,
        "{sent} chunks sent, the package has {chunks}"
    );
    assert!(
        (1..=sent + 1).contains(&read),
        "{read} read for {sent} sent"
    );
}

/// A registry killed during a rollout resumes it when it starts again: the rollout is
/// not left silently half-done.
#[test]
fn a_registry_restart_during_a_rollout_resumes_it() {
    let mut f = two_nodes();
    must_upload(&f, "1.0.0", &release("1.0.0", false));
    must_upload(&f, "2.0.0", &release("2.0.0", false));
    f.registry.apply(&app_spec(&["node-a", "node-b"], "1.0.0"));
    for n in ["node-a", "node-b"] {
        on_version(&f, n, "1.0.0");
    }
    let mut cli = Command::new(bin("registry"))
        .args([
            "patch",
            "demo.app",
            "--version",
            "2.0.0",
            "--batch",
            "1",
            "--min-healthy",
            "2s",
            "--addr",
            &f.registry.addr(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("patch");
    let id = wait_until("the first batch switched", 30 * S, || {
        let list = f.registry.json(&["rollout", "list"]);
        let r = &list[0];
        let switched = r["instances"]
            .as_array()
            .is_some_and(|i| i.iter().any(|i| i["phase"] == "starting"));
        if switched {
            r["id"].as_i64().ok_or("no id".to_string())
        } else {
            Err(r.to_string())
        }
    });
    f.registry.kill();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(cli.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = cli.wait();
    f.registry.restart();
    let r = wait_until("the rollout to finish after the restart", 60 * S, || {
        let r = f.registry.json(&["rollout", "status", &id.to_string()]);
        if r["state"] == "succeeded" || r["state"] == "failed" {
            Ok(r)
        } else {
            Err(r.to_string())
        }
    });
    assert_eq!(r["state"], "succeeded", "{r}");
    for n in ["node-a", "node-b"] {
        on_version(&f, n, "2.0.0");
    }
    assert!(
        f.registry.log_text().contains("resuming a rollout"),
        "the new registry took it over"
    );
}

/// Two servers whose packages are the same bytes, deployed at once on one node, share
/// its download: one cache file, whole and intact, and both releases complete, with no
/// failed install on the way.
#[test]
fn two_servers_with_the_same_package_share_one_download() {
    let f = fleet(&[("node-a", "127.0.0.2")], &["--download-rate", "4 MiB"]);
    let noise: Vec<u8> = (0..4 << 20).map(|_| rand::random::<u8>()).collect();
    let pkg = tar_gz(&[
        Entry::Dir("bin"),
        Entry::File("bin/server", b"#!/bin/sh\nexec sleep 1000\n", 0o755),
        Entry::File("data.bin", &noise, 0o644),
    ]);
    let servers = ["one", "two"];
    for server in servers {
        let out = upload_to(&f, &format!("demo.{server}"), "1.0.0", &pkg);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for server in servers {
        f.registry.apply(&format!(
            "app = \"demo\"\nserver = \"{server}\"\nnodes = [\"node-a\"]\ncommand = [\"bin/server\"]\npackage = \"1.0.0\"\n"
        ));
    }
    for server in servers {
        f.registry.wait_instance(
            &format!("demo.{server}"),
            "node-a",
            "running 1.0.0",
            30 * S,
            |i| i["state"] == "running" && i["version"] == "1.0.0",
        );
        let dir = f.agents[0].instance_dir(&format!("demo.{server}"));
        assert_eq!(
            std::fs::read(dir.join("releases/1.0.0/data.bin")).expect("data"),
            noise
        );
    }
    let cache = f.agents[0].data_dir.join("cache");
    let files: Vec<String> = std::fs::read_dir(&cache)
        .expect("cache")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        vec![sha256(&pkg)],
        "one whole download, nothing partial"
    );
    assert_eq!(
        std::fs::read(cache.join(sha256(&pkg))).expect("cached"),
        pkg
    );
    let log = f.agents[0].log_text();
    assert!(
        !log.contains("sha256 mismatch") && !log.contains("install failed"),
        "no install failed on the way:\n{log}"
    );
}
