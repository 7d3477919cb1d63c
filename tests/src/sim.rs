//! Simulated nodes: agent sessions played over the real `Agent.Session` protocol, each
//! reporting one instance `running`, so a test gets many endpoints without many agent
//! processes. Dropping [`SimNodes`] closes every session.

use std::time::Duration;

use corral_proto::v1::agent_client::AgentClient;
use corral_proto::v1::agent_message::Body;
use corral_proto::v1::{AgentMessage, Heartbeat, Hello, HostFacts, InstanceStatus, LoadReport};
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
                tx.send(SimSession::status(app, server, state))
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
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
        .expect("a registry URL")
        .connect()
        .await
        .expect("connect");
    SimSession::join(channel, SimSession::hello(node, ip, "sim"), 0.0)
        .await
        .expect("join")
        .sender()
}

/// One simulated agent over the real `Agent.Session` protocol: it joins, heartbeats at
/// the interval the registry asks (with a load report, as agents do), and reads and
/// drops what the registry sends; status reports go through it. The tests' simulated
/// nodes and the benchmarks' simulated agents are made of it.
pub struct SimSession {
    tx: mpsc::Sender<AgentMessage>,
    /// From the Hello sent to the Welcome received.
    pub joined_in: Duration,
}

impl SimSession {
    /// The Hello of a new node `node` advertising `ip`, with plausible host facts.
    pub fn hello(node: &str, ip: &str, agent_version: &str) -> Hello {
        Hello {
            protocol_version: corral_proto::PROTOCOL_VERSION,
            node: node.into(),
            identity: format!("{node:0>64}"),
            new_identity: true,
            advertise_ip: ip.into(),
            agent_version: agent_version.into(),
            join_token: String::new(),
            facts: Some(HostFacts {
                hostname: node.into(),
                os: "Linux".into(),
                kernel: "6.1".into(),
                cpu_cores: 8,
                memory_bytes: 32 << 30,
                disk_bytes: 1 << 40,
                data_dir: String::new(),
                cgroups: false,
                cgroups_note: "a simulated agent".into(),
            }),
        }
    }

    /// Joins over `channel`; the first heartbeat goes `spread` (0 to 1) of the way into
    /// the interval, so that many sessions spread theirs, as agents started at different
    /// times do.
    pub async fn join(
        channel: tonic::transport::Channel,
        hello: Hello,
        spread: f64,
    ) -> Result<SimSession, String> {
        let started = std::time::Instant::now();
        let (tx, rx) = mpsc::channel(16);
        let _ = tx
            .send(AgentMessage {
                body: Some(Body::Hello(hello)),
            })
            .await;
        let mut inbound = AgentClient::new(channel)
            .session(ReceiverStream::new(rx))
            .await
            .map_err(|e| format!("session: {e}"))?
            .into_inner();
        let welcome = inbound
            .message()
            .await
            .map_err(|e| format!("welcome: {e}"))?
            .ok_or("the registry closed the session before its Welcome")?;
        let joined_in = started.elapsed();
        let interval = match welcome.body {
            Some(corral_proto::v1::registry_message::Body::Welcome(w)) => {
                Duration::from_millis(w.heartbeat_interval_ms.max(100))
            }
            other => return Err(format!("the first message was not a Welcome: {other:?}")),
        };
        let beat = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(interval.mul_f64(spread.clamp(0.0, 1.0))).await;
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let msg = AgentMessage {
                    body: Some(Body::Heartbeat(Heartbeat {
                        load: Some(LoadReport {
                            cpu_percent: 12.5,
                            load1: 0.5,
                            load5: 0.4,
                            load15: 0.3,
                            memory_used_bytes: 8 << 30,
                            disk_free_bytes: 1 << 39,
                            usage: Vec::new(),
                        }),
                    })),
                };
                if beat.send(msg).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
        Ok(SimSession { tx, joined_in })
    }

    /// The report of an instance of `app.server` in `state` ("running", "stopped", ...).
    pub fn status(app: &str, server: &str, state: &str) -> AgentMessage {
        AgentMessage {
            body: Some(Body::Status(InstanceStatus {
                app: app.into(),
                server: server.into(),
                state: corral_proto::wire::number::<corral_proto::v1::InstanceState>(state),
                health: corral_proto::v1::HealthStatus::NoCheck.into(),
                pid: if state == "running" { 4242 } else { 0 },
                started_at_ms: 1,
                ..Default::default()
            })),
        }
    }

    /// Reports an instance of `app.server` in `state`.
    pub async fn report(&self, app: &str, server: &str, state: &str) -> Result<(), String> {
        self.tx
            .send(Self::status(app, server, state))
            .await
            .map_err(|_| "the session closed".to_string())
    }

    /// The session's sending side (the session lives while a sender does).
    pub fn sender(&self) -> mpsc::Sender<AgentMessage> {
        self.tx.clone()
    }
}
