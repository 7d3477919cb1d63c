//! Corral under test: a real `registry serve` on SQLite and a real `agent run` joined to
//! it, both in the harness's temp dir, and servers applied with `registry apply`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::free_port;
use crate::procs::{run_checked, wait_for_port};
use crate::supervisors::{Harness, Setup};

/// The node name the agent joins as, and that every spec names.
const NODE: &str = "bench";

/// A registry and one agent; `harness.supervisor_pid` is the agent.
pub struct Corral {
    pub harness: Harness,
    /// The registry's gRPC address, for the admin CLI.
    pub addr: String,
    pub registry_pid: u32,
    /// Applies refused with SQLite's "database is locked" and tried again: a Corral
    /// problem the benchmark works around, and reports.
    pub apply_retries: usize,
    registry: PathBuf,
    /// The agent's data dir: its cgroup subtree is named after it (and removed on drop).
    pub data_dir: PathBuf,
}

impl Drop for Corral {
    /// Kills what is left in the agent's cgroup subtree and removes it.
    fn drop(&mut self) {
        corral_tests::cgroups::clean_up(&self.data_dir);
    }
}

impl Corral {
    /// Starts the registry, then the agent, and waits until the node is up.
    pub fn start(setup: &Setup) -> anyhow::Result<Corral> {
        Corral::start_with(setup, "corral", true)
    }

    /// The same, named `name`; with each instance in a cgroup of its own, or (`cgroups`
    /// false) in process groups only, as before cgroups (`--cgroup off`).
    pub fn start_with(setup: &Setup, name: &str, cgroups: bool) -> anyhow::Result<Corral> {
        let mut harness = Harness::new(name, setup)?;
        let dir = harness.dir().to_path_buf();
        let (grpc, http) = (free_port()?, free_port()?);
        let addr = format!("http://127.0.0.1:{grpc}");
        let mut serve = Command::new(&setup.registry);
        serve
            .args(["serve", "--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .arg("--db")
            .arg(format!("sqlite://{}", dir.join("r.db").display()));
        let registry_pid = harness.spawn(&mut serve, "registry")?;
        wait_for_port(grpc, Duration::from_secs(20))?;
        let data_dir = dir.join("agent");
        let cgroup = if cgroups {
            corral_tests::cgroups::subtree_name(&data_dir)
        } else {
            "off".into()
        };
        let mut agent = Command::new(&setup.agent);
        agent
            .args(["run", "--locator", &addr, "--node", NODE])
            .args(["--advertise-ip", "127.0.0.1", "--http", "127.0.0.1:0"])
            .args(["--dns", "127.0.0.1:0"])
            // The benchmark may run as root; the child is the same for every supervisor.
            .arg("--allow-root")
            .args(["--cgroup", &cgroup])
            .arg("--data-dir")
            .arg(&data_dir);
        harness.supervisor_pid = harness.spawn(&mut agent, "agent")?;
        let mut corral = Corral {
            harness,
            addr,
            registry_pid,
            apply_retries: 0,
            registry: setup.registry.clone(),
            data_dir,
        };
        corral.wait_node_up(Duration::from_secs(20))?;
        Ok(corral)
    }

    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(&self.registry);
        cmd.env("CORRAL_ADDR", &self.addr);
        cmd
    }

    /// Polls `registry node show` until the agent's node is up.
    fn wait_node_up(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = run_checked(self.cli().args(["node", "show", NODE, "-o", "json"]));
            let compact: Option<String> = out
                .ok()
                .map(|s| s.chars().filter(|c| !c.is_whitespace()).collect());
            if compact.is_some_and(|s| s.contains("\"state\":\"up\"")) {
                return Ok(());
            }
            self.harness.check_alive()?;
            if Instant::now() > deadline {
                bail!("node {NODE} not up after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Applies server `bench.SERVER` on this node: the child with its record file,
    /// restarted always, with a 1 s minimum uptime (so that a kill after a longer run is
    /// not a quick failure and gets no backoff). Everything else is the spec default.
    pub fn apply(&mut self, server: &str, child: &Path, record: &Path) -> anyhow::Result<()> {
        let spec = format!(
            "command = [{child:?}, {record:?}]\n\n[restart]\npolicy = \"always\"\nmin_uptime = \"1s\"\n",
            child = child.display().to_string(),
            record = record.display().to_string(),
        );
        self.apply_spec(server, &spec)
    }

    /// Applies `bench.SERVER` on this node with `rest` of the spec (command and more).
    pub fn apply_spec(&mut self, server: &str, rest: &str) -> anyhow::Result<()> {
        let spec = format!("app = \"bench\"\nserver = \"{server}\"\nnodes = [\"{NODE}\"]\n{rest}");
        let file = self.harness.dir().join(format!("{server}.toml"));
        std::fs::write(&file, spec)?;
        let mut attempts = 0;
        loop {
            match run_checked(self.cli().args(["apply", "-f"]).arg(&file)) {
                Ok(_) => return Ok(()),
                Err(e) if attempts < 20 && e.to_string().contains("database is locked") => {
                    attempts += 1;
                    self.apply_retries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
