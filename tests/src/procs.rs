//! Real `registry` and `agent` processes, each in its own process group, killed on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use crate::{alive, wait_until};

/// A built binary of the workspace (`registry` or `agent`). `scripts/test.sh` builds them
/// first; `CORRAL_BIN_DIR` points elsewhere if needed.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("CORRAL_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            // target/<profile>/deps/<test-exe> -> target/<profile>/
            let exe = std::env::current_exe().expect("current_exe");
            exe.parent()
                .and_then(Path::parent)
                .expect("test binary lives in target/<profile>/deps")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (cargo build --bins), or set CORRAL_BIN_DIR",
        path.display()
    );
    path
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Runs `start`, which picks free ports of its own, until it does not fail because one
/// of them was taken by another test before the process bound it (5 tries at most);
/// panics on any other failure, naming `what`.
pub fn start_on_free_ports<T>(what: &str, mut start: impl FnMut() -> Result<T, String>) -> T {
    for _ in 1..5 {
        match start() {
            Ok(started) => return started,
            Err(e) if e.contains("Address already in use") => {}
            Err(e) => panic!("{what} did not start: {e}"),
        }
    }
    start().unwrap_or_else(|e| panic!("{what} did not start: {e}"))
}

/// A child process in its own process group, with stdout/stderr in files.
struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        let err = out.try_clone().expect("clone log");
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env_remove("CORRAL_ADDR")
            .env("RUST_LOG", "info")
            .process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Proc {
            child: Some(child),
            log,
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }

    /// SIGKILLs the whole group and reaps the leader.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit on its own; its exit code.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let status = wait_until("process exit", timeout, || match child.try_wait() {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err("still running".into()),
            Err(e) => Err(e.to_string()),
        });
        self.child = None;
        status.code()
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("---- {} (last lines) ----", self.log.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A `registry serve` process.
pub struct Registry {
    proc: Proc,
    pub grpc_port: u16,
    pub http_port: u16,
    pub db_url: String,
    pub extra: Vec<String>,
    /// The admin token the harness's CLI calls send.
    pub token: Option<String>,
    /// The CA that signed the registry's certificate, when it serves TLS.
    pub tls_ca: Option<PathBuf>,
    dir: PathBuf,
    starts: u32,
}

impl Registry {
    /// Starts a registry on fresh ports and waits until it answers. A free port can be
    /// taken by another test before the registry binds it: then it starts again on
    /// other ports.
    pub fn start(dir: &Path, db_url: &str, extra: &[&str]) -> Registry {
        start_on_free_ports("the registry", || {
            Registry::start_on(dir, db_url, extra, free_port(), free_port())
        })
    }

    fn start_on(
        dir: &Path,
        db_url: &str,
        extra: &[&str],
        grpc_port: u16,
        http_port: u16,
    ) -> Result<Registry, String> {
        // The CLI calls of the harness use the first admin token the registry was given:
        // its secret, when it is given as NAME:SECRET.
        let token = extra
            .windows(2)
            .find(|w| w[0] == "--admin-token")
            .map(|w| w[1].split_once(':').map_or(w[1], |(_, s)| s).to_string());
        // With TLS, the CA beside the registry's certificate (the layout `registry tls init`
        // writes) is what the harness's CLI calls trust.
        let tls_ca = extra
            .windows(2)
            .find(|w| w[0] == "--tls-cert")
            .and_then(|w| Path::new(w[1]).parent().map(|d| d.join("ca.pem")));
        let mut r = Registry {
            token,
            tls_ca,
            proc: Proc {
                child: None,
                log: dir.join("registry-0.log"),
            },
            grpc_port,
            http_port,
            db_url: db_url.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir: dir.to_path_buf(),
            starts: 0,
        };
        r.launch()?;
        Ok(r)
    }

    /// Starts the process and waits until it answers; Err(its log) if it exits first.
    fn launch(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(bin("registry"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.grpc_port))
            .arg("--http")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .arg("--db")
            .arg(&self.db_url)
            .args(&self.extra);
        self.starts += 1;
        let log = self.dir.join(format!("registry-{}.log", self.starts));
        self.proc = Proc::spawn(cmd, log);
        let addr = self.addr();
        // The readiness probe: an admin call, with the token and CA the registry wants.
        let mut probe = Command::new(bin("registry"));
        probe
            .args(["node", "list", "--addr", &addr])
            .env_remove("CORRAL_TOKEN")
            .env_remove("CORRAL_CA");
        if let Some(t) = &self.token {
            probe.env("CORRAL_TOKEN", t);
        }
        if let Some(ca) = &self.tls_ca {
            probe.env("CORRAL_CA", ca);
        }
        let proc = &mut self.proc;
        wait_until("registry to answer", Duration::from_secs(30), || {
            if !proc.running() {
                return Ok(Err(format!("registry exited: {}", proc.log_text())));
            }
            let out = probe.output().map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(Ok(()))
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into())
            }
        })
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS)
    pub fn addr(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.grpc_port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts the registry again on the same ports and database.
    pub fn restart(&mut self) {
        self.proc.kill();
        if let Err(e) = self.launch() {
            panic!("the registry did not start again: {e}");
        }
    }

    /// Runs an admin command against this registry.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin("registry"));
        cmd.args(args)
            .arg("--addr")
            .arg(self.addr())
            .env_remove("CORRAL_TOKEN");
        if let Some(t) = &self.token {
            cmd.env("CORRAL_TOKEN", t);
        }
        if let Some(ca) = &self.tls_ca {
            cmd.env("CORRAL_CA", ca);
        }
        cmd.output().expect("run registry CLI")
    }

    /// Runs an admin command with `-o json` and parses its output; panics on failure.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.cli(&[args, &["-o", "json"]].concat());
        assert!(
            out.status.success(),
            "registry {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    /// `package upload` of `bytes` (written to a file first) as `version` of `server`.
    pub fn upload(&self, server: &str, version: &str, bytes: &[u8]) -> Output {
        let name = format!("pkg-{}-{version}.tgz", server.replace('/', "_"));
        let path = crate::packages::write(&self.dir, &name, bytes);
        self.cli(&[
            "package",
            "upload",
            path.to_str().expect("utf8"),
            "--server",
            server,
            "--version",
            version,
        ])
    }

    /// [`Registry::upload`], failing the test with the CLI's error unless it succeeded.
    pub fn must_upload(&self, server: &str, version: &str, bytes: &[u8]) {
        let out = self.upload(server, version, bytes);
        assert!(
            out.status.success(),
            "upload {server} {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Applies a spec given as TOML text; panics if the registry refuses it.
    pub fn apply(&self, toml: &str) -> Output {
        let path = self
            .dir
            .join(format!("spec-{}.toml", rand::random::<u32>()));
        std::fs::write(&path, toml).expect("write spec");
        let out = self.cli(&["apply", "-f", path.to_str().expect("utf8 path")]);
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Applies a spec and returns the CLI's output whatever it is.
    pub fn try_apply(&self, toml: &str, extra: &[&str]) -> Output {
        let path = self
            .dir
            .join(format!("spec-{}.toml", rand::random::<u32>()));
        std::fs::write(&path, toml).expect("write spec");
        self.cli(&[&["apply", "-f", path.to_str().expect("utf8 path")], extra].concat())
    }

    /// The instance of `server` on `node` from `server status -o json`.
    pub fn instance(&self, server: &str, node: &str) -> Result<Value, String> {
        let out = self.cli(&["server", "status", server, "-o", "json"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into());
        }
        let list: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        crate::find(&list, "node", node)
            .cloned()
            .ok_or_else(|| format!("no instance on {node}: {list}"))
    }

    /// Waits until the instance satisfies `pred`; returns it.
    pub fn wait_instance(
        &self,
        server: &str,
        node: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_until(&format!("{server}@{node}: {what}"), timeout, || {
            let i = self.instance(server, node)?;
            if pred(&i) { Ok(i) } else { Err(i.to_string()) }
        })
    }

    /// Waits until the node is listed and satisfies `pred`; returns its entry.
    pub fn wait_node(
        &self,
        node: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_until(&format!("{node}: {what}"), timeout, || {
            match self.node(node) {
                Some(n) if pred(&n) => Ok(n),
                other => Err(format!("{other:?}")),
            }
        })
    }

    /// The events of a server, oldest first.
    pub fn events(&self, server: &str) -> Vec<Value> {
        let v = self.json(&["events", "--server", server, "--limit", "1000"]);
        v.as_array().cloned().unwrap_or_default()
    }

    /// The node's entry in `node list -o json`, if listed.
    pub fn node(&self, name: &str) -> Option<Value> {
        let list = self.json(&["node", "list"]);
        crate::find(&list, "name", name).cloned()
    }

    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.proc.kill();
        kill_services(&self.data_dir);
        crate::cgroups::clean_up(&self.data_dir);
    }
}

/// Kills the process groups of the services an agent's data dir says are running (their
/// start time must still match): services outlive their agent by design, so a test
/// cleans them up itself.
pub fn kill_services(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir.join("instances")) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("state.json")) else {
            continue;
        };
        let Ok(state) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let pid = state["pid"].as_u64().unwrap_or(0) as u32;
        let ticks = state["start_ticks"].as_u64().unwrap_or(0);
        if pid != 0 && start_ticks(pid) == Some(ticks) {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// An `agent run` process. Dropping it kills the agent and the services it runs.
pub struct Agent {
    proc: Proc,
    pub node: String,
    pub ip: String,
    pub locator: String,
    pub data_dir: PathBuf,
    extra: Vec<String>,
    starts: u32,
}

impl Agent {
    /// Starts `agent run` as node `node` advertising `ip`; data dir under `dir`.
    pub fn start(dir: &Path, locator: &str, node: &str, ip: &str) -> Agent {
        let data_dir = dir.join(format!("agent-{node}"));
        Agent::start_with_data_dir(locator, node, ip, &data_dir)
    }

    pub fn start_with_data_dir(locator: &str, node: &str, ip: &str, data_dir: &Path) -> Agent {
        Agent::start_with_args(locator, node, ip, data_dir, &[])
    }

    /// Test agents let services run as root (the tests run as root); see
    /// [`Agent::start_strict`] for the default policy.
    pub fn start_with_args(
        locator: &str,
        node: &str,
        ip: &str,
        data_dir: &Path,
        extra: &[&str],
    ) -> Agent {
        Agent::start_strict(
            locator,
            node,
            ip,
            data_dir,
            &[&["--allow-root"][..], extra].concat(),
        )
    }

    /// An agent with exactly these extra arguments: services may not run as root unless
    /// they include `--allow-root`.
    pub fn start_strict(
        locator: &str,
        node: &str,
        ip: &str,
        data_dir: &Path,
        extra: &[&str],
    ) -> Agent {
        let mut a = Agent {
            extra: extra.iter().map(|s| s.to_string()).collect(),
            proc: Proc {
                child: None,
                log: data_dir.with_extension("log"),
            },
            node: node.to_string(),
            ip: ip.to_string(),
            locator: locator.to_string(),
            data_dir: data_dir.to_path_buf(),
            starts: 0,
        };
        a.launch();
        a
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(bin("agent"));
        cmd.arg("run")
            .arg("--locator")
            .arg(&self.locator)
            .arg("--node")
            .arg(&self.node)
            .arg("--advertise-ip")
            .arg(&self.ip)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--http")
            .arg(format!("{}:0", self.ip))
            // DNS on a port of its own: agents of tests that run at once never share one.
            .arg("--dns")
            .arg(format!("{}:0", self.ip))
            .args(&self.extra);
        // A cgroup subtree of its own: tests that run at once all have a node-a.
        if !self.extra.iter().any(|a| a == "--cgroup") {
            cmd.arg("--cgroup")
                .arg(crate::cgroups::subtree_name(&self.data_dir));
        }
        self.starts += 1;
        let log = self.data_dir.with_extension(format!("{}.log", self.starts));
        self.proc = Proc::spawn(cmd, log);
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// The directory of an instance on this node.
    pub fn instance_dir(&self, server: &str) -> PathBuf {
        self.data_dir.join("instances").join(server)
    }

    pub fn signal(&self, sig: Signal) {
        self.proc.signal(sig);
    }

    /// SIGKILL, like a crash or OOM kill.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts it again with the same node name and data dir.
    pub fn restart(&mut self) {
        self.proc.kill();
        self.launch();
    }

    pub fn running(&mut self) -> bool {
        self.proc.running()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        self.proc.wait_exit(timeout)
    }

    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }
}

/// The agent that `agent check` starts is no child of this test: this kills it on drop,
/// by the pid in its data dir, and only if that process is an agent of this data dir.
pub struct RespawnedAgent {
    pub data_dir: PathBuf,
}

impl Drop for RespawnedAgent {
    fn drop(&mut self) {
        let Ok(text) = std::fs::read_to_string(self.data_dir.join("agent.pid")) else {
            return;
        };
        let Ok(pid) = text.trim().parse::<i32>() else {
            return;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline)
            .split('\0')
            .any(|arg| Path::new(arg) == self.data_dir);
        if ours && alive(pid as u32) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            wait_until(
                "the respawned agent to die",
                Duration::from_secs(10),
                || {
                    if alive(pid as u32) {
                        Err(format!("pid {pid} still alive"))
                    } else {
                        Ok(())
                    }
                },
            );
        }
    }
}
