//! Corral under test for the `distribute` and `discovery` benchmarks: one real
//! `registry serve` on SQLite and real `agent run` processes, all on loopback, each in a
//! process group of its own. Dropping the [`Fleet`] stops the agents with SIGTERM (they
//! run with `--stop-services-on-exit`, so they stop their services), SIGKILLs whatever is
//! left of their groups, then the services the benchmark saw and the registry.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use corral_bench::free_port;
use corral_proto::v1::admin_client::AdminClient;
use corral_proto::v1::{ApplyRequest, InstanceInfo, ListNodesRequest, ServerStatusRequest};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint};

/// A process started by the benchmark, leader of its own process group.
pub struct Proc {
    child: Child,
    name: String,
    pub log: PathBuf,
    stopped: bool,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, name: &str, log: &Path) -> anyhow::Result<Proc> {
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = cmd
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {:?}", cmd.get_program()))?;
        Ok(Proc {
            child,
            name: name.to_string(),
            log: log.to_path_buf(),
            stopped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with the end of its log, if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); end of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 20)
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL to the whole group if it has not exited within `grace`.
    fn stop(&mut self, grace: Duration) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The last `n` lines of a log file (empty if it cannot be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub struct AgentProc {
    pub node: String,
    /// Its HTTP address (`IP:PORT`): health, metrics and local discovery (the discovery
    /// benchmark's watchers of the agent use it; this one does not).
    #[allow(dead_code)]
    pub http: String,
    pub data_dir: PathBuf,
    pub proc: Proc,
}

pub struct Fleet {
    pub agents: Vec<AgentProc>,
    pub registry: Proc,
    /// The registry's gRPC address, `http://127.0.0.1:PORT`.
    pub addr: String,
    /// The registry's HTTP port (`/metrics`).
    pub http: u16,
    pub dir: PathBuf,
    agent_bin: PathBuf,
    /// Pids of services the agents started (each leads its own group), killed on drop
    /// if an agent did not stop them.
    services: Vec<u32>,
}

impl Fleet {
    /// Starts `registry serve` with its database in `dir` and waits for its gRPC port.
    pub fn start(registry_bin: &Path, agent_bin: &Path, dir: &Path) -> anyhow::Result<Fleet> {
        let grpc = free_port()?;
        let http = free_port()?;
        let mut registry = Proc::spawn(
            Command::new(registry_bin)
                .arg("serve")
                .args(["--listen", &format!("127.0.0.1:{grpc}")])
                .args(["--http", &format!("127.0.0.1:{http}")])
                .arg("--db")
                .arg(format!("sqlite://{}", dir.join("registry.db").display())),
            "registry",
            &dir.join("registry.log"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
            registry.check_alive()?;
            if Instant::now() > deadline {
                bail!("the registry did not listen on 127.0.0.1:{grpc} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Fleet {
            agents: Vec::new(),
            registry,
            addr: format!("http://127.0.0.1:{grpc}"),
            http,
            dir: dir.to_path_buf(),
            agent_bin: agent_bin.to_path_buf(),
            services: Vec::new(),
        })
    }

    /// Starts `agent run` for `node`, advertising `ip`, its data dir under the fleet's dir.
    pub fn add_agent(&mut self, node: &str, ip: &str) -> anyhow::Result<()> {
        let data_dir = self.dir.join(node);
        std::fs::create_dir_all(&data_dir)?;
        let http = format!("{ip}:{}", free_port()?);
        let proc = Proc::spawn(
            Command::new(&self.agent_bin)
                .arg("run")
                .args([
                    "--locator",
                    &self.addr,
                    "--node",
                    node,
                    "--advertise-ip",
                    ip,
                ])
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--http", &http])
                .args(["--dns", &format!("{ip}:0")])
                .args(["--allow-root", "--stop-services-on-exit"]),
            &format!("agent {node}"),
            &self.dir.join(format!("{node}.log")),
        )?;
        self.agents.push(AgentProc {
            node: node.to_string(),
            http,
            data_dir,
            proc,
        });
        Ok(())
    }

    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.registry.check_alive()?;
        for a in &mut self.agents {
            a.proc.check_alive()?;
        }
        Ok(())
    }

    pub async fn admin(&self) -> anyhow::Result<AdminClient<Channel>> {
        let channel = Endpoint::from_shared(self.addr.clone())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to {}", self.addr))?;
        Ok(AdminClient::new(channel))
    }

    /// Waits until every agent's node is `up`.
    pub async fn wait_nodes_up(
        &mut self,
        admin: &mut AdminClient<Channel>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let nodes = admin
                .list_nodes(ListNodesRequest {})
                .await?
                .into_inner()
                .nodes;
            let up = self.agents.iter().all(|a| {
                nodes.iter().any(|n| {
                    n.name == a.node && n.state == i32::from(corral_proto::v1::NodeState::Up)
                })
            });
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not every node was up within {timeout:?}: {nodes:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Remembers the pids of running instances, so they are killed even if an agent is not
    /// there to stop them.
    pub fn note_services(&mut self, instances: &[InstanceInfo]) {
        for i in instances {
            if i.pid != 0 && !self.services.contains(&i.pid) {
                self.services.push(i.pid);
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for a in &self.agents {
            let _ = kill(Pid::from_raw(a.proc.pid() as i32), Signal::SIGTERM);
        }
        for a in &mut self.agents {
            a.proc.stop(Duration::from_secs(10));
        }
        for &pid in &self.services {
            // Only a group that still runs what the benchmark started (`sleep`): the pid
            // may have been reused since.
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let leads = nix::unistd::getpgid(Some(Pid::from_raw(pid as i32)))
                .is_ok_and(|g| g.as_raw() == pid as i32);
            if comm.trim() == "sleep" && leads {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        self.registry.stop(Duration::from_secs(5));
    }
}

/// Applies a spec (the `registry apply` call).
pub async fn apply(admin: &mut AdminClient<Channel>, spec: &str) -> anyhow::Result<()> {
    admin
        .apply(ApplyRequest {
            spec_toml: spec.to_string(),
            dry_run: false,
            source: "bench.toml".into(),
            force: false,
        })
        .await
        .context("apply")?;
    Ok(())
}

/// `registry server status SERVER`.
pub async fn status(
    admin: &mut AdminClient<Channel>,
    server: &str,
) -> anyhow::Result<Vec<InstanceInfo>> {
    Ok(admin
        .server_status(ServerStatusRequest {
            server: server.to_string(),
        })
        .await?
        .into_inner()
        .instances)
}
