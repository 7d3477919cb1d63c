//! A simulated node over the real `Agent.Session`: joins and heartbeats; the benchmark
//! sends its instance's status reports (the changes it times).

use std::time::Duration;

use anyhow::{Context, bail};
use corral_proto::v1::agent_client::AgentClient;
use corral_proto::v1::agent_message::Body;
use corral_proto::v1::{AgentMessage, Heartbeat, Hello, HostFacts, InstanceStatus};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub struct Sim {
    tx: mpsc::Sender<AgentMessage>,
}

impl Sim {
    pub async fn join(addr: &str, node: &str, ip: &str) -> anyhow::Result<Sim> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(AgentMessage {
            body: Some(Body::Hello(Hello {
                protocol_version: corral_proto::PROTOCOL_VERSION,
                node: node.into(),
                identity: format!("{node:0>64}"),
                new_identity: true,
                advertise_ip: ip.into(),
                agent_version: "bench".into(),
                join_token: String::new(),
                facts: Some(HostFacts {
                    hostname: node.into(),
                    os: "Linux".into(),
                    ..Default::default()
                }),
            })),
        })
        .await?;
        let mut inbound = AgentClient::connect(addr.to_string())
            .await?
            .session(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let welcome = inbound.message().await?.context("no welcome")?;
        let interval = match welcome.body {
            Some(corral_proto::v1::registry_message::Body::Welcome(w)) => {
                Duration::from_millis(w.heartbeat_interval_ms.max(100))
            }
            _ => bail!("the first message was not a Welcome"),
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
        Ok(Sim { tx })
    }

    /// Reports the node's instance of `app.server` in `state`.
    pub async fn report(&self, app: &str, server: &str, state: &str) -> anyhow::Result<()> {
        let status = InstanceStatus {
            app: app.into(),
            server: server.into(),
            state: corral_proto::wire::number::<corral_proto::v1::InstanceState>(state),
            health: corral_proto::v1::HealthStatus::NoCheck.into(),
            pid: if state == "running" { 4242 } else { 0 },
            started_at_ms: 1,
            ..Default::default()
        };
        self.tx
            .send(AgentMessage {
                body: Some(Body::Status(status)),
            })
            .await
            .context("the session closed")
    }
}
