//! A simulated node over the real `Agent.Session` (the tests' [`SimSession`]): joins and
//! heartbeats; the benchmark sends its instance's status reports (the changes it times).

use anyhow::anyhow;
use corral_tests::sim::SimSession;

pub struct Sim(SimSession);

impl Sim {
    pub async fn join(addr: &str, node: &str, ip: &str) -> anyhow::Result<Sim> {
        let channel = tonic::transport::Endpoint::from_shared(addr.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await?;
        SimSession::join(channel, SimSession::hello(node, ip, "bench"), 0.0)
            .await
            .map(Sim)
            .map_err(|e| anyhow!(e))
    }

    /// Reports the node's instance of `app.server` in `state`.
    pub async fn report(&self, app: &str, server: &str, state: &str) -> anyhow::Result<()> {
        self.0
            .report(app, server, state)
            .await
            .map_err(|e| anyhow!(e))
    }
}
