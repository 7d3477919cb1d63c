//! Huge values and many problems get a short, clear error: never "h2 protocol error".
//!
//! A gRPC status message travels in an HTTP/2 header; one that repeats a 1 MiB value (or
//! lists 10,000 problems) is bigger than a client accepts, and the user got a transport
//! error instead of the message. Every RPC that takes a string from the user is called
//! here with a 1 MiB one, through the CLI where a command line can carry it and through
//! gRPC directly everywhere.

use std::fmt::Debug;
use std::process::Output;

use corral_proto::v1::admin_client::AdminClient;
use corral_proto::v1::agent_client::AgentClient;
use corral_proto::v1::agent_message::Body;
use corral_proto::v1::query_client::QueryClient;
use corral_proto::v1::upload_chunk::Body as UploadBody;
use corral_proto::v1::*;
use corral_tests::{Backend, Registry, TestDb};
use tokio_stream::StreamExt as _;

/// The longest message the registry sends (registry::error::MAX_MESSAGE_BYTES), with
/// room for the "(message cut …)" note.
const MAX_MESSAGE: usize = 4096 + 100;

fn huge() -> String {
    "x".repeat(1 << 20)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A refused CLI call: exit 2, a short stderr naming `needles`, no transport error.
fn assert_clear(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {err:.2000}");
    assert!(
        err.len() < 8 * 1024,
        "stderr is {} bytes: {err:.2000}",
        err.len()
    );
    assert!(!err.contains("h2 protocol error"), "{err:.2000}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err:.4000}");
    }
}

/// A refused gRPC call: a message the registry wrote, short enough to arrive.
fn assert_short<T: Debug>(what: &str, result: Result<T, tonic::Status>) -> tonic::Status {
    let status = result.expect_err(what);
    let msg = status.message();
    assert!(
        !msg.contains("h2 protocol error") && !msg.contains("transport error"),
        "{what}: {:?}: {msg:.2000}",
        status.code()
    );
    assert!(
        msg.len() <= MAX_MESSAGE,
        "{what}: the message is {} bytes",
        msg.len()
    );
    assert!(
        !matches!(
            status.code(),
            tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::Unavailable
        ),
        "{what}: {:?}: {msg:.2000}",
        status.code()
    );
    status
}

fn registry(dir: &std::path::Path) -> (TestDb, Registry) {
    let db = TestDb::new(Backend::Sqlite, dir).expect("sqlite");
    let registry = Registry::start(dir, &db.url, &[]);
    (db, registry)
}

/// `apply` of a spec whose app name is 1 MiB, and of one that lists 10,000 invalid
/// node names: exit 2 with the problem stated in a few lines.
#[test]
fn huge_and_many_spec_problems_are_stated_briefly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, registry) = registry(dir.path());

    let big = format!(
        "app = \"{}\"\nserver = \"s\"\nnodes = [\"node-a\"]\ncommand = [\"x\"]\n",
        "a".repeat(1 << 20)
    );
    assert_clear(
        &registry.try_apply(&big, &[]),
        &["app name is 1048576 bytes; the limit is 63"],
    );

    let nodes: Vec<String> = (0..10_000).map(|i| format!("\"bad/{i}\"")).collect();
    let many = format!(
        "app = \"a\"\nserver = \"s\"\nnodes = [{}]\ncommand = [\"x\"]\n",
        nodes.join(", ")
    );
    let out = registry.try_apply(&many, &[]);
    assert_clear(
        &out,
        &[
            "has 10,000 problems",
            "nodes[0]: node name \"bad/0\"",
            "… and 9,980 more problems",
        ],
    );
    assert!(stderr(&out).lines().count() < 30, "{}", stderr(&out));

    // A huge (invalid) key in a field path is cut too.
    let key = format!(
        "app = \"a\"\nserver = \"s\"\nnodes = [\"node-a\"]\ncommand = [\"x\"]\nenv = {{ 1{} = \"1\" }}\n",
        "K".repeat(1 << 20)
    );
    assert_clear(&registry.try_apply(&key, &[]), &["env.1KKK", "message cut"]);

    // `expand --to` with 10,000 invalid names (a command line cannot carry 1 MiB).
    let to: Vec<String> = (0..10_000).map(|i| format!("bad_{i}")).collect();
    assert_clear(
        &registry.cli(&["server", "expand", "a.s", "--to", &to.join(",")]),
        &["--to[0]: node name \"bad_0\"", "… and 9,980 more problems"],
    );
    assert!(
        registry.json(&["server", "list"]) == serde_json::json!([]),
        "nothing was applied"
    );
}

/// Every RPC that takes a string from its caller, given 1 MiB: a short message.
#[test]
fn every_rpc_refuses_huge_values_briefly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, registry) = registry(dir.path());
    let addr = registry.addr();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut admin = AdminClient::connect(addr.clone()).await.expect("connect");
        let h = huge();
        let server = format!("{h}.s");

        let spec = ApplyRequest {
            spec_toml: format!(
                "app = \"a\"\nserver = \"s\"\nnodes = [\"{h}\"]\ncommand = [\"x\"]\n"
            ),
            dry_run: false,
            source: h.clone(),
            force: false,
        };
        let s = assert_short("apply", admin.apply(spec).await);
        assert!(
            s.message().contains("node name") && s.message().contains("1048576 bytes"),
            "{}",
            s.message()
        );
        for (what, req) in [
            ("status", ServerStatusRequest { server: h.clone() }),
            (
                "status app.server",
                ServerStatusRequest {
                    server: server.clone(),
                },
            ),
        ] {
            assert_short(what, admin.server_status(req).await);
        }
        // The action is an enum: a number the registry does not know is said briefly too.
        let stop = i32::from(corral_proto::v1::ServerAction::Stop);
        for (action, server, node) in [
            (i32::MAX, "a.s".to_string(), String::new()),
            (stop, server.clone(), String::new()),
            (stop, "a.s".to_string(), h.clone()),
        ] {
            let req = ControlServerRequest {
                server,
                action,
                node,
            };
            assert_short("control", admin.control_server(req).await);
        }
        let expand = |nodes: Vec<String>, from: String| ExpandRequest {
            server: "a.s".into(),
            nodes,
            from,
            preview: true,
        };
        assert_short(
            "expand huge",
            admin.expand(expand(vec![h.clone()], String::new())).await,
        );
        let many: Vec<String> = (0..10_000).map(|i| format!("bad.{i}")).collect();
        let s = assert_short(
            "expand many",
            admin.expand(expand(many, String::new())).await,
        );
        assert!(s.message().contains("9,980 more"), "{}", s.message());
        assert_short(
            "get node",
            admin.get_node(GetNodeRequest { name: h.clone() }).await,
        );
        assert_short(
            "remove node",
            admin
                .remove_node(RemoveNodeRequest { name: h.clone() })
                .await,
        );
        assert_short(
            "list events",
            admin
                .list_events(ListEventsRequest {
                    server: h.clone(),
                    ..Default::default()
                })
                .await,
        );
        assert_short(
            "list packages",
            admin
                .list_packages(ListPackagesRequest { server: h.clone() })
                .await,
        );
        assert_short(
            "remove package",
            admin
                .remove_package(RemovePackageRequest {
                    server: "a.s".into(),
                    version: h.clone(),
                })
                .await,
        );
        for header in [
            UploadHeader {
                server: server.clone(),
                version: "1".into(),
                ..Default::default()
            },
            UploadHeader {
                server: "a.s".into(),
                version: h.clone(),
                ..Default::default()
            },
            UploadHeader {
                server: "a.s".into(),
                version: "1".into(),
                sha256: h.clone(),
                size: 1,
                ..Default::default()
            },
        ] {
            let chunk = UploadChunk {
                body: Some(UploadBody::Header(header)),
            };
            assert_short(
                "upload header",
                admin.upload_package(tokio_stream::iter(vec![chunk])).await,
            );
        }
        for req in [
            StartRolloutRequest {
                server: server.clone(),
                version: "1".into(),
                ..Default::default()
            },
            StartRolloutRequest {
                server: "a.s".into(),
                version: h.clone(),
                nodes: vec![h.clone()],
                ..Default::default()
            },
        ] {
            assert_short("start rollout", admin.start_rollout(req).await);
        }
        assert_short(
            "list rollouts",
            admin
                .list_rollouts(ListRolloutsRequest { server: h.clone() })
                .await,
        );

        let mut query = QueryClient::connect(addr.clone()).await.expect("connect");
        assert_short(
            "find",
            query
                .find(FindRequest {
                    name: h.clone(),
                    ..Default::default()
                })
                .await,
        );
        assert_short(
            "find a.b.huge",
            query
                .find(FindRequest {
                    name: format!("a.b.{h}"),
                    ..Default::default()
                })
                .await,
        );
        assert_short(
            "watch",
            query
                .watch(FindRequest {
                    name: h.clone(),
                    ..Default::default()
                })
                .await,
        );

        let mut agent = AgentClient::connect(addr.clone()).await.expect("connect");
        assert_short(
            "download",
            agent
                .download(DownloadRequest {
                    node: h.clone(),
                    identity: h.clone(),
                    app: h.clone(),
                    server: h.clone(),
                    version: h.clone(),
                    offset: 0,
                })
                .await,
        );
        for hello in [
            Hello {
                protocol_version: corral_proto::PROTOCOL_VERSION,
                node: h.clone(),
                identity: "i".repeat(64),
                new_identity: true,
                advertise_ip: "127.0.0.9".into(),
                ..Hello::default()
            },
            Hello {
                protocol_version: corral_proto::PROTOCOL_VERSION,
                node: "node-x".into(),
                identity: "i".repeat(64),
                new_identity: true,
                advertise_ip: h.clone(),
                ..Hello::default()
            },
        ] {
            let first = AgentMessage {
                body: Some(Body::Hello(hello)),
            };
            let outbound = tokio_stream::iter(vec![first]).chain(tokio_stream::pending());
            let answer =
                tokio::time::timeout(std::time::Duration::from_secs(10), agent.session(outbound))
                    .await
                    .expect("answer in time");
            assert_short("hello", answer);
        }
    });
}
