//! Discovery for any client, in one run: the agent's DNS (answers/s and p99) beside
//! Debian's dnsmasq serving the same records from a hosts file, and HTTP blocking-query
//! wake-up (p50/p99 from the change to each answer) with many waiting clients, on the
//! registry and on an agent.
//!
//!     apt-get install dnsmasq     # the peer (the benchmark installs it when missing)
//!     cargo build --release --bins
//!     cargo run --release -p corral-bench --bin dns_http -- \
//!         --registry target/release/registry --agent target/release/agent
//!
//! Corral: one `registry serve` (SQLite, `--public-discovery`) and one `agent run` with
//! DNS on loopback; `bench.dns` has three endpoints and `bench.wake` two, on simulated
//! nodes played over real `Agent.Session`s. DNS: every client asks
//! `main.dns.bench.corral.` A (three records) over UDP, one query in flight per client
//! socket, from a single-threaded load generator; dnsmasq answers the same name from
//! `--addn-hosts` with the same three addresses and TTL. Wake-up: each client holds
//! `GET /v1/endpoints/bench.wake.Main?index=N&wait=120s`; a simulated node reports its
//! instance stopped (or running again), timed right before the report is sent, and each
//! client's answer is timed when it has been read whole. The same clients then wait on
//! two floors in this process: a bare server that writes a ready-made answer, and
//! hyper's HTTP/1.1 server alone (`corral_bench::ceiling`). Each row shows the server's
//! and the clients' CPU per answer over the rounds.

mod dnsload;
mod sim;
mod wakeup;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use corral_bench::procs::{Group, ensure_installed, on_path, run_checked, wait_for_port};
use corral_bench::{cpu_time, free_port, percentile, raise_nofile, threads_cpu};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/release/registry")]
    registry: PathBuf,
    #[arg(long, default_value = "target/release/agent")]
    agent: PathBuf,
    /// The dnsmasq binary [default: dnsmasq on PATH, installed with apt-get if missing].
    #[arg(long)]
    dnsmasq: Option<PathBuf>,
    /// Concurrent DNS client sockets, comma-separated.
    #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
    dns_clients: Vec<usize>,
    /// How long each DNS measurement runs (after a 0.5 s warm-up).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Waiting HTTP clients, comma-separated.
    #[arg(long, default_value = "1,1000", value_delimiter = ',')]
    wake_clients: Vec<usize>,
    /// Changes per waiting-client count.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
}

const DNS_NAME: &str = "main.dns.bench.corral.";
const DNS_IPS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
const WAKE: &str = "bench.wake.Main";

/// A plain GET; the body of a 200.
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => bail!("GET {path}: {}", text.lines().next().unwrap_or_default()),
    }
}

fn wait_list(addr: SocketAddr, name: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = http_get(addr, &format!("/v1/endpoints/{name}"))
            .ok()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v.as_array().map(Vec::len));
        if got == Some(n) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} at {addr}: {got:?} endpoints, not {n}, after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Corral {
    registry: Group,
    agent: Group,
    grpc: String,
    http: SocketAddr,
    agent_http: SocketAddr,
    dns: SocketAddr,
}

fn start_corral(args: &Args, dir: &Path) -> anyhow::Result<Corral> {
    let (grpc, http, agent_http, dns) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let addr = format!("http://127.0.0.1:{grpc}");
    let registry = Group::spawn(
        Command::new(&args.registry)
            .args(["serve", "--public-discovery"])
            .args(["--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .arg("--db")
            .arg(format!("sqlite://{}", dir.join("r.db").display()))
            .env("RUST_LOG", "warn"),
        &dir.join("registry.log"),
    )?;
    wait_for_port(grpc, Duration::from_secs(30))?;
    let agent = Group::spawn(
        Command::new(&args.agent)
            .args(["run", "--locator", &addr, "--node", "bench", "--allow-root"])
            .args(["--advertise-ip", "127.0.0.1"])
            .args(["--http", &format!("127.0.0.1:{agent_http}")])
            .args(["--dns", &format!("127.0.0.1:{dns}"), "--dns-ttl", "5s"])
            .arg("--data-dir")
            .arg(dir.join("agent"))
            .env("RUST_LOG", "warn"),
        &dir.join("agent.log"),
    )?;
    wait_for_port(agent_http, Duration::from_secs(30))?;
    for (server, nodes) in [
        ("dns", "\"sim-0\", \"sim-1\", \"sim-2\""),
        ("wake", "\"sim-w0\", \"sim-w1\""),
    ] {
        let spec = dir.join(format!("{server}.toml"));
        std::fs::write(
            &spec,
            format!(
                "app = \"bench\"\nserver = \"{server}\"\nnodes = [{nodes}]\ncommand = [\"sleep\", \"1\"]\n\
                 [[adapters]]\nname = \"Main\"\nport = \"auto\"\n"
            ),
        )?;
        run_checked(
            Command::new(&args.registry)
                .args(["apply", "-f"])
                .arg(&spec)
                .args(["--addr", &addr]),
        )?;
    }
    Ok(Corral {
        registry,
        agent,
        grpc: addr,
        http: SocketAddr::from(([127, 0, 0, 1], http)),
        agent_http: SocketAddr::from(([127, 0, 0, 1], agent_http)),
        dns: SocketAddr::from(([127, 0, 0, 1], dns)),
    })
}

fn start_dnsmasq(args: &Args, dir: &Path) -> anyhow::Result<(Group, SocketAddr)> {
    let bin = match &args.dnsmasq {
        Some(b) => b.clone(),
        None => {
            ensure_installed(&["dnsmasq"], &["dnsmasq"])?;
            on_path("dnsmasq").context("dnsmasq on PATH")?
        }
    };
    let hosts = dir.join("hosts");
    let lines: Vec<String> = DNS_IPS
        .iter()
        .map(|ip| format!("{ip} {}", DNS_NAME.trim_end_matches('.')))
        .collect();
    std::fs::write(&hosts, lines.join("\n") + "\n")?;
    let port = free_port()?;
    let group = Group::spawn(
        Command::new(bin)
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--user=root",
            ])
            .arg(format!("--addn-hosts={}", hosts.display()))
            .args([
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--pid-file=",
            ])
            .arg(format!("--port={port}"))
            .arg("--local-ttl=5"),
        &dir.join("dnsmasq.log"),
    )?;
    Ok((group, SocketAddr::from(([127, 0, 0, 1], port))))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Runs the DNS load from a thread of its own with a single-threaded runtime: the same
/// client, on one core, for both servers.
async fn on_one_thread(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<dnsload::Load> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let load = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(dnsload::run(
                    addr,
                    DNS_NAME,
                    3,
                    clients,
                    Duration::from_millis(500),
                    duration,
                ))
            });
        let _ = tx.send(load);
    });
    rx.await?
}

/// The DNS servers under test: name, address, pid (for its CPU time).
type Servers = [(&'static str, SocketAddr, u32); 2];

async fn dns_table(args: &Args, servers: Servers) -> anyhow::Result<()> {
    println!("\n### DNS: `{DNS_NAME}` A (3 records), UDP\n");
    println!(
        "| server | clients | answers/s | p50 | p99 | lost | server CPU per answer | Corral / dnsmasq (answers/s) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for &clients in &args.dns_clients {
        let mut rates = Vec::new();
        for (who, addr, pid) in servers {
            let cpu_before = cpu_time(pid)?;
            let load = on_one_thread(addr, clients, args.duration)
                .await
                .with_context(|| format!("{who}, {clients} clients"))?;
            // The warm-up's answers are not counted, nor is its CPU time, nearly.
            let cpu = cpu_time(pid)?.saturating_sub(cpu_before);
            let rate = load.answers as f64 / load.elapsed.as_secs_f64();
            let per_answer = cpu.as_secs_f64() * 1e6 / (load.answers.max(1) as f64);
            rates.push(rate);
            let ratio = if rates.len() == 2 {
                format!("{:.2}×", rates[0] / rates[1])
            } else {
                String::new()
            };
            println!(
                "| {who} | {clients} | {rate:.0} | {} | {} | {} | {per_answer:.1} µs | {ratio} |",
                ms(percentile(&load.latencies, 50.0)),
                ms(percentile(&load.latencies, 99.0)),
                load.lost
            );
        }
    }
    Ok(())
}

/// Reads a server's CPU time so far.
type CpuOf = Box<dyn Fn() -> anyhow::Result<Duration>>;
/// Makes a change on a floor in this process (None: Corral, where a node reports it).
type FloorChange<'a> = Option<&'a dyn Fn()>;

async fn wake_table(args: &Args, c: &Corral, sims: &[sim::Sim]) -> anyhow::Result<()> {
    println!("\n### HTTP blocking-query wake-up: change sent -> answer read\n");
    println!(
        "| server | waiting clients | rounds | p50 | p99 | max | server CPU per answer | clients' CPU per answer |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut stopped = false;
    // The ceiling: the same clients against the smallest server that parks a query and
    // writes a ready-made answer to each on a change (see `corral_bench::ceiling`).
    let floor = corral_bench::ceiling::HttpBlocking::start()?;
    let hyper_only = corral_bench::ceiling::HyperBlocking::start()?;
    let (registry, agent, me) = (c.registry.pid(), c.agent.pid(), std::process::id());
    let (floor_change, hyper_change) = (|| floor.change(), || hyper_only.change());
    // Each server, how its CPU time is read, and how a change is made: a simulated node's
    // report for Corral, a call for the floors in this process.
    let servers: [(&str, SocketAddr, CpuOf, FloorChange); 4] = [
        (
            "registry",
            c.http,
            Box::new(move || threads_cpu(registry, None)),
            None,
        ),
        (
            "agent",
            c.agent_http,
            Box::new(move || threads_cpu(agent, None)),
            None,
        ),
        (
            "ceiling (bare HTTP/1.1 server)",
            floor.addr,
            Box::new(move || threads_cpu(me, Some(corral_bench::ceiling::THREAD_NAME))),
            Some(&floor_change),
        ),
        (
            "hyper alone (no router)",
            hyper_only.addr,
            Box::new(move || threads_cpu(me, Some(corral_bench::ceiling::THREAD_NAME))),
            Some(&hyper_change),
        ),
    ];
    for (who, addr, server_cpu, floor_change) in &servers {
        for &clients in &args.wake_clients {
            let mut waiters = wakeup::Waiters::start(*addr, WAKE, clients).await?;
            let (mut all, mut server, mut client) = (Vec::new(), Duration::ZERO, Duration::ZERO);
            for round in 0..args.rounds {
                stopped = !stopped;
                let state = if stopped { "stopped" } else { "running" };
                // Made when the round has timed its start (futures do nothing until then).
                let change: std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + '_>> =
                    match floor_change {
                        Some(change) => Box::pin(async move {
                            change();
                            Ok(())
                        }),
                        None => Box::pin(sims[4].report("bench", "wake", state)),
                    };
                let r = waiters.round(round, change, server_cpu.as_ref()).await?;
                all.extend(r.latencies);
                server += r.server_cpu;
                client += r.client_cpu;
            }
            all.sort();
            let per_answer =
                |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6 / all.len().max(1) as f64);
            println!(
                "| {who} | {clients} | {} | {} | {} | {} | {} | {} |",
                args.rounds,
                ms(percentile(&all, 50.0)),
                ms(percentile(&all, 99.0)),
                ms(all.last().copied().unwrap_or_default()),
                per_answer(server),
                per_answer(client)
            );
        }
    }
    Ok(())
}

#[tokio::main(worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_nofile()?;
    let dir = tempfile::tempdir()?;
    let corral = start_corral(&args, dir.path())?;
    let mut sims = Vec::new();
    for (i, node) in ["sim-0", "sim-1", "sim-2", "sim-w0", "sim-w1"]
        .iter()
        .enumerate()
    {
        let ip = DNS_IPS.get(i).copied().unwrap_or("127.0.0.20");
        let sim = sim::Sim::join(&corral.grpc, node, ip).await?;
        let server = if i < 3 { "dns" } else { "wake" };
        sim.report("bench", server, "running").await?;
        sims.push(sim);
    }
    wait_list(corral.agent_http, "bench.dns.Main", 3)?;
    wait_list(corral.agent_http, WAKE, 2)?;
    let (dnsmasq_group, dnsmasq) = start_dnsmasq(&args, dir.path())?;
    // dnsmasq answers once it has read its hosts file.
    for (who, addr) in [("dnsmasq", dnsmasq), ("the agent", corral.dns)] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while on_one_thread(addr, 1, Duration::from_millis(100))
            .await?
            .answers
            == 0
        {
            if Instant::now() > deadline {
                bail!(
                    "{who} does not answer on {addr} (logs in {})",
                    dir.path().display()
                );
            }
        }
    }
    println!(
        "Corral: registry + agent (DNS on {}), dnsmasq {} on {dnsmasq}",
        corral.dns,
        run_checked(Command::new(on_path("dnsmasq").unwrap_or_default()).arg("--version"))
            .ok()
            .and_then(|v| v.split_whitespace().nth(2).map(str::to_string))
            .unwrap_or_default()
    );
    dns_table(
        &args,
        [
            ("Corral agent", corral.dns, corral.agent.pid()),
            ("dnsmasq", dnsmasq, dnsmasq_group.pid()),
        ],
    )
    .await?;
    wake_table(&args, &corral, &sims).await?;
    Ok(())
}
