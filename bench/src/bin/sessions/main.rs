//! Opens N simulated agent sessions against one real `registry serve`, on SQLite and on
//! MySQL, and reports how long they take to join; then the registry's CPU and RSS in
//! steady state, while every session heartbeats at the default interval and sends one
//! status report a minute; then how long the registry takes to list a SIGKILLed agent's
//! node `down` and drop its endpoint.
//!
//!     cargo build --release -p corral-registry -p corral-bench --bins
//!     cargo run --release -p corral-bench --bin sessions -- --counts 5000,10000
//!
//! `--smoke` is the short variant CI runs (200 sessions, a few seconds, not timed): it
//! fails when the sessions do not come up or the dead node is not marked down.

mod victim;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use corral_bench::procs::{Group, wait_for_port};
use corral_bench::{cpu_time, free_port, mib, percentile, raise_nofile, status_bytes};
use corral_proto::v1::AgentMessage;
use corral_tests::db::{Backend, TestDb};
use corral_tests::sim::SimSession;
use tokio::sync::{Semaphore, mpsc};
use tonic::transport::Endpoint;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Db {
    Sqlite,
    Mysql,
}

#[derive(Parser)]
struct Args {
    /// Session counts to measure, comma-separated.
    #[arg(long, default_value = "5000,10000", value_delimiter = ',')]
    counts: Vec<usize>,
    /// The databases to measure on, comma-separated. MySQL is the server of
    /// CORRAL_TEST_MYSQL_URL (default mysql://root@127.0.0.1:3306); each run creates a
    /// database of its own and drops it after.
    #[arg(long, default_value = "sqlite,mysql", value_delimiter = ',')]
    db: Vec<Db>,
    /// How long to sample the registry once every session is open (at least a minute,
    /// so that every session's status report of the minute falls in it).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    steady: Duration,
    /// How often each session sends a status report (besides the one at its join).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    status_every: Duration,
    /// The registry binary.
    #[arg(long, default_value = "target/release/registry")]
    registry: PathBuf,
    /// Environment for the registry, NAME=VALUE (e.g. MALLOC_ARENA_MAX=2); repeatable.
    #[arg(long = "registry-env", value_parser = parse_env)]
    registry_env: Vec<(String, String)>,
    /// How many joins may be in flight at once (a fleet starting up).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Print the registry's /proc/PID/smaps_rollup at the end of the steady window.
    #[arg(long)]
    smaps: bool,
    /// The short variant for CI: 200 sessions, 3 s of steady state, status every second.
    #[arg(long)]
    smoke: bool,
    /// (internal) Run the victim session against this registry address.
    #[arg(long, hide = true)]
    victim_of: Option<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

/// One simulated agent: it joins, reports its instance, heartbeats (in [`SimSession`])
/// and reports again every `status_every`, starting at a spread offset.
async fn one_agent(
    addr: String,
    i: usize,
    sem: Arc<Semaphore>,
    status_every: Duration,
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
    // The first heartbeats spread over the interval, as real agents started at different
    // times.
    let spread = (i % 100) as f64 / 100.0;
    let session = SimSession::join(channel, hello, spread)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    drop(permit);
    // An agent reports its instances when its session opens, then as they change: here
    // once every `status_every`, spread as the heartbeats are.
    session
        .report("bench", "sim", "running")
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let tx = session.sender();
    let reports = tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(status_every.mul_f64(spread)).await;
        let mut tick = tokio::time::interval(status_every);
        loop {
            tick.tick().await;
            if reports
                .send(SimSession::status("bench", "sim", "running"))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Ok((session.joined_in, tx))
}

/// A registry on a fresh database, killed (with its group) on drop.
struct Registry {
    group: Group,
    addr: String,
    _db: TestDb,
}

fn start_registry(args: &Args, db: Db, dir: &Path) -> anyhow::Result<Registry> {
    let backend = match db {
        Db::Sqlite => Backend::Sqlite,
        Db::Mysql => Backend::MySql,
    };
    let Some(test_db) = TestDb::new(backend, dir) else {
        bail!("MySQL is skipped (CORRAL_TEST_MYSQL_SKIP=1): leave it out of --db");
    };
    let grpc = free_port()?;
    let http = free_port()?;
    let mut cmd = Command::new(&args.registry);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{grpc}")])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--db", &test_db.url])
        .env("RUST_LOG", "warn")
        .envs(args.registry_env.iter().map(|(k, v)| (k, v)));
    let mut group = Group::spawn(&mut cmd, &dir.join("registry.log"))
        .with_context(|| format!("start {}", args.registry.display()))?;
    wait_for_port(grpc, Duration::from_secs(30))
        .and_then(|()| group.check_alive())
        .context("the registry did not start")?;
    Ok(Registry {
        group,
        addr: format!("http://127.0.0.1:{grpc}"),
        _db: test_db,
    })
}

async fn measure(args: &Args, db: Db, n: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut registry = tokio::task::block_in_place(|| start_registry(args, db, dir.path()))?;
    let pid = registry.group.pid();
    let cli = victim::Cli {
        registry: &args.registry,
        addr: &registry.addr,
    };
    cli.apply(dir.path(), victim::SPEC)?;
    let rss_idle = status_bytes(pid, "VmRSS")?;

    let sem = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let joins: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(one_agent(
                registry.addr.clone(),
                i,
                sem.clone(),
                args.status_every,
            ))
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    for (i, j) in joins.into_iter().enumerate() {
        let (lat, tx) = j
            .await?
            .with_context(|| format!("session {i} of {n} did not come up"))?;
        latencies.push(lat);
        senders.push(tx);
    }
    let join_all = started.elapsed();
    latencies.sort();

    // Let the join burst settle, then sample a steady window.
    tokio::time::sleep(Duration::from_secs(if args.smoke { 1 } else { 5 })).await;
    let cpu0 = cpu_time(pid)?;
    let t0 = Instant::now();
    let mut rss_max = 0;
    while t0.elapsed() < args.steady {
        tokio::time::sleep(Duration::from_secs(1)).await;
        registry.group.check_alive()?;
        rss_max = rss_max.max(status_bytes(pid, "VmRSS")?);
    }
    let cpu = (cpu_time(pid)? - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
    let hwm = status_bytes(pid, "VmHWM")?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();

    // Every session is still open, and the registry counts them all.
    if let Some(i) = senders.iter().position(mpsc::Sender::is_closed) {
        bail!("session {i} of {n} closed during the steady window");
    }
    let down = tokio::task::block_in_place(|| victim::down_after_kill(&cli, dir.path()))?;
    let per_session = rss_max.saturating_sub(rss_idle) as f64 / n as f64 / 1024.0;
    println!(
        "| {n} | {db:?} | {:.2} s | {:.1} ms | {:.1} ms | {cpu:.1} % | {:.1} MiB | {:.1} MiB | {:.1} MiB | {per_session:.1} KiB | {:.2} s |",
        join_all.as_secs_f64(),
        percentile(&latencies, 50.0).as_secs_f64() * 1000.0,
        percentile(&latencies, 99.0).as_secs_f64() * 1000.0,
        mib(rss_idle),
        mib(rss_max),
        mib(hwm),
        down.as_secs_f64(),
    );
    if args.smaps {
        eprintln!("smaps_rollup of the registry, {n} sessions on {db:?}:\n{smaps}");
    }
    drop(senders);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(addr) = &args.victim_of {
        return victim::run(addr);
    }
    if args.smoke {
        args.counts = vec![200];
        args.steady = Duration::from_secs(3);
        args.status_every = Duration::from_secs(1);
    }
    corral_bench::procs::kill_groups_on_signal()?;
    let limit = raise_nofile()?;
    let need = args.counts.iter().max().copied().unwrap_or(0) as u64 + 200;
    if limit < need {
        bail!("the open-files limit is {limit}; {need} are needed (raise the hard limit)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "| sessions | db | all joined | join p50 | join p99 | registry CPU (one core) | RSS idle | RSS steady (max) | RSS peak (VmHWM) | RSS per session | killed node down, endpoint gone |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for &db in &args.db {
        for &n in &args.counts {
            rt.block_on(measure(&args, db, n))
                .with_context(|| format!("{n} sessions on {db:?}"))?;
        }
    }
    if args.smoke {
        println!("sessions --smoke: every session came up; the killed node went down");
    }
    Ok(())
}
