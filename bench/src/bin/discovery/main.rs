//! Discovery against etcd, in one run: `Query.Find` throughput at 1, 16 and 64
//! concurrent tonic clients beside etcd serializable range reads, and `Query.Watch`
//! propagation (trigger to receipt, p50/p99) with 1, 100 and 1,000 watchers beside an
//! etcd prefix watch.
//!
//!     cargo build --release --bins
//!     cargo run --release -p corral-bench --bin discovery -- \
//!         --registry target/release/registry --agent target/release/agent
//!
//! Corral: one real `registry serve` (SQLite) with two servers of one instance each,
//! `bench.sim` on a node whose agent this benchmark plays over a real `Agent.Session`,
//! and `bench.real` run by one real `agent`. Watch latency is measured two ways:
//! - registry only: the simulated agent reports the instance `running`/`stopped`; the
//!   clock starts right before that report is sent and stops when a watcher receives the
//!   new list (the registry's receive, SQLite write, discovery recompute and push);
//! - through the agent: `server stop`/`server start` (the Admin call the CLI makes); the
//!   clock starts right before the call, so it includes the agent stopping or starting
//!   the process and reporting it;
//! - the agent's local discovery: watchers of the real agent's HTTP port, over gRPC
//!   `Query.Watch` and over `GET /v1/watch/NAME` (server-sent events), the change being the
//!   simulated agent's report as in the first path (so the agent's watch cache follows it
//!   from the registry and fans it out).
//!
//! etcd: one member on loopback; a key per endpoint under a prefix; reads are prefix
//! `Range`s with `serializable = true`; the change is a `Put` or `DeleteRange` of the key,
//! timed from right before the call.
//!
//! Every lookup client has a channel (TCP connection) of its own; watchers either have
//! one each or share a few (`--watch-conns`), for Corral and etcd alike.

mod etcd;
#[allow(dead_code)]
#[path = "../distribute/fleet.rs"]
mod fleet;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use corral_bench::{cpu_time, percentile, raise_nofile};
use corral_proto::v1::query_client::QueryClient;
use corral_proto::v1::{AgentMessage, ControlServerRequest, FindRequest, ListEventsRequest};
use corral_tests::sim::SimSession;
use fleet::{Fleet, apply, log_tail, status};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Barrier, Semaphore, mpsc};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
struct Args {
    /// Concurrent clients for the lookup throughput, comma-separated.
    #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// How long each lookup measurement runs (after a 0.5 s warm-up).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Watcher counts, comma-separated.
    #[arg(long, default_value = "1,100,1000", value_delimiter = ',')]
    watchers: Vec<usize>,
    /// How the watchers connect, comma-separated: 0 = each on a connection of its own
    /// (1,000 watchers = 1,000 TCP connections); N = all of them spread over N shared
    /// connections, each carrying many watch streams (as etcd's Go client and its
    /// `benchmark watch` tool multiplex them, and as one process watching many names
    /// would). Every watcher count runs with every value.
    #[arg(long, default_value = "0,10", value_delimiter = ',')]
    watch_conns: Vec<usize>,
    /// Changes per watcher count (each is timed at every watcher).
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// The registry binary.
    #[arg(long, default_value = "target/release/registry")]
    registry: PathBuf,
    /// The agent binary.
    #[arg(long, default_value = "target/release/agent")]
    agent: PathBuf,
    /// The etcd binary [default: etcd on PATH, installed with apt or pip if missing].
    #[arg(long)]
    etcd: Option<PathBuf>,
}

const SIM: &str = "bench.sim.Main";
const REAL: &str = "bench.real.Main";
const ETCD_PREFIX: &[u8] = b"/services/bench.sim.Main/";
const ETCD_KEY: &[u8] = b"/services/bench.sim.Main/sim-1";

async fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// Plays an agent for node `node` (the tests' simulated session): joins, heartbeats,
/// reads whatever the registry sends. Status reports go through the returned sender.
async fn sim_agent(addr: &str, node: &str, ip: &str) -> anyhow::Result<mpsc::Sender<AgentMessage>> {
    let session = SimSession::join(
        channel(addr).await?,
        SimSession::hello(node, ip, "bench"),
        0.0,
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    Ok(session.sender())
}

fn sim_status(state: &str) -> AgentMessage {
    SimSession::status("bench", "sim", state)
}

async fn find_count(addr: &str, name: &str) -> anyhow::Result<usize> {
    let mut q = QueryClient::new(channel(addr).await?);
    Ok(q.find(FindRequest {
        name: name.into(),
        ..Default::default()
    })
    .await?
    .into_inner()
    .endpoints
    .len())
}

async fn wait_endpoints(addr: &str, name: &str, want: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if find_count(addr, name).await.ok() == Some(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} did not list {want} endpoint(s) within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls per second and per-call latency of `n` concurrent clients.
struct Load {
    rate: f64,
    p50: Duration,
    p99: Duration,
    /// The server's CPU over the measured window, % of one core.
    server_cpu: f64,
}

/// Runs `n` clients, each with a channel of its own made by `connect` and calling `call`
/// in a loop: a 0.5 s warm-up, then `duration` measured.
async fn load<C, Conn, Fut, Call, CallFut>(
    n: usize,
    duration: Duration,
    server_pid: u32,
    connect: Conn,
    call: Call,
) -> anyhow::Result<Load>
where
    C: Send + 'static,
    Conn: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<C>> + Send + 'static,
    Call: Fn(C) -> CallFut + Clone + Send + 'static,
    CallFut: Future<Output = anyhow::Result<C>> + Send,
{
    let barrier = Arc::new(Barrier::new(n + 1));
    let warmup = Duration::from_millis(500);
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (barrier, connect, call) = (barrier.clone(), connect.clone(), call.clone());
        tasks.spawn(async move {
            let client = connect().await;
            barrier.wait().await;
            let mut client = client?;
            let start = Instant::now() + warmup;
            let end = start + duration;
            let mut lat = Vec::with_capacity(1 << 16);
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                client = call(client).await?;
                if t >= start {
                    lat.push(t.elapsed());
                }
            }
            anyhow::Ok(lat)
        });
    }
    barrier.wait().await;
    tokio::time::sleep(warmup).await;
    let cpu0 = cpu_time(server_pid)?;
    tokio::time::sleep(duration).await;
    let cpu = cpu_time(server_pid)? - cpu0;
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    all.sort();
    Ok(Load {
        rate: all.len() as f64 / duration.as_secs_f64(),
        p50: percentile(&all, 50.0),
        p99: percentile(&all, 99.0),
        server_cpu: cpu.as_secs_f64() / duration.as_secs_f64() * 100.0,
    })
}

/// One `Query.Find` of the simulated server; the client back.
async fn corral_find(mut client: QueryClient<Channel>) -> anyhow::Result<QueryClient<Channel>> {
    let eps = client
        .find(FindRequest {
            name: SIM.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(eps.endpoints.len() == 1, "Find: {eps:?}");
    Ok(client)
}

/// One serializable prefix `Range` of the same endpoint in etcd; the client back.
async fn etcd_range(mut client: etcd::Client) -> anyhow::Result<etcd::Client> {
    let resp = client
        .range(etcd::RangeRequest {
            key: ETCD_PREFIX.to_vec(),
            range_end: etcd::prefix_end(ETCD_PREFIX),
            limit: 0,
            serializable: true,
        })
        .await?;
    ensure!(resp.kvs.len() == 1, "Range: {resp:?}");
    Ok(client)
}

/// What a watcher saw: the number of endpoints now listed, and when.
struct Receipt {
    watcher: usize,
    state: usize,
    at: Instant,
}

/// Opens `w` watchers with `open` (which connects or takes a shared channel); at most 64 start at
/// once (a watcher holds a permit of `gate` until its first message). Each sends a
/// receipt for every message, the first one included.
async fn open_watchers<Open, Fut>(
    w: usize,
    open: Open,
) -> anyhow::Result<(
    JoinSet<anyhow::Result<()>>,
    mpsc::UnboundedReceiver<Receipt>,
)>
where
    Open: Fn(usize, mpsc::UnboundedSender<Receipt>, Arc<Semaphore>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(64));
    let mut tasks = JoinSet::new();
    for i in 0..w {
        tasks.spawn(open(i, tx.clone(), gate.clone()));
    }
    drop(tx);
    // Every watcher's first message (the list now, or etcd's `created`).
    let mut ready = vec![false; w];
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while n < w {
        tokio::select! {
            r = tokio::time::timeout_at(deadline.into(), rx.recv()) => {
                let r = r
                    .with_context(|| format!("{n} of {w} watchers started within 60 s"))?
                    .context("the watchers ended before they started")?;
                if !ready[r.watcher] {
                    ready[r.watcher] = true;
                    n += 1;
                }
            }
            Some(res) = tasks.join_next() => {
                res??;
                bail!("a watcher ended before it started");
            }
        }
    }
    Ok((tasks, rx))
}

/// What the watchers saw over the changes of one row.
struct WatchStats {
    /// Trigger to receipt, every (watcher, change), sorted.
    samples: Vec<Duration>,
    /// Per change: the first and the last watcher's receipt.
    first: Vec<Duration>,
    last: Vec<Duration>,
    /// CPU per change of the server (registry or etcd) and of this benchmark process
    /// (the watchers' side), over the whole row (pauses between changes included).
    server_cpu: Duration,
    bench_cpu: Duration,
}

/// `rounds` changes, each flipping the state (1 <-> 0 endpoints) through `trigger`; the
/// time from right before the trigger to each watcher's receipt of the new state.
async fn rounds<T, Fut>(
    w: usize,
    rounds: usize,
    server_pid: u32,
    rx: &mut mpsc::UnboundedReceiver<Receipt>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    mut trigger: T,
) -> anyhow::Result<WatchStats>
where
    T: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut stats = WatchStats {
        samples: Vec::with_capacity(w * rounds),
        first: Vec::new(),
        last: Vec::new(),
        server_cpu: Duration::ZERO,
        bench_cpu: Duration::ZERO,
    };
    let me = std::process::id();
    let (server0, bench0) = (cpu_time(server_pid)?, cpu_time(me)?);
    let mut state = 1;
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Whatever came in between (there should be nothing) does not count.
        while rx.try_recv().is_ok() {}
        let target = 1 - state;
        let mut seen = vec![false; w];
        let mut n = 0;
        let (mut first, mut last) = (Duration::MAX, Duration::ZERO);
        let t0 = Instant::now();
        trigger(target).await?;
        let deadline = t0 + Duration::from_secs(20);
        while n < w {
            tokio::select! {
                r = tokio::time::timeout_at(deadline.into(), rx.recv()) => {
                    let r = r.with_context(|| format!("round {round}: {n} of {w} watchers saw the change within 20 s"))?
                        .context("the watchers ended")?;
                    if r.state == target && !seen[r.watcher] {
                        seen[r.watcher] = true;
                        n += 1;
                        let d = r.at.saturating_duration_since(t0);
                        first = first.min(d);
                        last = last.max(d);
                        stats.samples.push(d);
                    }
                }
                Some(res) = tasks.join_next() => {
                    res??;
                    bail!("a watcher ended");
                }
            }
        }
        stats.first.push(first);
        stats.last.push(last);
        state = target;
    }
    let n = rounds.max(1) as u32;
    stats.server_cpu = (cpu_time(server_pid)? - server0) / n;
    stats.bench_cpu = (cpu_time(me)? - bench0) / n;
    stats.samples.sort();
    stats.first.sort();
    stats.last.sort();
    Ok(stats)
}

type WatchFuture = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// The p99s of one watcher count of 1,000, against the goal.
struct Goal {
    conns: usize,
    registry: Duration,
    via_agent: Duration,
    local_grpc: Duration,
    local_sse: Option<Duration>,
    etcd: Duration,
}

/// The change of the registry-only and local rows: the simulated agent reports bench.sim
/// running (1 endpoint) or stopped (none).
fn sim_flip(sim: &mpsc::Sender<AgentMessage>) -> impl FnMut(usize) -> WatchFuture + use<> {
    let sim = sim.clone();
    move |target| {
        let sim = sim.clone();
        Box::pin(async move {
            let state = if target == 1 { "running" } else { "stopped" };
            sim.send(sim_status(state)).await?;
            Ok(())
        })
    }
}

/// A watcher of the ceiling's bare fan-out: a receipt per frame.
fn raw_watcher(
    addr: std::net::SocketAddr,
) -> impl Fn(usize, mpsc::UnboundedSender<Receipt>, Arc<Semaphore>) -> WatchFuture {
    move |i, tx, gate| {
        Box::pin(async move {
            let mut permit = Some(gate.acquire_owned().await?);
            corral_bench::ceiling::raw_watch(addr, |state| {
                permit.take();
                let _ = tx.send(Receipt {
                    watcher: i,
                    state: usize::from(state),
                    at: Instant::now(),
                });
            })
            .await
        })
    }
}

/// A watcher of the agent's `GET /v1/watch/NAME` (server-sent events) on a connection
/// of its own: a receipt per `data:` line, its state the length of the JSON list.
fn sse_watcher(
    http: String,
) -> impl Fn(usize, mpsc::UnboundedSender<Receipt>, Arc<Semaphore>) -> WatchFuture {
    move |i, tx, gate| {
        let http = http.clone();
        Box::pin(async move {
            let mut permit = Some(gate.acquire_owned().await?);
            let mut stream = tokio::net::TcpStream::connect(&http).await?;
            stream.set_nodelay(true)?;
            let ask = format!(
                "GET /v1/watch/{SIM} HTTP/1.1\r\nHost: {http}\r\nAccept: text/event-stream\r\n\r\n"
            );
            stream.write_all(ask.as_bytes()).await?;
            let mut lines = BufReader::new(stream).lines();
            let status = lines.next_line().await?.unwrap_or_default();
            ensure!(
                status.starts_with("HTTP/1.1 200"),
                "watch answer: {status:?}"
            );
            while let Some(line) = lines.next_line().await? {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                permit.take();
                let at = Instant::now();
                let list: serde_json::Value = serde_json::from_str(data.trim())?;
                let state = list.as_array().map_or(0, Vec::len);
                let _ = tx.send(Receipt {
                    watcher: i,
                    state,
                    at,
                });
            }
            Ok(())
        })
    }
}

/// Channels for `conns` shared connections (none for 0: each watcher connects).
async fn shared_channels(addr: &str, conns: usize) -> anyhow::Result<Arc<Vec<Channel>>> {
    let mut out = Vec::with_capacity(conns);
    for _ in 0..conns {
        out.push(channel(addr).await?);
    }
    Ok(Arc::new(out))
}

fn corral_watcher(
    addr: String,
    name: &'static str,
    shared: Arc<Vec<Channel>>,
) -> impl Fn(usize, mpsc::UnboundedSender<Receipt>, Arc<Semaphore>) -> WatchFuture {
    move |i, tx, gate| {
        let addr = addr.clone();
        let shared = shared.clone();
        Box::pin(async move {
            let mut permit = Some(gate.acquire_owned().await?);
            let chan = match shared.get(i % shared.len().max(1)) {
                Some(c) => c.clone(),
                None => channel(&addr).await?,
            };
            let mut q = QueryClient::new(chan);
            let mut stream = q
                .watch(FindRequest {
                    name: name.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            while let Some(eps) = stream.message().await? {
                permit.take();
                let at = Instant::now();
                let _ = tx.send(Receipt {
                    watcher: i,
                    state: eps.endpoints.len(),
                    at,
                });
            }
            Ok(())
        })
    }
}

fn etcd_watcher(
    url: String,
    shared: Arc<Vec<etcd::Client>>,
) -> impl Fn(usize, mpsc::UnboundedSender<Receipt>, Arc<Semaphore>) -> WatchFuture {
    move |i, tx, gate| {
        let url = url.clone();
        let shared = shared.clone();
        Box::pin(async move {
            let mut permit = Some(gate.acquire_owned().await?);
            let mut client = match shared.get(i % shared.len().max(1)) {
                Some(c) => c.clone(),
                None => etcd::Client::connect(&url).await?,
            };
            let (_keep, mut stream) = client.watch_prefix(ETCD_PREFIX).await?;
            while let Some(resp) = stream.message().await? {
                permit.take();
                let at = Instant::now();
                let state = if resp.created {
                    1
                } else if let Some(e) = resp.events.last() {
                    usize::from(e.r#type == etcd::PUT)
                } else {
                    continue;
                };
                let _ = tx.send(Receipt {
                    watcher: i,
                    state,
                    at,
                });
            }
            Ok(())
        })
    }
}

/// How `conns` reads in the tables.
fn conns_label(w: usize, conns: usize) -> String {
    if conns == 0 {
        format!("{w} (one each)")
    } else {
        conns.min(w).to_string()
    }
}

fn print_watch(w: usize, conns: usize, path: &str, s: &WatchStats) {
    println!(
        "| {w} | {} | {path} | {} | {} | {} | {} | {} | {} |",
        conns_label(w, conns),
        ms(percentile(&s.samples, 50.0)),
        ms(percentile(&s.samples, 99.0)),
        ms(percentile(&s.first, 50.0)),
        ms(percentile(&s.last, 50.0)),
        ms(s.server_cpu),
        ms(s.bench_cpu),
    );
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn run(args: &Args, dir: &Path, etcd_bin: &Path) -> anyhow::Result<()> {
    let mut fleet = Fleet::start(&args.registry, &args.agent, dir)?;
    fleet.add_agent("n1", "127.0.0.2")?;
    let mut admin = fleet.admin().await?;
    fleet
        .wait_nodes_up(&mut admin, Duration::from_secs(30))
        .await?;
    let addr = fleet.addr.clone();
    let sim = sim_agent(&addr, "sim-1", "127.0.0.3").await?;
    for (server, node) in [("sim", "sim-1"), ("real", "n1")] {
        let spec = format!(
            "app = \"bench\"\nserver = \"{server}\"\nnodes = [\"{node}\"]\ncommand = [\"sleep\", \"1000\"]\n[[adapters]]\nname = \"Main\"\nport = \"auto\"\n"
        );
        apply(&mut admin, &spec).await?;
    }
    sim.send(sim_status("running")).await?;
    wait_endpoints(&addr, SIM, 1).await?;
    wait_endpoints(&addr, REAL, 1).await?;
    fleet.note_services(&status(&mut admin, "bench.real").await?);

    let mut etcd = etcd::Etcd::start(etcd_bin, dir)?;
    let mut kv = etcd.ready().await?;
    let port = {
        let mut q = QueryClient::new(channel(&addr).await?);
        let eps = q
            .find(FindRequest {
                name: SIM.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        eps.endpoints.first().map_or(0, |e| e.port)
    };
    let value = format!("{{\"node\":\"sim-1\",\"host\":\"127.0.0.3\",\"port\":{port}}}");
    kv.put(ETCD_KEY, value.as_bytes()).await?;
    let reg_pid = fleet.registry.pid();
    let etcd_pid = etcd.proc.pid();

    println!(
        "Lookups: {SIM} (1 endpoint) / a prefix holding 1 key; calls per second over {:?}, each client on its own connection.",
        args.duration
    );
    println!();
    println!(
        "| clients | Corral Find/s | p50 | p99 | registry CPU | etcd Range/s (serializable) | p50 | p99 | etcd CPU | Corral / etcd |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut lookups_met = true;
    for &n in &args.concurrency {
        let a = addr.clone();
        let corral = load(
            n,
            args.duration,
            reg_pid,
            move || {
                let a = a.clone();
                async move { Ok(QueryClient::new(channel(&a).await?)) }
            },
            corral_find,
        )
        .await?;
        let url = etcd.url.clone();
        let etcd_load = load(
            n,
            args.duration,
            etcd_pid,
            move || {
                let url = url.clone();
                async move { etcd::Client::connect(&url).await }
            },
            etcd_range,
        )
        .await?;
        let ratio = corral.rate / etcd_load.rate;
        lookups_met &= ratio >= 1.0;
        println!(
            "| {n} | {:.0} | {} | {} | {:.0} % | {:.0} | {} | {} | {:.0} % | {ratio:.2} |",
            corral.rate,
            ms(corral.p50),
            ms(corral.p99),
            corral.server_cpu,
            etcd_load.rate,
            ms(etcd_load.p50),
            ms(etcd_load.p99),
            etcd_load.server_cpu,
        );
    }
    fleet.check_alive()?;

    println!();
    println!(
        "Watch: trigger to receipt at every watcher, {} changes per row (p50 / p99 over watchers x changes).",
        args.rounds
    );
    println!();
    println!(
        "| watchers | connections | path | p50 | p99 | first receipt (median per change) | last receipt (median per change) | server CPU per change | watchers' CPU per change (bench process) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut watch_p99_1000 = Vec::new();
    let floor = corral_bench::ceiling::RawFanout::start()?;
    for &w in &args.watchers {
        for &conns in &args.watch_conns {
            let conns = conns.min(w);
            let corral_shared = shared_channels(&addr, conns).await?;
            let mut etcd_shared = Vec::with_capacity(conns);
            for _ in 0..conns {
                etcd_shared.push(etcd::Client::connect(&etcd.url).await?);
            }
            let etcd_shared = Arc::new(etcd_shared);
            // Registry only: the simulated agent reports the change.
            let (mut tasks, mut rx) =
                open_watchers(w, corral_watcher(addr.clone(), SIM, corral_shared.clone())).await?;
            let reg_only =
                rounds(w, args.rounds, reg_pid, &mut rx, &mut tasks, sim_flip(&sim)).await?;
            tasks.shutdown().await;
            drop(rx);
            print_watch(w, conns, "Corral, registry only", &reg_only);

            // The agent's local discovery: the same change, followed by the agent's watch
            // cache (one watch on the registry) and fanned out to the host's watchers,
            // over gRPC and (a connection each, as HTTP/1.1 has it) server-sent events.
            let (local_grpc, local_sse) = {
                let agent = fleet.agents.first().context("the agent")?;
                let (url, pid) = (format!("http://{}", agent.http), agent.proc.pid());
                let local = shared_channels(&url, conns).await?;
                let (mut tasks, mut rx) =
                    open_watchers(w, corral_watcher(url.clone(), SIM, local)).await?;
                let grpc = rounds(w, args.rounds, pid, &mut rx, &mut tasks, sim_flip(&sim)).await?;
                tasks.shutdown().await;
                drop(rx);
                print_watch(w, conns, "Corral, agent's local gRPC", &grpc);
                let sse = if conns == 0 {
                    let (mut tasks, mut rx) =
                        open_watchers(w, sse_watcher(agent.http.clone())).await?;
                    let sse =
                        rounds(w, args.rounds, pid, &mut rx, &mut tasks, sim_flip(&sim)).await?;
                    tasks.shutdown().await;
                    drop(rx);
                    print_watch(w, conns, "Corral, agent's local HTTP (SSE)", &sse);
                    Some(sse)
                } else {
                    None
                };
                (grpc, sse)
            };

            // Through the agent: server stop / start.
            let (mut tasks, mut rx) =
                open_watchers(w, corral_watcher(addr.clone(), REAL, corral_shared.clone())).await?;
            let control = admin.clone();
            let via_agent = rounds(w, args.rounds, reg_pid, &mut rx, &mut tasks, |target| {
                let mut control = control.clone();
                async move {
                    let action = if target == 1 {
                        corral_proto::v1::ServerAction::Start
                    } else {
                        corral_proto::v1::ServerAction::Stop
                    };
                    control
                        .control_server(ControlServerRequest {
                            server: "bench.real".into(),
                            action: action.into(),
                            node: String::new(),
                        })
                        .await?;
                    Ok(())
                }
            })
            .await;
            let via_agent = match via_agent {
                Ok(v) => v,
                Err(e) => {
                    let now = status(&mut admin, "bench.real").await;
                    let events = admin
                        .list_events(ListEventsRequest {
                            server: "bench.real".into(),
                            after_id: 0,
                            limit: Some(12),
                            ..Default::default()
                        })
                        .await
                        .map(|r| r.into_inner().events);
                    let log = fleet
                        .agents
                        .first()
                        .map(|a| log_tail(&a.proc.log, 20))
                        .unwrap_or_default();
                    bail!(
                        "{e:#}\nserver status: {now:?}\nlast events: {events:#?}\nagent log:\n{log}"
                    );
                }
            };
            tasks.shutdown().await;
            drop(rx);
            fleet.note_services(&status(&mut admin, "bench.real").await?);
            print_watch(w, conns, "Corral, through the agent", &via_agent);

            // The ceiling: a 64-byte frame per watcher from the smallest push server,
            // with a connection each (the row the goal's first case is held against).
            if conns == 0 {
                let (mut tasks, mut rx) = open_watchers(w, raw_watcher(floor.addr)).await?;
                let stats = rounds(
                    w,
                    args.rounds,
                    std::process::id(),
                    &mut rx,
                    &mut tasks,
                    |target| {
                        floor.change(u8::try_from(target).unwrap_or(u8::MAX));
                        std::future::ready(Ok(()))
                    },
                )
                .await?;
                tasks.shutdown().await;
                drop(rx);
                print_watch(
                    w,
                    conns,
                    "ceiling: bare TCP fan-out (in the bench process)",
                    &stats,
                );
            }

            // etcd: put / delete of the key.
            let (mut tasks, mut rx) =
                open_watchers(w, etcd_watcher(etcd.url.clone(), etcd_shared.clone())).await?;
            let etcd_stats = rounds(w, args.rounds, etcd_pid, &mut rx, &mut tasks, |target| {
                let mut kv = kv.clone();
                let value = value.clone();
                async move {
                    if target == 1 {
                        kv.put(ETCD_KEY, value.as_bytes()).await?;
                    } else {
                        kv.delete(ETCD_KEY).await?;
                    }
                    Ok(())
                }
            })
            .await?;
            tasks.shutdown().await;
            drop(rx);
            print_watch(w, conns, "etcd prefix watch", &etcd_stats);

            if w == 1000 {
                watch_p99_1000.push(Goal {
                    conns,
                    registry: percentile(&reg_only.samples, 99.0),
                    via_agent: percentile(&via_agent.samples, 99.0),
                    local_grpc: percentile(&local_grpc.samples, 99.0),
                    local_sse: local_sse.as_ref().map(|s| percentile(&s.samples, 99.0)),
                    etcd: percentile(&etcd_stats.samples, 99.0),
                });
            }
            fleet.check_alive()?;
            etcd.proc.check_alive()?;
        }
    }
    println!();
    println!(
        "- goal lookups at least as fast as etcd at every concurrency: {}",
        if lookups_met { "met" } else { "missed" }
    );
    for g in watch_p99_1000 {
        let verdict = |d: Duration| {
            let word = if d < Duration::from_millis(10) {
                "met"
            } else {
                "missed"
            };
            format!("{word} ({})", ms(d))
        };
        let sse = g
            .local_sse
            .map(|d| format!(", agent's local HTTP (SSE) {}", verdict(d)))
            .unwrap_or_default();
        println!(
            "- goal watch p99 under 10 ms with 1,000 watchers on {} connection(s): registry only {}, through the agent (process stop/start) {}, agent's local gRPC {}{sse}; etcd: {}",
            conns_label(1000, g.conns),
            verdict(g.registry),
            verdict(g.via_agent),
            verdict(g.local_grpc),
            ms(g.etcd)
        );
    }
    drop(sim);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for bin in [&args.registry, &args.agent] {
        ensure!(
            bin.exists(),
            "{} not found: build with cargo build --release --bins or pass --registry/--agent",
            bin.display()
        );
    }
    let etcd_bin = etcd::find_or_install(args.etcd.as_deref())?;
    let limit = raise_nofile()?;
    let need = 4 * args.watchers.iter().max().copied().unwrap_or(0) as u64 + 1000;
    if limit < need {
        eprintln!("warning: open-files limit {limit} may be too low (want {need})");
    }
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(&args, dir.path(), &etcd_bin))
}
