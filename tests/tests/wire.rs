//! The typed wire: a value the receiver does not know is an error it reports, never a
//! default. A real agent is given, by a registry stand-in speaking the session protocol,
//! an instance whose restart policy is a number it does not know; a real registry is
//! sent, by an agent stand-in, a status whose state is one it does not know.

use std::pin::Pin;
use std::time::Duration;

use corral_proto::v1::agent_message::Body as AgentBody;
use corral_proto::v1::agent_server::{Agent as AgentService, AgentServer};
use corral_proto::v1::registry_message::Body as RegistryBody;
use corral_proto::v1::{
    AgentMessage, DesiredState, DownloadChunk, DownloadRequest, HealthStatus, InstanceSpec,
    InstanceState, InstanceStatus, RegistryMessage, RestartPolicy, ServerSpec, StopPolicy, Welcome,
};
use corral_tests::fleet::Fleet;
use corral_tests::{Agent, wait_until};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

const S: Duration = Duration::from_secs(1);

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A registry stand-in: welcomes the agent, sends it `desired`, and passes on every
/// status the agent reports.
struct StandIn {
    desired: DesiredState,
    statuses: mpsc::UnboundedSender<InstanceStatus>,
}

#[tonic::async_trait]
impl AgentService for StandIn {
    type SessionStream = Out<RegistryMessage>;
    type DownloadStream = Out<DownloadChunk>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let welcome = RegistryMessage {
            body: Some(RegistryBody::Welcome(Welcome {
                heartbeat_interval_ms: 1000,
                registry_version: "stand-in".into(),
            })),
        };
        let desired = RegistryMessage {
            body: Some(RegistryBody::Desired(self.desired.clone())),
        };
        let statuses = self.statuses.clone();
        tokio::spawn(async move {
            let _hello = inbound.message().await;
            if tx.send(Ok(welcome)).await.is_err() || tx.send(Ok(desired)).await.is_err() {
                return;
            }
            while let Ok(Some(msg)) = inbound.message().await {
                match msg.body {
                    Some(AgentBody::Status(s)) => {
                        let _ = statuses.send(s);
                    }
                    Some(AgentBody::Reports(r)) => {
                        for s in r.statuses {
                            let _ = statuses.send(s);
                        }
                    }
                    _ => {}
                }
            }
            drop(tx);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn download(
        &self,
        _request: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        Err(Status::unimplemented("the stand-in has no packages"))
    }

    async fn sources(
        &self,
        _request: Request<corral_proto::v1::SourcesRequest>,
    ) -> Result<Response<corral_proto::v1::SourcesReply>, Status> {
        Err(Status::unimplemented("the stand-in has no packages"))
    }
}

/// An instance of `sleep` whose restart policy is `policy`.
fn instance(policy: i32) -> InstanceSpec {
    InstanceSpec {
        app: "demo".into(),
        server: "typed".into(),
        running: true,
        spec: Some(ServerSpec {
            command: vec!["sleep".into(), "1000".into()],
            restart: Some(RestartPolicy {
                policy,
                min_uptime_ms: 1000,
                initial_delay_ms: 100,
                max_delay_ms: 1000,
                max_quick_failures: 3,
            }),
            stop: Some(StopPolicy {
                signal: "SIGTERM".into(),
                timeout_ms: 1000,
            }),
            ..ServerSpec::default()
        }),
        ..InstanceSpec::default()
    }
}

#[test]
fn an_agent_refuses_a_value_it_does_not_know() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (statuses_tx, mut statuses) = mpsc::unbounded_channel();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stand_in = StandIn {
        desired: DesiredState {
            instances: vec![instance(42)],
        },
        statuses: statuses_tx,
    };
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServer::new(stand_in))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = corral_tests::test_ips(1).remove(0);
    let agent = Agent::start(dir.path(), &format!("http://{addr}"), "node-a", &ip);
    let status = wait_until(
        "the agent to report the instance",
        30 * S,
        || match statuses.try_recv() {
            Ok(s) if s.server == "typed" => Ok(s),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        },
    );
    assert_eq!(status.state, i32::from(InstanceState::Failed), "{status:?}");
    assert_eq!(status.pid, 0, "nothing was started: {status:?}");
    assert!(
        status
            .last_error
            .contains("RestartPolicy.policy is 42, a value this version of Corral does not know"),
        "{status:?}"
    );
    assert!(
        agent.log_text().contains("refused a desired state"),
        "the agent logs it"
    );
    drop(agent);
    drop(rt);
}

/// A status whose state the registry does not know is refused, with the field and the
/// number in its log; the instance keeps what the registry knew.
#[test]
fn a_registry_refuses_a_value_it_does_not_know() {
    let f = Fleet::start(1);
    f.registry.apply(
        "app = \"demo\"\nserver = \"typed\"\nnodes = [\"node-a\"]\ncommand = [\"sleep\", \"1000\"]\n",
    );
    let before = f
        .registry
        .wait_instance("demo.typed", "node-a", "running", 30 * S, |i| {
            i["state"] == "running"
        });
    // An agent stand-in joins as a new node and reports a state numbered 99: the report
    // is refused as it is read, before anything is looked up or written.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let addr = f.registry.addr();
    rt.block_on(async {
        let mut client = corral_proto::v1::agent_client::AgentClient::connect(addr)
            .await
            .expect("connect");
        let (tx, rx) = mpsc::channel(4);
        tx.send(AgentMessage {
            body: Some(AgentBody::Hello(corral_proto::v1::Hello {
                protocol_version: corral_proto::PROTOCOL_VERSION,
                node: "node-z".into(),
                identity: "z".repeat(40),
                advertise_ip: "127.0.0.9".into(),
                agent_version: "test".into(),
                new_identity: true,
                ..Default::default()
            })),
        })
        .await
        .expect("hello");
        let mut inbound = client
            .session(ReceiverStream::new(rx))
            .await
            .expect("session")
            .into_inner();
        let _welcome = inbound.message().await.expect("welcome");
        tx.send(AgentMessage {
            body: Some(AgentBody::Status(InstanceStatus {
                app: "demo".into(),
                server: "typed".into(),
                state: 99,
                health: HealthStatus::NoCheck.into(),
                ..InstanceStatus::default()
            })),
        })
        .await
        .expect("status");
        wait_until("the registry to refuse the status", 20 * S, || {
            let log = f.registry.log_text();
            if log.contains("refused a status report it cannot read")
                && log.contains("InstanceStatus.state is 99")
            {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        });
    });
    let after = f
        .registry
        .instance("demo.typed", "node-a")
        .expect("instance");
    assert_eq!(after["state"], before["state"], "{after}");
}
