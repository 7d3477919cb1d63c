//! The node whose death the benchmark times: one simulated agent session in a process of
//! its own (this program, run with `--victim-of`), so that SIGKILL ends it as it ends a
//! real agent, with the kernel closing its connection.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use corral_bench::procs::Group;
use corral_tests::sim::SimSession;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;

/// The victim's node name, server and endpoint name.
pub const NODE: &str = "victim";
const ENDPOINT: &str = "bench.victim.Main";

/// The spec that places the victim's server (with one adapter, so that it has an
/// endpoint) on the victim node.
pub const SPEC: &str = "app = \"bench\"\nserver = \"victim\"\nnodes = [\"victim\"]\n\
    command = [\"sleep\", \"1000\"]\n[[adapters]]\nname = \"Main\"\nport = \"auto\"\n";

/// `--victim-of ADDR`: joins as the victim, reports its instance running, and waits to
/// be killed.
pub fn run(addr: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(addr.to_string())?
            .connect()
            .await?;
        let session = SimSession::join(channel, SimSession::hello(NODE, "127.2.0.1", "bench"), 0.0)
            .await
            .map_err(|e| anyhow::anyhow!("the victim's session: {e}"))?;
        session
            .report("bench", "victim", "running")
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        eprintln!("victim: joined and reported");
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// The registry CLI against one registry.
pub struct Cli<'a> {
    pub registry: &'a Path,
    pub addr: &'a str,
}

impl Cli<'_> {
    pub fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(self.registry)
            .args(args)
            .arg("--addr")
            .arg(self.addr)
            .env_remove("CORRAL_TOKEN")
            .env_remove("CORRAL_CA")
            .output()
            .with_context(|| format!("run {} {args:?}", self.registry.display()))
    }

    fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let out = self.run(&[args, &["-o", "json"]].concat())?;
        if !out.status.success() {
            bail!(
                "registry {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    pub fn apply(&self, dir: &Path, toml: &str) -> anyhow::Result<()> {
        let path = dir.join("victim.toml");
        std::fs::write(&path, toml)?;
        let out = self.run(&["apply", "-f", &path.display().to_string()])?;
        if !out.status.success() {
            bail!("apply: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// The victim's node state and how many endpoints it has.
    fn victim(&self) -> anyhow::Result<(String, usize)> {
        let node = self.json(&["node", "show", NODE])?;
        let eps = self.json(&["endpoints", ENDPOINT])?;
        let n = eps.as_array().map_or(0, |a| {
            a.iter()
                .filter(|e| e["node"].as_str() == Some(NODE))
                .count()
        });
        Ok((node["state"].as_str().unwrap_or("").to_string(), n))
    }

    /// Polls (every 20 ms) until `pred` holds of the victim; how long that took.
    fn wait(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str, usize) -> bool,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let mut last = Err(anyhow::anyhow!("not asked yet"));
        while start.elapsed() < timeout {
            last = self.victim();
            if let Ok((state, n)) = &last
                && pred(state, *n)
            {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("the victim node: {what} not within {timeout:?}; last seen: {last:?}")
    }
}

/// Starts the victim, waits until it is up with its endpoint, SIGKILLs it, and returns
/// how long until the registry lists it `down` with no endpoint.
pub fn down_after_kill(cli: &Cli, dir: &Path) -> anyhow::Result<Duration> {
    let exe = std::env::current_exe()?;
    let victim = Group::spawn(
        Command::new(exe).args(["--victim-of", cli.addr]),
        &dir.join("victim.log"),
    )?;
    cli.wait("up with its endpoint", Duration::from_secs(60), |s, n| {
        s == "up" && n == 1
    })?;
    killpg(Pid::from_raw(victim.pid() as i32), Signal::SIGKILL)?;
    let took = cli.wait("down with no endpoint", Duration::from_secs(15), |s, n| {
        s == "down" && n == 0
    })?;
    drop(victim);
    Ok(took)
}
