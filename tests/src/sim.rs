//! Simulated nodes: agent sessions played over the real `Agent.Session` protocol, each
//! reporting one instance `running`, so a test gets many endpoints without many agent
//! processes. Dropping [`SimNodes`] closes every session.

use std::time::Duration;

use corral_proto::v1::agent_client::AgentClient;
use corral_proto::v1::agent_message::Body;
use corral_proto::v1::{AgentMessage, Heartbeat, Hello, HostFacts, InstanceStatus};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub struct SimNodes {
    runtime: Option<tokio::runtime::Runtime>,
    /// Each node's request stream (kept open while the node lives).
    sessions: Vec<mpsc::Sender<AgentMessage>>,
}

impl SimNodes {
    /// Joins one node per `(name, ip)` to the registry at `addr`.
    pub fn join(addr: &str, nodes: &[(String, String)]) -> SimNodes {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let sessions = runtime.block_on(async {
            let mut out = Vec::new();
            for (node, ip) in nodes {
                out.push(session(addr, node, ip).await);
            }
            out
        });
        SimNodes {
            runtime: Some(runtime),
            sessions,
        }
    }

    /// Every node reports its instance of `app.server` in `state`.
    pub fn report(&self, app: &str, server: &str, state: &str) {
        for i in 0..self.sessions.len() {
            self.report_one(i, app, server, state);
        }
    }

    /// The `i`-th node reports its instance of `app.server` in `state`.
    pub fn report_one(&self, i: usize, app: &str, server: &str, state: &str) {
        let Some(rt) = &self.runtime else { return };
        rt.block_on(async {
            if let Some(tx) = self.sessions.get(i) {
                let status = InstanceStatus {
                    app: app.into(),
                    server: server.into(),
                    state: corral_proto::wire::number::<corral_proto::v1::InstanceState>(state),
                    health: corral_proto::v1::HealthStatus::NoCheck.into(),
                    pid: if state == "running" { 4242 } else { 0 },
                    started_at_ms: 1,
                    ..Default::default()
                };
                tx.send(AgentMessage {
                    body: Some(Body::Status(status)),
                })
                .await
                .expect("the session is open");
            }
        });
    }
}

impl Drop for SimNodes {
    fn drop(&mut self) {
        self.sessions.clear();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

async fn session(addr: &str, node: &str, ip: &str) -> mpsc::Sender<AgentMessage> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(AgentMessage {
        body: Some(Body::Hello(Hello {
            protocol_version: corral_proto::PROTOCOL_VERSION,
            node: node.into(),
            identity: format!("{node:0>64}"),
            new_identity: true,
            advertise_ip: ip.into(),
            agent_version: "sim".into(),
            join_token: String::new(),
            facts: Some(HostFacts {
                hostname: node.into(),
                os: "Linux".into(),
                ..Default::default()
            }),
        })),
    })
    .await
    .expect("queue the hello");
    let mut client = AgentClient::connect(addr.to_string())
        .await
        .expect("connect");
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .expect("session")
        .into_inner();
    let welcome = inbound
        .message()
        .await
        .expect("welcome")
        .expect("a message");
    let interval = match welcome.body {
        Some(corral_proto::v1::registry_message::Body::Welcome(w)) => {
            Duration::from_millis(w.heartbeat_interval_ms.max(100))
        }
        other => panic!("the first message was not a Welcome: {other:?}"),
    };
    let beat = tx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let msg = AgentMessage {
                body: Some(Body::Heartbeat(Heartbeat { load: None })),
            };
            if beat.send(msg).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    tx
}
