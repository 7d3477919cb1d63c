//! Names that cannot work are refused, by the same rule on both ends: node names are DNS
//! labels; adapter names are unique by the variable that carries their port.

use std::process::{Command, Output};
use std::time::Duration;

use corral_proto::v1::agent_client::AgentClient;
use corral_proto::v1::agent_message::Body;
use corral_proto::v1::{AgentMessage, Hello};
use corral_tests::exits::exits_within;
use corral_tests::{Backend, Registry, TestDb, bin};
use tokio_stream::StreamExt as _;

/// Node names accepted before they had to be DNS labels.
const NOT_LABELS: [&str; 7] = [
    ".",
    "..",
    "host.example",
    "under_score",
    "-lead",
    "trail-",
    "a..b",
];

/// Runs `agent` with `args`; an agent that takes a bad name keeps running, trying to
/// join, so it is given 10 s to exit.
fn agent_exits(args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("agent"));
    cmd.args(args)
        .env_remove("CORRAL_LOCATOR")
        .env_remove("CORRAL_NODE");
    exits_within(&format!("agent {args:?}"), cmd, Duration::from_secs(10))
}

fn assert_refused(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

fn spec(nodes: &[&str], adapters: &[&str]) -> String {
    let nodes: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
    let mut text = format!(
        "app = \"demo\"\nserver = \"names\"\nnodes = [{}]\ncommand = [\"sleep\", \"60\"]\n",
        nodes.join(", ")
    );
    for a in adapters {
        text.push_str(&format!("[[adapters]]\nname = \"{a}\"\nport = \"auto\"\n"));
    }
    text
}

/// `agent run --node NAME` with a name that is not a DNS label exits 2 at once, saying
/// what a node name is; the same name in a spec, in `expand --to` and in a Hello sent by
/// something that is not our agent is refused by the registry.
#[test]
fn node_names_must_be_dns_labels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf8");
    for name in NOT_LABELS {
        // `--node=NAME`: "-lead" is a value, not a flag.
        let out = agent_exits(&[
            "run",
            "--locator",
            "http://127.0.0.1:1",
            &format!("--node={name}"),
            "--data-dir",
            data,
        ]);
        assert_refused(&out, &["node name", &format!("{name:?}"), "DNS label"]);
    }

    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let registry = Registry::start(dir.path(), &db.url, &[]);
    for name in NOT_LABELS {
        assert_refused(
            &registry.try_apply(&spec(&["node-a", name], &[]), &[]),
            &["nodes[1]: node name", "DNS label"],
        );
    }
    registry.apply(&spec(&["node-a"], &[]));
    for name in NOT_LABELS {
        assert_refused(
            &registry.cli(&["server", "expand", "demo.names", &format!("--to={name}")]),
            &["--to[0]: node name", "DNS label"],
        );
    }

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = AgentClient::connect(registry.addr())
            .await
            .expect("connect");
        for name in NOT_LABELS {
            let hello = AgentMessage {
                body: Some(Body::Hello(Hello {
                    protocol_version: corral_proto::PROTOCOL_VERSION,
                    node: name.to_string(),
                    identity: "i".repeat(64),
                    new_identity: true,
                    advertise_ip: "127.0.0.9".into(),
                    ..Hello::default()
                })),
            };
            let outbound = tokio_stream::iter(vec![hello]).chain(tokio_stream::pending());
            let status = tokio::time::timeout(Duration::from_secs(10), client.session(outbound))
                .await
                .expect("answer in time")
                .expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{name}");
            assert!(
                status.message().contains("DNS label"),
                "{}",
                status.message()
            );
        }
    });
    for name in NOT_LABELS {
        assert!(registry.node(name).is_none(), "{name} was recorded");
    }
}

/// Adapters whose names map to one CORRAL_PORT_* variable (`Main` and `MAIN`, `a-b` and
/// `a_b`) are refused, naming both and the variable; nothing is applied.
#[test]
fn adapter_names_are_unique_by_their_port_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let registry = Registry::start(dir.path(), &db.url, &[]);
    for (a, b, var) in [
        ("Main", "MAIN", "CORRAL_PORT_MAIN"),
        ("a-b", "a_b", "CORRAL_PORT_A_B"),
        ("P2p", "p2P", "CORRAL_PORT_P2P"),
    ] {
        assert_refused(
            &registry.try_apply(&spec(&["node-a"], &["Other", a, b]), &[]),
            &[
                "adapters[2].name",
                &format!("{a:?}"),
                &format!("{b:?}"),
                var,
            ],
        );
    }
    assert_eq!(registry.json(&["server", "list"]), serde_json::json!([]));
    // Distinct variables are fine.
    registry.apply(&spec(&["node-a"], &["Main", "Admin", "a-b", "a-c"]));
}
