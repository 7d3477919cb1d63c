//! Observability: the Prometheus `/metrics` of the registry and of the agent, and the
//! standard gRPC health and reflection services on the registry's gRPC port.

use std::net::SocketAddr;
use std::time::Duration;

use corral_tests::{Agent, Backend, Registry, TestDb, http_get, wait_until};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const S: Duration = Duration::from_secs(1);

/// Waits until `GET /metrics` at `addr` has every one of `lines`; returns the text.
fn wait_metrics(what: &str, addr: SocketAddr, lines: &[&str]) -> String {
    wait_until(what, 20 * S, || {
        let text = http_get(addr, "/metrics")?;
        match lines.iter().find(|l| !text.contains(**l)) {
            None => Ok(text),
            Some(missing) => Err(format!("no {missing:?} in:\n{text}")),
        }
    })
}

/// The agent's HTTP address, from the run record it writes in its data dir.
fn agent_http(agent: &Agent) -> SocketAddr {
    let path = agent.data_dir.join("agent.run.json");
    let record = wait_until("the agent's run record", 20 * S, || {
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        serde_json::from_str::<serde_json::Value>(&text).map_err(|e| e.to_string())
    });
    record["http"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP address in {record}"))
}

/// A running instance shows in both binaries' instance gauges, with its server's
/// restarts, and the rollout family is there (all zero).
#[test]
fn metrics_count_instances_by_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let registry = Registry::start(dir.path(), &db.url, &[]);
    let agent = Agent::start(dir.path(), &registry.addr(), "node-a", "127.0.0.2");
    registry.wait_node("node-a", "node-a up", 20 * S, |n| n["state"] == "up");
    registry.apply(
        "app = \"demo\"\nserver = \"sleeper\"\nnodes = [\"node-a\"]\ncommand = [\"sleep\", \"1000\"]\n",
    );
    registry.wait_instance("demo.sleeper", "node-a", "running", 20 * S, |i| {
        i["state"] == "running"
    });

    let registry_http = SocketAddr::from(([127, 0, 0, 1], registry.http_port));
    let text = wait_metrics(
        "the registry's metrics",
        registry_http,
        &[
            "corral_registry_instances{state=\"running\"} 1",
            "corral_registry_instance_restarts{server=\"demo.sleeper\"} 0",
            "corral_registry_nodes{state=\"up\"} 1",
        ],
    );
    assert!(
        text.contains("corral_registry_rollouts{state=\"running\"} 0"),
        "{text}"
    );

    wait_metrics(
        "the agent's metrics",
        agent_http(&agent),
        &[
            "corral_agent_instances{state=\"running\"} 1",
            "corral_agent_instances{state=\"failed\"} 0",
            "corral_agent_instance_restarts{server=\"demo.sleeper\"} 0",
            "corral_agent_connected 1",
        ],
    );
}

/// grpc_health_probe and grpcurl work against the registry's gRPC port: the standard
/// health service says SERVING for the server and for each Corral service, and
/// reflection lists the services.
#[test]
fn grpc_health_and_reflection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let registry = Registry::start(dir.path(), &db.url, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let channel = Channel::from_shared(registry.addr())
            .expect("registry URL")
            .connect()
            .await
            .expect("connect to the registry");

        let mut health = HealthClient::new(channel.clone());
        for service in ["", "corral.v1.Agent", "corral.v1.Admin", "corral.v1.Query"] {
            let answer = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap_or_else(|e| panic!("Health/Check {service:?}: {e}"))
                .into_inner();
            assert_eq!(
                answer.status(),
                ServingStatus::Serving,
                "service {service:?}"
            );
        }
        let unknown = health
            .check(HealthCheckRequest {
                service: "corral.v1.Nope".into(),
            })
            .await
            .expect_err("an unknown service has no status");
        assert_eq!(unknown.code(), tonic::Code::NotFound);

        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("ServerReflectionInfo")
            .into_inner();
        let answer = answers
            .next()
            .await
            .expect("one answer")
            .expect("a list of services");
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("not a list of services: {answer:?}");
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        for name in [
            "corral.v1.Admin",
            "corral.v1.Agent",
            "corral.v1.Query",
            "grpc.health.v1.Health",
        ] {
            assert!(names.contains(&name), "{name} not in {names:?}");
        }
    });
}
