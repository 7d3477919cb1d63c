//! Nobody gets in without a credential: admin tokens, join tokens, per-node identities.

use std::process::Command;
use std::time::Duration;

use corral_proto::v1::agent_client::AgentClient;
use corral_proto::v1::agent_message::Body;
use corral_proto::v1::{AgentMessage, DownloadRequest, Hello, InstanceEvent, InstanceStatus};
use corral_tests::packages::release;
use corral_tests::{Agent, Backend, Registry, TestDb, bin, wait_until};
use tokio_stream::StreamExt as _;

const S: Duration = Duration::from_secs(1);
const ADMIN: &str = "admin-s3cret";
/// The identity a hand-made agent makes up for itself.
const IMPOSTOR_IDENTITY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const JOIN: &str = "join-s3cret";

fn secured(dir: &std::path::Path, extra: &[&str]) -> (TestDb, Registry) {
    let db = TestDb::new(Backend::Sqlite, dir).expect("sqlite");
    let args = [&["--admin-token", ADMIN, "--join-token", JOIN][..], extra].concat();
    let registry = Registry::start(dir, &db.url, &args);
    (db, registry)
}

/// The CLI with an explicit token (or none).
fn cli(registry: &Registry, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(bin("registry"));
    cmd.args(args)
        .arg("--addr")
        .arg(registry.addr())
        .env_remove("CORRAL_TOKEN");
    if let Some(t) = token {
        cmd.arg("--token").arg(t);
    }
    cmd.output().expect("cli")
}

/// Waits for a refused `call` by `caller` (on `target`, unless empty) from 127.0.0.1 in
/// the audit log.
fn refused_in_audit(registry: &Registry, call: &str, caller: &str, target: &str) {
    wait_until(
        &format!("a refused {call} in the audit log"),
        10 * S,
        || {
            let out = cli(registry, Some(ADMIN), &["audit", "-o", "json"]);
            let rows: serde_json::Value =
                serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {out:?}"))?;
            let found = rows.as_array().into_iter().flatten().any(|r| {
                r["call"] == call
                    && r["caller"] == caller
                    && r["outcome"] == "refused"
                    && (target.is_empty() || r["target"] == target)
                    && r["source"].as_str().is_some_and(|s| s.starts_with("127."))
            });
            if found { Ok(()) } else { Err(rows.to_string()) }
        },
    );
}

#[test]
fn admin_calls_need_the_right_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, registry) = secured(dir.path(), &[]);
    let none = cli(&registry, None, &["node", "list"]);
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("needs an admin token"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    let wrong = cli(&registry, Some("guess"), &["node", "list"]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not valid"));
    let right = cli(&registry, Some(ADMIN), &["node", "list", "-o", "json"]);
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    // Discovery reads need it too, unless the registry makes them public.
    let find = cli(&registry, None, &["endpoints", "a.b.C"]);
    assert!(String::from_utf8_lossy(&find.stderr).contains("needs an admin token"));
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], registry.http_port));
    let (code, _, _) = corral_tests::http_get_any(http, "/v1/endpoints/a.b.C").expect("GET");
    assert_eq!(code, 401);
    // Each refusal is in the audit log, discovery's too, with where it came from.
    refused_in_audit(&registry, "Query", "(no token)", "");
    refused_in_audit(&registry, "HttpDiscovery", "(no token)", "");
    refused_in_audit(&registry, "ListNodes", "(unknown token)", "");
    let dir2 = tempfile::tempdir().expect("tempdir");
    let (_db2, public) = secured(dir2.path(), &["--public-discovery"]);
    let find = cli(&public, None, &["endpoints", "a.b.C"]);
    assert!(
        String::from_utf8_lossy(&find.stderr).contains("no service"),
        "{}",
        String::from_utf8_lossy(&find.stderr)
    );
}

#[test]
fn a_registry_on_a_public_address_refuses_to_run_without_tokens() {
    let out = Command::new(bin("registry"))
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--http",
            "127.0.0.1:0",
            "--db",
            "sqlite::memory:",
        ])
        .env_remove("CORRAL_ADMIN_TOKENS")
        .env_remove("CORRAL_JOIN_TOKEN")
        .output()
        .expect("serve");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--admin-token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn agents_need_the_join_token_and_then_their_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, registry) = secured(dir.path(), &[]);
    let mut stranger = Agent::start(dir.path(), &registry.addr(), "node-x", "127.0.0.9");
    assert_eq!(
        stranger.wait_exit(20 * S),
        Some(2),
        "no join token: refused"
    );
    assert!(
        stranger.log_text().contains("join token"),
        "{}",
        stranger.log_text()
    );
    let data = dir.path().join("agent-wrong");
    let mut wrong = Agent::start_with_args(
        &registry.addr(),
        "node-y",
        "127.0.0.9",
        &data,
        &["--join-token", "guess"],
    );
    assert_eq!(wrong.wait_exit(20 * S), Some(2));
    assert!(wrong.log_text().contains("not valid"));
    assert!(
        registry.node("node-x").is_none() && registry.node("node-y").is_none(),
        "neither joined"
    );
    refused_in_audit(&registry, "Join", "(agent)", "node \"node-x\"");
    refused_in_audit(&registry, "Join", "(agent)", "node \"node-y\"");

    let data = dir.path().join("agent-a");
    let mut member = Agent::start_with_args(
        &registry.addr(),
        "node-a",
        "127.0.0.2",
        &data,
        &["--join-token", JOIN],
    );
    registry.wait_node("node-a", "node-a up", 20 * S, |n| n["state"] == "up");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.join("identity"))
            .expect("identity")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the identity is private");
    // Once joined, its identity is its credential: it rejoins without the join token.
    let before = registry.node("node-a").expect("node-a");
    member.kill();
    let mut again = Agent::start_with_data_dir(&registry.addr(), "node-a", "127.0.0.2", &data);
    registry.wait_node("node-a", "node-a back", 20 * S, |n| {
        n["state"] == "up" && n["connected_at_ms"].as_i64() > before["connected_at_ms"].as_i64()
    });
    // Removing the node revokes it.
    again.kill();
    registry.wait_node("node-a", "node-a down", 20 * S, |n| n["state"] == "down");
    assert!(registry.cli(&["node", "remove", "node-a"]).status.success());
    again.restart();
    assert_eq!(
        again.wait_exit(20 * S),
        Some(2),
        "a removed node's identity no longer works"
    );
}

/// A node reports and downloads only for itself.
#[test]
fn a_node_cannot_act_for_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, registry) = secured(dir.path(), &[]);
    let data_b = dir.path().join("agent-b");
    let _b = Agent::start_with_args(
        &registry.addr(),
        "node-b",
        "127.0.0.3",
        &data_b,
        &["--join-token", JOIN],
    );
    registry.wait_node("node-b", "node-b up", 20 * S, |n| n["state"] == "up");
    let pkg = corral_tests::packages::write(dir.path(), "app.tgz", &release("1.0.0", false));
    let up = registry.cli(&[
        "package",
        "upload",
        pkg.to_str().expect("utf8"),
        "--server",
        "demo.app",
        "--version",
        "1.0.0",
    ]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    registry.apply("app = \"demo\"\nserver = \"app\"\nnodes = [\"node-b\"]\ncommand = [\"bin/server\"]\npackage = \"1.0.0\"\n");
    let real = registry.wait_instance("demo.app", "node-b", "running", 30 * S, |i| {
        i["state"] == "running"
    });

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // An impostor joins as node-x and reports a status for demo.app.
        let mut client = AgentClient::connect(registry.addr())
            .await
            .expect("connect");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let hello = Hello {
            protocol_version: corral_proto::PROTOCOL_VERSION,
            node: "node-x".into(),
            identity: IMPOSTOR_IDENTITY.into(),
            new_identity: true,
            advertise_ip: "127.0.0.9".into(),
            join_token: JOIN.into(),
            ..Hello::default()
        };
        tx.send(AgentMessage {
            body: Some(Body::Hello(hello)),
        })
        .await
        .expect("hello");
        let mut inbound = client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("joined")
            .into_inner();
        let welcome = inbound.message().await.expect("welcome").expect("welcome");
        assert!(
            matches!(
                welcome.body,
                Some(corral_proto::v1::registry_message::Body::Welcome(_))
            ),
            "not a welcome: {welcome:?}"
        );
        let identity = IMPOSTOR_IDENTITY.to_string();
        let forged = InstanceStatus {
            app: "demo".into(),
            server: "app".into(),
            state: corral_proto::v1::InstanceState::CrashLooping.into(),
            health: corral_proto::v1::HealthStatus::NoCheck.into(),
            pid: 1,
            ..InstanceStatus::default()
        };
        tx.send(AgentMessage {
            body: Some(Body::Status(forged)),
        })
        .await
        .expect("status");
        // The registry handles a session's messages in order: once this event is
        // recorded, the forged report has been handled too.
        tx.send(AgentMessage {
            body: Some(Body::Event(InstanceEvent {
                app: "demo".into(),
                server: "app".into(),
                from: "forged".into(),
                to: "barrier".into(),
                reason: "the forged report has been handled".into(),
                at_ms: 0,
                kind: corral_proto::v1::EventKind::State.into(),
            })),
        })
        .await
        .expect("event");
        // Its identity does not get it node-b's package, nor a server it does not run.
        let as_b = DownloadRequest {
            node: "node-b".into(),
            identity: identity.clone(),
            app: "demo".into(),
            server: "app".into(),
            version: "1.0.0".into(),
            offset: 0,
        };
        let err = first_error(&mut client, as_b).await;
        assert_eq!(
            err.code(),
            tonic::Code::Unauthenticated,
            "{}",
            err.message()
        );
        let as_x = DownloadRequest {
            node: "node-x".into(),
            identity,
            app: "demo".into(),
            server: "app".into(),
            version: "1.0.0".into(),
            offset: 0,
        };
        let err = first_error(&mut client, as_x).await;
        assert_eq!(
            err.code(),
            tonic::Code::PermissionDenied,
            "{}",
            err.message()
        );
        drop(tx);
    });
    wait_until("the impostor's barrier event", 20 * S, || {
        let events = registry.events("demo.app");
        if events.iter().any(|e| e["to"] == "barrier") {
            Ok(())
        } else {
            Err(format!("{events:?}"))
        }
    });
    let after = registry
        .instance("demo.app", "node-b")
        .expect("node-b's instance");
    assert_eq!(
        (after["state"].as_str(), &after["pid"]),
        (Some("running"), &real["pid"]),
        "the forged report changed nothing"
    );
}

async fn first_error(
    client: &mut AgentClient<tonic::transport::Channel>,
    req: DownloadRequest,
) -> tonic::Status {
    match client.download(req).await {
        Err(s) => s,
        Ok(r) => match r.into_inner().next().await {
            Some(Err(s)) => s,
            other => panic!("expected a refusal, got {other:?}"),
        },
    }
}

/// By default an agent runs no service as root: a spec must name a user. With `user`
/// set, the service runs as that user.
#[test]
fn services_do_not_run_as_root_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, registry) = secured(dir.path(), &[]);
    let data = dir.path().join("agent-a");
    let a = Agent::start_strict(
        &registry.addr(),
        "node-a",
        "127.0.0.2",
        &data,
        &["--join-token", JOIN],
    );
    registry.wait_node("node-a", "node-a up", 20 * S, |n| n["state"] == "up");
    registry.apply("app = \"demo\"\nserver = \"asroot\"\nnodes = [\"node-a\"]\ncommand = [\"sleep\", \"1000\"]\n");
    let i = registry.wait_instance("demo.asroot", "node-a", "refused", 20 * S, |i| {
        i["state"] == "failed"
    });
    assert!(
        i["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("may not run as root")),
        "{i}"
    );
    // The table says it too, under LAST ERROR (it used to show the health value there),
    // and so does the agent's log, from its start on.
    let out = registry.cli(&["server", "status", "demo.asroot"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let header = table.lines().next().unwrap_or("");
    let row = table.lines().nth(1).unwrap_or("");
    let column = header.find("LAST ERROR").expect("a LAST ERROR column");
    assert!(
        row.get(column..)
            .is_some_and(|e| e.starts_with("services may not run as root")),
        "{table}"
    );
    assert!(
        a.log_text().contains("without --allow-root"),
        "the agent says so when it starts"
    );
    registry.apply("app = \"demo\"\nserver = \"asnobody\"\nnodes = [\"node-a\"]\ncommand = [\"sleep\", \"1000\"]\nuser = \"nobody\"\n");
    let i = registry.wait_instance("demo.asnobody", "node-a", "running", 20 * S, |i| {
        i["state"] == "running"
    });
    corral_tests::assert_service_process(i["pid"].as_u64().expect("pid") as u32);
    let status = std::fs::read_to_string(format!("/proc/{}/status", i["pid"])).expect("status");
    // The numbers of a line of /proc/PID/status.
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line"))
            .split_whitespace()
            .skip(1)
            .map(|g| g.parse::<u32>().expect("a number"))
            .collect::<Vec<u32>>()
    };
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("lookup")
        .expect("nobody exists");
    assert_eq!(field("Uid:")[0], nobody.uid.as_raw(), "{status}");
    // Its groups are the user's, as a login (initgroups) or systemd's User= gives them:
    // not none at all, and not the agent's.
    let mut want: Vec<u32> = nix::unistd::getgrouplist(c"nobody", nobody.gid)
        .expect("getgrouplist")
        .iter()
        .map(|g| g.as_raw())
        .collect();
    want.sort_unstable();
    want.dedup();
    let mut groups = field("Groups:");
    groups.sort_unstable();
    assert_eq!(groups, want, "supplementary groups of the service");
    assert_eq!(field("Gid:")[0], nobody.gid.as_raw(), "primary group");
}

/// The client resolver presents a token to a registry whose discovery is not public.
#[test]
fn the_resolver_uses_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, registry) = secured(dir.path(), &[]);
    let data = dir.path().join("agent-a");
    let _a = Agent::start_with_args(
        &registry.addr(),
        "node-a",
        "127.0.0.2",
        &data,
        &["--join-token", JOIN],
    );
    registry.wait_node("node-a", "up", 20 * S, |n| n["state"] == "up");
    registry.apply("app = \"demo\"\nserver = \"svc\"\nnodes = [\"node-a\"]\ncommand = [\"sleep\", \"1000\"]\n[[adapters]]\nname = \"Main\"\nport = \"auto\"\n");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut resolver =
        corral_client::Resolver::new(&registry.addr(), "demo.svc.Main").expect("resolver");
    resolver.token = Some(ADMIN.to_string());
    let rx = rt.block_on(async { resolver.watch() });
    wait_until("the resolver's list", 20 * S, || {
        let list = rx.borrow().clone();
        if list.len() == 1 {
            Ok(())
        } else {
            Err(format!("{list:?}"))
        }
    });
    drop(rt);
}
