//! TLS on the gRPC port and mutual TLS for agents, with certificates from
//! `registry tls init`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use corral_tests::{Agent, Backend, Registry, TestDb, bin, wait_until};

const S: Duration = Duration::from_secs(1);
const ADMIN: &str = "admin-tls";

fn tls_init(dir: &Path) {
    let out = Command::new(bin("registry"))
        .args(["tls", "init"])
        .arg(dir)
        .output()
        .expect("tls init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

#[test]
fn tls_and_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    tls_init(&certs);
    for key in ["ca.key", "registry.key", "agent.key", "admin.key"] {
        let mode = std::fs::metadata(certs.join(key))
            .expect(key)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key} is private");
    }
    let again = Command::new(bin("registry"))
        .args(["tls", "init"])
        .arg(&certs)
        .output()
        .expect("tls init");
    assert_eq!(
        again.status.code(),
        Some(2),
        "existing certificates are not overwritten without --force"
    );

    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let (cert, key, ca) = (
        p(&certs, "registry.pem"),
        p(&certs, "registry.key"),
        p(&certs, "ca.pem"),
    );
    let registry = Registry::start(
        dir.path(),
        &db.url,
        &[
            "--admin-token",
            ADMIN,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
            "--http-tls-cert",
            &cert,
            "--http-tls-key",
            &key,
        ],
    );
    assert!(registry.addr().starts_with("https://"));

    // An agent with a certificate the CA signed joins.
    let (acert, akey) = (p(&certs, "agent.pem"), p(&certs, "agent.key"));
    let data = dir.path().join("agent-a");
    let _a = Agent::start_with_args(
        &registry.addr(),
        "node-a",
        "127.0.0.2",
        &data,
        &["--tls-ca", &ca, "--tls-cert", &acert, "--tls-key", &akey],
    );
    registry.wait_node("node-a", "node-a up over mTLS", 20 * S, |n| {
        n["state"] == "up"
    });

    // One without a certificate is refused by the agent service, with a message saying why.
    let data = dir.path().join("agent-b");
    let mut no_cert = Agent::start_with_args(
        &registry.addr(),
        "node-b",
        "127.0.0.3",
        &data,
        &["--tls-ca", &ca],
    );
    assert_eq!(no_cert.wait_exit(20 * S), Some(2));
    assert!(
        no_cert.log_text().contains("client certificate"),
        "{}",
        no_cert.log_text()
    );

    // One whose certificate another CA signed never gets through the handshake.
    let other = dir.path().join("other");
    tls_init(&other);
    let data = dir.path().join("agent-c");
    let untrusted = Agent::start_with_args(
        &registry.addr(),
        "node-c",
        "127.0.0.4",
        &data,
        &[
            "--tls-ca",
            &ca,
            "--tls-cert",
            &p(&other, "agent.pem"),
            "--tls-key",
            &p(&other, "agent.key"),
        ],
    );
    wait_until("the untrusted agent to be turned away", 20 * S, || {
        let log = untrusted.log_text();
        if log.contains("registry unavailable") {
            Ok(())
        } else {
            Err(log)
        }
    });
    assert!(registry.node("node-c").is_none() && registry.node("node-b").is_none());

    // The admin CLI over TLS, with the token; a client trusting another CA is refused.
    let ok = registry.cli(&["node", "list", "-o", "json"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let wrong_ca = Command::new(bin("registry"))
        .args([
            "node",
            "list",
            "--addr",
            &registry.addr(),
            "--token",
            ADMIN,
            "--ca",
            &p(&other, "ca.pem"),
        ])
        .env_remove("CORRAL_CA")
        .output()
        .expect("cli");
    assert!(
        !wrong_ca.status.success(),
        "a registry certificate from an untrusted CA is refused"
    );
    let bad_cert = Command::new(bin("registry"))
        .args([
            "node",
            "list",
            "--addr",
            &registry.addr(),
            "--token",
            ADMIN,
            "--ca",
            &ca,
        ])
        .args([
            "--cert",
            &p(&other, "admin.pem"),
            "--key",
            &p(&other, "admin.key"),
        ])
        .output()
        .expect("cli");
    assert!(
        !bad_cert.status.success(),
        "a client certificate from an untrusted CA is refused"
    );
    let plain = Command::new(bin("registry"))
        .args([
            "node",
            "list",
            "--addr",
            &format!("http://127.0.0.1:{}", registry.grpc_port),
            "--token",
            ADMIN,
        ])
        .env_remove("CORRAL_CA")
        .output()
        .expect("cli");
    assert!(!plain.status.success(), "plain TCP to a TLS port fails");

    // The HTTP side speaks TLS too.
    let health = format!("https://127.0.0.1:{}/health", registry.http_port);
    let ok = Command::new("curl")
        .args(["-sS", "--fail", "--cacert", &ca, &health])
        .output()
        .expect("curl");
    assert!(
        ok.status.success(),
        "{health}: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"ok\""));
    let untrusted = Command::new("curl")
        .args(["-sS", "--fail", "--cacert", &p(&other, "ca.pem"), &health])
        .output()
        .expect("curl");
    assert!(
        !untrusted.status.success(),
        "a client that does not trust our CA is refused"
    );
    let plain = format!("http://127.0.0.1:{}/health", registry.http_port);
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", &plain])
        .output()
        .expect("curl");
    assert!(!out.status.success(), "plain HTTP to the TLS port fails");
}
