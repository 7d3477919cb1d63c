//! How long each dashboard page takes to render with 100 nodes and 1,000 instances: a
//! real `registry serve` (SQLite, no admin token), 100 simulated agent sessions, 10
//! servers on every node (ports, a config file), each instance reported starting then
//! running (2,000 events), one package per server; then every page is fetched over
//! HTTP, one request at a time, and p50/p99 of the whole GET are printed.
//!
//!     cargo build --release --bins && cargo run --release -p corral-bench --bin dashboard

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use corral_bench::{free_port, percentile, raise_nofile};
use corral_proto::v1::AgentMessage;
use corral_tests::sim::SimSession;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Servers, each with an instance on every node.
    #[arg(long, default_value_t = 10)]
    servers: usize,
    /// Requests per page.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// The registry binary.
    #[arg(long, default_value = "target/release/registry")]
    registry: PathBuf,
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

fn node(i: usize) -> String {
    format!("sim-{i:03}")
}

/// `registry ARGS --addr ADDR`, failing with its stderr. Setting up 100 nodes keeps the
/// registry busy (every apply sends 100 desired states): a call that found the database
/// pool busy is tried again, up to 5 times.
fn cli(registry: &PathBuf, addr: &str, args: &[&str]) -> anyhow::Result<()> {
    for attempt in 1.. {
        let out = Command::new(registry)
            .args(args)
            .args(["--addr", addr])
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if attempt >= 5 || !err.contains("timed out") {
            bail!("registry {args:?}: {err}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(())
}

/// One GET over a fresh connection; the status line must say 200.
async fn get(port: u16, path: &str) -> anyhow::Result<usize> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).await?;
    if !body.starts_with(b"HTTP/1.1 200") {
        bail!(
            "GET {path}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    Ok(body.len())
}

/// The event an agent sends with a state change.
fn event(server: &str, from: &str, to: &str) -> AgentMessage {
    use corral_proto::v1::agent_message::Body;
    AgentMessage {
        body: Some(Body::Event(corral_proto::v1::InstanceEvent {
            app: "bench".into(),
            server: server.into(),
            from: from.into(),
            to: to.into(),
            reason: "simulated".into(),
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            kind: corral_proto::v1::EventKind::State.into(),
        })),
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (grpc, http) = (free_port()?, free_port()?);
    let child = Command::new(&args.registry)
        .args(["serve", "--listen", &format!("127.0.0.1:{grpc}")])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .arg("--db")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("bench.db").display()
        ))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("start {}", args.registry.display()))?;
    let _registry = KillOnDrop(child);
    let addr = format!("http://127.0.0.1:{grpc}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", grpc))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("registry did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut sessions: Vec<mpsc::Sender<AgentMessage>> = Vec::new();
    for i in 0..args.nodes {
        let channel = Endpoint::from_shared(addr.clone())?.connect().await?;
        let hello = SimSession::hello(
            &node(i),
            &format!("127.3.{}.{}", i / 250, i % 250 + 1),
            "bench",
        );
        let s = SimSession::join(channel, hello, 0.0)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        sessions.push(s.sender());
    }
    let nodes: Vec<String> = (0..args.nodes).map(|i| format!("{:?}", node(i))).collect();
    let pkg = dir.path().join("pkg.tgz");
    std::fs::write(&pkg, corral_tests::packages::release("1.0.0", false))?;
    for s in 0..args.servers {
        let spec = format!(
            "app = \"bench\"\nserver = \"s{s}\"\nnodes = [{}]\ncommand = [\"sleep\", \"1000\"]\n\
             [[adapters]]\nname = \"Main\"\nport = \"auto\"\n\
             [[config]]\nname = \"app.conf\"\ntemplate = \"listen = {{{{ node_ip }}}}:{{{{ ports.Main }}}}\\n\"\n",
            nodes.join(", ")
        );
        let path = dir.path().join(format!("s{s}.toml"));
        std::fs::write(&path, spec)?;
        cli(
            &args.registry,
            &addr,
            &["apply", "-f", path.to_str().unwrap_or_default()],
        )?;
        cli(
            &args.registry,
            &addr,
            &[
                "package",
                "upload",
                pkg.to_str().unwrap_or_default(),
                "--server",
                &format!("bench.s{s}"),
                "--version",
                "1.0.0",
            ],
        )?;
    }
    for (from, state) in [("stopped", "starting"), ("starting", "running")] {
        for tx in &sessions {
            for s in 0..args.servers {
                let server = format!("s{s}");
                tx.send(SimSession::status("bench", &server, state)).await?;
                tx.send(event(&server, from, state)).await?;
            }
        }
    }
    // The reports are written in batches: wait until the last instance shows running.
    let last = format!("/servers/bench.s{}", args.servers - 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http)).await?;
        s.write_all(
            format!("GET {last} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        if body.matches(">running<").count() >= args.nodes * 2 {
            break;
        }
        if Instant::now() > deadline {
            bail!("instances did not all report running");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let pages = [
        "/".to_string(),
        "/servers".into(),
        "/servers/bench.s0".into(),
        format!("/servers/bench.s0/{}", node(0)),
        "/events".into(),
        "/rollouts".into(),
        "/packages".into(),
        "/audit".into(),
    ];
    println!("| page | size | p50 | p99 | max |");
    println!("| --- | --- | --- | --- | --- |");
    for page in &pages {
        let mut times = Vec::with_capacity(args.requests);
        let mut size = 0;
        for _ in 0..args.requests {
            let t = Instant::now();
            size = get(http, page).await?;
            times.push(t.elapsed());
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| `{page}` | {} KiB | {:.1} ms | {:.1} ms | {:.1} ms |",
            size / 1024,
            ms(percentile(&times, 50.0)),
            ms(percentile(&times, 99.0)),
            ms(times[times.len() - 1]),
        );
    }
    drop(sessions);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_nofile()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(&args))
}
