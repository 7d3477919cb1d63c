//! Bad input gets a clear message naming the fault and exit code 2, never a panic.

use std::process::{Command, Output};
use std::time::Duration;

use corral_proto::v1::agent_client::AgentClient;
use corral_proto::v1::agent_message::Body;
use corral_proto::v1::{AgentMessage, Hello};
use corral_tests::{Backend, Registry, TestDb, bin};

fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(bin(binary))
        .args(args)
        .env_remove("CORRAL_LOCATOR")
        .output()
        .expect("run binary")
}

/// Asserts exit code 2, no panic, and that stderr contains every one of `needles`.
fn assert_refused(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

#[test]
fn registry_flags_and_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("r.db").display());
    assert_refused(
        &run("registry", &["serve", "--listen", "nonsense", "--db", &db]),
        &["--listen", "nonsense"],
    );
    assert_refused(
        &run(
            "registry",
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:99999",
                "--db",
                &db,
            ],
        ),
        &["--http", "127.0.0.1:99999"],
    );
    let out = run(
        "registry",
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--db",
            "mysql://corral:hunter2@127.0.0.1:1/x",
        ],
    );
    assert_refused(&out, &["mysql://corral:***@127.0.0.1:1/x"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("hunter2"),
        "password leaked"
    );
    assert_refused(
        &run(
            "registry",
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--db",
                "postgres://h/db",
            ],
        ),
        &["unsupported database URL"],
    );
    let config = dir.path().join("registry.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nlisten_addr = \"x\"\n").expect("write");
    assert_refused(
        &run(
            "registry",
            &["serve", "--config", config.to_str().expect("utf8")],
        ),
        &["registry.toml", "listen_addr"],
    );
    assert_refused(
        &run("registry", &["node", "list", "--addr", "::not a url::"]),
        &["not a valid URL"],
    );
}

#[test]
fn agent_flags_and_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf8");
    assert_refused(
        &run(
            "agent",
            &["run", "--locator", "ftp://x", "--data-dir", data],
        ),
        &["ftp://x"],
    );
    assert_refused(
        &run(
            "agent",
            &[
                "run",
                "--locator",
                "http://127.0.0.1:1,:::",
                "--data-dir",
                data,
            ],
        ),
        &["locator entry"],
    );
    assert_refused(
        &run(
            "agent",
            &[
                "run",
                "--locator",
                "http://127.0.0.1:1",
                "--node",
                "no/slash",
                "--data-dir",
                data,
            ],
        ),
        &["node name", "no/slash"],
    );
    assert_refused(
        &run(
            "agent",
            &[
                "run",
                "--locator",
                "http://127.0.0.1:1",
                "--node",
                &"x".repeat(64),
                "--data-dir",
                data,
            ],
        ),
        &["64 bytes; the limit is 63"],
    );
    assert_refused(
        &run(
            "agent",
            &[
                "run",
                "--locator",
                "http://127.0.0.1:1",
                "--advertise-ip",
                "10.0.0.300",
                "--data-dir",
                data,
            ],
        ),
        &["advertise IP", "10.0.0.300"],
    );
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "locator = \"http://127.0.0.1:1\"\nheartbeat = \"1s\"\n",
    )
    .expect("write");
    assert_refused(
        &run(
            "agent",
            &[
                "run",
                "--config",
                config.to_str().expect("utf8"),
                "--data-dir",
                data,
            ],
        ),
        &["agent.toml", "heartbeat"],
    );
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").expect("write");
    assert_refused(
        &run(
            "agent",
            &[
                "run",
                "--data-dir",
                data,
                "--config",
                empty.to_str().expect("utf8"),
            ],
        ),
        &["no locator"],
    );
}

/// Opens a session that sends `hello` and nothing more; the registry's refusal.
fn refused_hello(registry: &Registry, hello: Hello) -> tonic::Status {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = AgentClient::connect(registry.addr())
            .await
            .expect("connect");
        let hello = AgentMessage {
            body: Some(Body::Hello(hello)),
        };
        let outbound = tokio_stream::iter(vec![hello]).chain(tokio_stream::pending());
        tokio::time::timeout(Duration::from_secs(10), client.session(outbound))
            .await
            .expect("answer in time")
            .expect_err("must be refused")
    })
}

/// A Hello in a protocol version the registry does not speak is refused, naming both.
#[test]
fn unknown_protocol_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let registry = Registry::start(dir.path(), &db.url, &[]);
    let status = refused_hello(
        &registry,
        Hello {
            protocol_version: 99,
            node: "node-x".into(),
            advertise_ip: "127.0.0.9".into(),
            ..Hello::default()
        },
    );
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("99")
            && status
                .message()
                .contains(&corral_proto::PROTOCOL_VERSION.to_string()),
        "{}",
        status.message()
    );
    assert!(registry.node("node-x").is_none(), "nothing was recorded");
}

/// A Hello whose identity is missing, too short or too long is refused, naming the
/// identity and the limits; nothing is recorded.
#[test]
fn a_weak_identity_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let registry = Registry::start(dir.path(), &db.url, &[]);
    for identity in [String::new(), "short".to_string(), "x".repeat(257)] {
        let status = refused_hello(
            &registry,
            Hello {
                protocol_version: corral_proto::PROTOCOL_VERSION,
                node: "node-x".into(),
                identity: identity.clone(),
                new_identity: true,
                advertise_ip: "127.0.0.9".into(),
                ..Hello::default()
            },
        );
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let msg = status.message();
        assert!(
            msg.contains("identity") && msg.contains(&format!("{} characters", identity.len())),
            "{msg}"
        );
    }
    assert!(registry.node("node-x").is_none(), "nothing was recorded");
}

use tokio_stream::StreamExt as _;
