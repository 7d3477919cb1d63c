//! Opens N simulated agent sessions against one real `registry serve` (SQLite) and
//! reports join time, then the registry's CPU and RSS while every session heartbeats at
//! the default interval.
//!
//!     cargo build --release --bins && cargo run --release -p corral-bench --bin sessions -- --counts 1000,5000

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use corral_bench::{cpu_time, free_port, mib, percentile, raise_nofile, status_bytes};
use corral_proto::v1::AgentMessage;
use corral_tests::sim::SimSession;
use tokio::sync::{Semaphore, mpsc};
use tonic::transport::Endpoint;

#[derive(Parser)]
struct Args {
    /// Session counts to measure, comma-separated.
    #[arg(long, default_value = "1000,5000", value_delimiter = ',')]
    counts: Vec<usize>,
    /// How long to sample the registry once every session is open.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    steady: Duration,
    /// The registry binary.
    #[arg(long, default_value = "target/release/registry")]
    registry: PathBuf,
    /// How many joins may be in flight at once (a fleet starting up).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
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

async fn one_agent(
    addr: String,
    i: usize,
    sem: Arc<Semaphore>,
) -> anyhow::Result<(Duration, mpsc::Sender<AgentMessage>)> {
    let permit = sem.acquire_owned().await?;
    let channel = Endpoint::from_shared(addr)?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let hello = SimSession::hello(
        &format!("sim-{i:05}"),
        &format!("127.1.{}.{}", i / 250, i % 250 + 1),
        "bench",
    );
    // The first heartbeats spread over the interval, as real agents started at
    // different times.
    let session = SimSession::join(channel, hello, (i % 100) as f64 / 100.0)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    drop(permit);
    Ok((session.joined_in, session.sender()))
}

async fn measure(args: &Args, n: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let grpc = free_port()?;
    let http = free_port()?;
    let child = Command::new(&args.registry)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{grpc}"),
            "--http",
            &format!("127.0.0.1:{http}"),
        ])
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
    let registry = KillOnDrop(child);
    let pid = registry.0.id();
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
    let rss_idle = status_bytes(pid, "VmRSS")?;

    let sem = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let joins: Vec<_> = (0..n)
        .map(|i| tokio::spawn(one_agent(addr.clone(), i, sem.clone())))
        .collect();
    let mut latencies = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    for j in joins {
        let (lat, tx) = j.await??;
        latencies.push(lat);
        senders.push(tx);
    }
    let join_all = started.elapsed();
    latencies.sort();

    // Let the join burst settle, then sample a steady window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu0 = cpu_time(pid)?;
    let t0 = Instant::now();
    let mut rss_max = 0;
    while t0.elapsed() < args.steady {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_max = rss_max.max(status_bytes(pid, "VmRSS")?);
    }
    let cpu = (cpu_time(pid)? - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
    let hwm = status_bytes(pid, "VmHWM")?;
    println!(
        "| {n} | {:.2} s | {:.1} ms | {:.1} ms | {cpu:.1} % | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
        join_all.as_secs_f64(),
        percentile(&latencies, 50.0).as_secs_f64() * 1000.0,
        percentile(&latencies, 99.0).as_secs_f64() * 1000.0,
        mib(rss_idle),
        mib(rss_max),
        mib(hwm),
    );
    drop(senders);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let limit = raise_nofile()?;
    if limit < 2 * args.counts.iter().max().copied().unwrap_or(0) as u64 + 100 {
        eprintln!("warning: open-files limit {limit} may be too low");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "| sessions | all joined | join p50 | join p99 | registry CPU (one core) | RSS idle | RSS steady (max) | RSS peak (VmHWM) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for &n in &args.counts {
        rt.block_on(measure(&args, n))?;
    }
    Ok(())
}
