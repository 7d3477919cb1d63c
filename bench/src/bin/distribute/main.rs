//! Uploads a package of incompressible bytes to one real `registry serve` (SQLite) and
//! distributes it to 4 real agents on loopback; reports upload and distribution
//! throughput beside a plain TCP copy of the same file to 4 clients measured in the same
//! run, and the peak RSS growth of the registry and the agents.
//!
//!     cargo build --release --bins
//!     cargo run --release -p corral-bench --bin distribute -- \
//!         --registry target/release/registry --agent target/release/agent
//!
//! The package is `bin/server` (`exec sleep 1000`) and `data.bin` (random bytes), packed
//! with `tar czf` as the README shows. Each run starts a fresh registry and agents,
//! uploads with `registry package upload`, then applies a spec naming the release and
//! times from the `Apply` call until `server status` shows every instance `running` the
//! new version, polled every 50 ms. That includes what each agent does: download into
//! its cache, fsync, sha256, unpack (gunzip + untar) into `releases/`, start. The times
//! at which the last download was verified and the last release unpacked are read from
//! the agents' data dirs, to show where the time goes; then every node downloads the
//! package again straight into this process (data discarded), which is the registry's
//! side alone.
//!
//! The TCP copy, run before and after Corral in every run (the faster one is the
//! baseline), sends the same file over plain sockets on 127.0.0.1 to 4 clients at once,
//! each writing it to a file and fsyncing it: no gRPC, no database, no sha256 and no
//! unpack. Every timed phase starts after a sync(2), so no phase pays for the dirty pages
//! of the one before.

mod fleet;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use corral_bench::{cpu_time, mib, status_bytes};
use corral_proto::v1::DownloadRequest;
use corral_proto::v1::agent_client::AgentClient;
use fleet::{Fleet, apply, log_tail, status};
use sha2::{Digest, Sha256};

#[derive(Parser)]
struct Args {
    /// Size of the random payload in the package, in MiB.
    #[arg(long, default_value_t = 200)]
    size_mib: u64,
    /// How many agents (and TCP clients).
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// The registry binary.
    #[arg(long, default_value = "target/release/registry")]
    registry: PathBuf,
    /// The agent binary.
    #[arg(long, default_value = "target/release/agent")]
    agent: PathBuf,
    /// Give up on the distribution after this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Runs (each with a fresh registry and agents, and its own TCP copies).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the temporary files go (about 2 × agents + 3 times the package size).
    #[arg(long)]
    tmp: Option<PathBuf>,
}

const SERVER_SCRIPT: &[u8] = b"#!/bin/sh\nexec sleep 1000\n";

/// Writes `bin/server` and `data.bin` (`size` random bytes) and packs them with
/// `tar czf PKG -C release .`, as the README shows; the package's sha256.
fn build_package(path: &Path, size: u64) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let release = path.with_extension("release");
    std::fs::create_dir_all(release.join("bin"))?;
    let script = release.join("bin/server");
    std::fs::write(&script, SERVER_SCRIPT)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let mut random = std::fs::File::open("/dev/urandom")?.take(size);
    let mut data = std::fs::File::create(release.join("data.bin"))?;
    std::io::copy(&mut random, &mut data)?;
    drop(data);
    let status = Command::new("tar")
        .arg("czf")
        .arg(path)
        .arg("-C")
        .arg(&release)
        .arg(".")
        .status()
        .context("run tar czf")?;
    ensure!(status.success(), "tar czf failed: {status}");
    std::fs::remove_dir_all(&release)?;
    sha256_file(path)
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams `file` from a TCP server on 127.0.0.1 to `clients` concurrent clients, each
/// writing into its own file under `dir` and fsyncing it at the end; the elapsed time.
fn tcp_copy(file: &Path, clients: usize, dir: &Path) -> anyhow::Result<Duration> {
    let size = std::fs::metadata(file)?.len();
    std::fs::create_dir_all(dir)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let source = file.to_path_buf();
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut senders = Vec::new();
        for _ in 0..clients {
            let (mut conn, _) = listener.accept()?;
            let source = source.clone();
            senders.push(std::thread::spawn(move || -> anyhow::Result<()> {
                conn.set_nodelay(true)?;
                let mut f = std::fs::File::open(&source)?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    conn.write_all(&buf[..n])?;
                }
            }));
        }
        for s in senders {
            s.join()
                .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
        }
        Ok(())
    });
    let started = Instant::now();
    let receivers: Vec<_> = (0..clients)
        .map(|i| {
            let dest = dir.join(format!("copy-{i}"));
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut conn = TcpStream::connect(addr)?;
                let mut out = std::fs::File::create(&dest)?;
                let mut buf = vec![0u8; 1 << 20];
                let mut got = 0u64;
                loop {
                    let n = conn.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n])?;
                    got += n as u64;
                }
                out.sync_all()?;
                Ok(got)
            })
        })
        .collect();
    for r in receivers {
        let got = r
            .join()
            .map_err(|_| anyhow::anyhow!("a receiver panicked"))??;
        ensure!(got == size, "a TCP client got {got} of {size} bytes");
    }
    let elapsed = started.elapsed();
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the TCP server panicked"))??;
    std::fs::remove_dir_all(dir)?;
    Ok(elapsed)
}

/// The time to gunzip and untar `file` into `dir` in this process (one thread), as the
/// agent's unpack does, without its checks.
fn unpack_time(file: &Path, dir: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let reader = std::io::BufReader::new(std::fs::File::open(file)?);
    tar::Archive::new(flate2::read::GzDecoder::new(reader)).unpack(dir)?;
    let elapsed = started.elapsed();
    std::fs::remove_dir_all(dir)?;
    Ok(elapsed)
}

/// When the last agent's download was verified and renamed into the cache, when the
/// last release was unpacked, when `server status` showed every instance running the
/// new version (each from the `Apply` call).
#[derive(Clone, Copy, Default)]
struct Milestones {
    downloaded: Option<Duration>,
    unpacked: Option<Duration>,
    running: Option<Duration>,
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    mib(bytes) / d.as_secs_f64()
}

/// What one run measured.
struct Run {
    tcp_before: Duration,
    tcp_after: Duration,
    /// CPU (this process: server and clients) of the two TCP copies.
    tcp_cpu: (Duration, Duration),
    upload: Duration,
    distribution: Duration,
    /// The latest of each milestone over the agents.
    last: Milestones,
    reg_rss0: u64,
    reg_hwm_upload: u64,
    reg_hwm: u64,
    reg_cpu_upload: Duration,
    reg_cpu: Duration,
    /// (RSS before, VmHWM after) of the agent whose peak grew most.
    agent_mem: (u64, u64),
    agent_cpu_mean: Duration,
    /// `Agent.Download` of the package by every node at once into this process.
    serve: Duration,
    serve_cpu: Duration,
}

impl Run {
    fn tcp(&self) -> Duration {
        self.tcp_before.min(self.tcp_after)
    }

    /// The CPU of the faster TCP copy.
    fn faster_tcp_cpu(&self) -> Duration {
        if self.tcp_before <= self.tcp_after {
            self.tcp_cpu.0
        } else {
            self.tcp_cpu.1
        }
    }

    /// The best ratio to the TCP copy that `cores` allow when the distribution does
    /// the copy's own work plus, on each of `agents`, `per_agent` (sha256, gunzip,
    /// untar) and nothing else: no gRPC, HTTP/2, database or scheduling cost.
    fn ceiling(&self, agents: u32, per_agent: Duration, cores: u32) -> f64 {
        let floor = (self.faster_tcp_cpu() + per_agent * agents) / cores.max(1);
        self.tcp().as_secs_f64() / floor.as_secs_f64()
    }
}

/// One run: a TCP copy, a fresh registry and agents, upload, distribution, a TCP copy.
async fn one_run(args: &Args, pkg: &Path, sha: &str, dir: &Path) -> anyhow::Result<Run> {
    nix::unistd::sync();
    let me = std::process::id();
    let cpu = cpu_time(me)?;
    let tcp_before = tcp_copy(pkg, args.agents, &dir.join("tcp"))?;
    let tcp_cpu_before = cpu_time(me)? - cpu;

    let mut fleet = Fleet::start(&args.registry, &args.agent, dir)?;
    for i in 0..args.agents {
        fleet.add_agent(&format!("n{}", i + 1), &format!("127.0.0.{}", i + 2))?;
    }
    let mut admin = fleet.admin().await?;
    fleet
        .wait_nodes_up(&mut admin, Duration::from_secs(30))
        .await?;
    // Let the joins settle (first desired state, first reports).
    tokio::time::sleep(Duration::from_secs(1)).await;

    let reg_pid = fleet.registry.pid();
    let agent_pids: Vec<u32> = fleet.agents.iter().map(|a| a.proc.pid()).collect();
    let reg_rss0 = status_bytes(reg_pid, "VmRSS")?;
    let reg_cpu0 = cpu_time(reg_pid)?;

    // Upload, through the CLI as an operator does.
    nix::unistd::sync();
    let t = Instant::now();
    let out = Command::new(&args.registry)
        .args(["package", "upload"])
        .arg(pkg)
        .args([
            "--server",
            "bench.dist",
            "--version",
            "1.0.0",
            "--addr",
            &fleet.addr,
        ])
        .output()
        .context("run registry package upload")?;
    let upload = t.elapsed();
    if !out.status.success() {
        bail!(
            "upload failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let reg_hwm_upload = status_bytes(reg_pid, "VmHWM")?;
    let reg_cpu1 = cpu_time(reg_pid)?;

    let agent_rss0: Vec<u64> = agent_pids
        .iter()
        .map(|&p| status_bytes(p, "VmRSS"))
        .collect::<Result<_, _>>()?;
    let agent_cpu0: Vec<Duration> = agent_pids
        .iter()
        .map(|&p| cpu_time(p))
        .collect::<Result<_, _>>()?;

    let nodes: Vec<String> = fleet
        .agents
        .iter()
        .map(|a| format!("{:?}", a.node))
        .collect();
    let spec = format!(
        "app = \"bench\"\nserver = \"dist\"\nnodes = [{}]\npackage = \"1.0.0\"\ncommand = [\"bin/server\"]\n",
        nodes.join(", ")
    );
    let mut marks = vec![Milestones::default(); args.agents];
    nix::unistd::sync();
    let started = Instant::now();
    apply(&mut admin, &spec).await?;
    let distribution = loop {
        let instances = status(&mut admin, "bench.dist").await?;
        let elapsed = started.elapsed();
        for (a, m) in fleet.agents.iter().zip(marks.iter_mut()) {
            if m.downloaded.is_none() && a.data_dir.join("cache").join(sha).exists() {
                m.downloaded = Some(elapsed);
            }
            let release = a
                .data_dir
                .join("instances/bench.dist/releases/1.0.0.sha256");
            if m.unpacked.is_none() && release.exists() {
                m.unpacked = Some(elapsed);
            }
            let running = instances.iter().any(|i| {
                i.node == a.node
                    && i.state == i32::from(corral_proto::v1::InstanceState::Running)
                    && i.version == "1.0.0"
            });
            if m.running.is_none() && running {
                m.running = Some(elapsed);
            }
        }
        fleet.note_services(&instances);
        if marks.iter().all(|m| m.running.is_some()) {
            break elapsed;
        }
        if elapsed > args.timeout {
            let ends: Vec<String> = fleet
                .agents
                .iter()
                .map(|a| format!("{}:\n{}", a.node, log_tail(&a.proc.log, 10)))
                .collect();
            bail!(
                "not every instance ran 1.0.0 within {:?}: {instances:?}\n{}",
                args.timeout,
                ends.join("\n")
            );
        }
        fleet.check_alive()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reg_hwm = status_bytes(reg_pid, "VmHWM")?;
    let reg_cpu = cpu_time(reg_pid)? - reg_cpu1;
    let agent_hwm: Vec<u64> = agent_pids
        .iter()
        .map(|&p| status_bytes(p, "VmHWM"))
        .collect::<Result<_, _>>()?;
    let mut agent_cpu = Duration::ZERO;
    for (&p, c0) in agent_pids.iter().zip(&agent_cpu0) {
        agent_cpu += cpu_time(p)? - *c0;
    }
    // The registry alone: the same downloads into this process, the data discarded.
    let serve_cpu0 = cpu_time(reg_pid)?;
    let serve = raw_downloads(&fleet).await?;
    let serve_cpu = cpu_time(reg_pid)? - serve_cpu0;
    drop(admin);
    drop(fleet);
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else if path != pkg {
            std::fs::remove_file(&path)?;
        }
    }

    nix::unistd::sync();
    let cpu = cpu_time(me)?;
    let tcp_after = tcp_copy(pkg, args.agents, &dir.join("tcp"))?;
    let tcp_cpu_after = cpu_time(me)? - cpu;
    let latest = |f: fn(&Milestones) -> Option<Duration>| marks.iter().filter_map(f).max();
    Ok(Run {
        tcp_before,
        tcp_after,
        tcp_cpu: (tcp_cpu_before, tcp_cpu_after),
        upload,
        distribution,
        last: Milestones {
            downloaded: latest(|m| m.downloaded),
            unpacked: latest(|m| m.unpacked),
            running: latest(|m| m.running),
        },
        reg_rss0,
        reg_hwm_upload,
        reg_hwm,
        reg_cpu_upload: reg_cpu1 - reg_cpu0,
        reg_cpu,
        agent_mem: agent_rss0
            .iter()
            .zip(&agent_hwm)
            .max_by_key(|(r, h)| h.saturating_sub(**r))
            .map(|(r, h)| (*r, *h))
            .unwrap_or_default(),
        agent_cpu_mean: agent_cpu / args.agents.max(1) as u32,
        serve,
        serve_cpu,
    })
}

/// Every node downloads the package at once with `Agent.Download` (as its agent does,
/// with the identity in its data dir), into this process, which discards the data.
async fn raw_downloads(fleet: &Fleet) -> anyhow::Result<Duration> {
    let mut clients = Vec::new();
    for a in &fleet.agents {
        let text = std::fs::read_to_string(a.data_dir.join("identity"))?;
        let identity: serde_json::Value = serde_json::from_str(&text)?;
        let secret = identity["secret"]
            .as_str()
            .context("no secret in the identity file")?
            .to_string();
        let channel = tonic::transport::Endpoint::from_shared(fleet.addr.clone())?
            .tcp_nodelay(true)
            .connect()
            .await?;
        let client = AgentClient::new(channel).max_decoding_message_size(8 << 20);
        clients.push((client, a.node.clone(), secret));
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(mut client, node, identity)| {
            tokio::spawn(async move {
                let mut stream = client
                    .download(DownloadRequest {
                        node,
                        identity,
                        app: "bench".into(),
                        server: "dist".into(),
                        version: "1.0.0".into(),
                        offset: 0,
                    })
                    .await?
                    .into_inner();
                let mut got = 0u64;
                while let Some(chunk) = stream.message().await? {
                    got += chunk.data.len() as u64;
                }
                anyhow::Ok(got)
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

async fn run(args: &Args, dir: &Path) -> anyhow::Result<()> {
    let size = args.size_mib << 20;
    let pkg = dir.join("bench-dist-1.0.0.tgz");
    let t = Instant::now();
    let sha = build_package(&pkg, size)?;
    let pkg_size = std::fs::metadata(&pkg)?.len();
    eprintln!(
        "package: {pkg_size} bytes ({:.1} MiB), built in {:.1} s",
        mib(pkg_size),
        t.elapsed().as_secs_f64()
    );
    // The component costs, in this process, for the breakdown.
    let t = Instant::now();
    sha256_file(&pkg)?;
    let sha_time = t.elapsed();
    let unpack = unpack_time(&pkg, &dir.join("unpack-probe"))?;

    let mut runs = Vec::new();
    for i in 0..args.runs {
        let r = one_run(args, &pkg, &sha, dir).await?;
        eprintln!(
            "run {}: tcp {:.2} s / {:.2} s, upload {:.2} s, distribution {:.2} s",
            i + 1,
            r.tcp_before.as_secs_f64(),
            r.tcp_after.as_secs_f64(),
            r.upload.as_secs_f64(),
            r.distribution.as_secs_f64()
        );
        runs.push(r);
    }

    let n = args.agents as u64;
    let total = n * pkg_size;
    println!(
        "Package: {pkg_size} bytes ({:.1} MiB) of random bytes, to {n} agents; aggregate rates are {n} x the package over the time.",
        mib(pkg_size)
    );
    println!();
    println!(
        "| run | upload | distribution (aggregate) | TCP copy (aggregate) | ratio | registry RSS before / peak / growth | agent RSS before / peak / growth (max) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut ratios = Vec::new();
    let (mut reg_growth_max, mut agent_growth_max) = (0, 0);
    for (i, r) in runs.iter().enumerate() {
        let ratio = r.tcp().as_secs_f64() / r.distribution.as_secs_f64();
        ratios.push(ratio);
        let reg_growth = r.reg_hwm.saturating_sub(r.reg_rss0);
        let a_growth = r.agent_mem.1.saturating_sub(r.agent_mem.0);
        reg_growth_max = reg_growth_max.max(reg_growth);
        agent_growth_max = agent_growth_max.max(a_growth);
        println!(
            "| {} | {:.2} s, {:.0} MiB/s | {:.2} s, {:.0} MiB/s | {:.2} s, {:.0} MiB/s | {:.0} % | {:.1} / {:.1} / {:.1} MiB | {:.1} / {:.1} / {:.1} MiB |",
            i + 1,
            r.upload.as_secs_f64(),
            mib_s(pkg_size, r.upload),
            r.distribution.as_secs_f64(),
            mib_s(total, r.distribution),
            r.tcp().as_secs_f64(),
            mib_s(total, r.tcp()),
            ratio * 100.0,
            mib(r.reg_rss0),
            mib(r.reg_hwm),
            mib(reg_growth),
            mib(r.agent_mem.0),
            mib(r.agent_mem.1),
            mib(a_growth),
        );
    }
    println!();
    println!(
        "| run | TCP copy before / after (its CPU) | last download verified | last release unpacked | all running | download phase (aggregate) | registry CPU: upload / distribution | agent CPU (mean) | registry VmHWM after upload | registry alone: {n} Downloads into the bench, discarded (aggregate, registry CPU) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (i, r) in runs.iter().enumerate() {
        println!(
            "| {} | {:.2} s / {:.2} s ({:.2} s / {:.2} s) | {} | {} | {} | {} | {:.2} s / {:.2} s | {:.2} s | {:.1} MiB | {:.2} s, {:.0} MiB/s, {:.2} s CPU |",
            i + 1,
            r.tcp_before.as_secs_f64(),
            r.tcp_after.as_secs_f64(),
            r.tcp_cpu.0.as_secs_f64(),
            r.tcp_cpu.1.as_secs_f64(),
            secs(r.last.downloaded),
            secs(r.last.unpacked),
            secs(r.last.running),
            r.last
                .downloaded
                .map_or("-".into(), |d| format!("{:.0} MiB/s", mib_s(total, d))),
            r.reg_cpu_upload.as_secs_f64(),
            r.reg_cpu.as_secs_f64(),
            r.agent_cpu_mean.as_secs_f64(),
            mib(r.reg_hwm_upload),
            r.serve.as_secs_f64(),
            mib_s(total, r.serve),
            r.serve_cpu.as_secs_f64(),
        );
    }
    println!();
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    println!(
        "- in this process, one thread: sha256 of the package {:.2} s ({:.0} MiB/s), gunzip + untar {:.2} s ({:.0} MiB/s)",
        sha_time.as_secs_f64(),
        mib_s(pkg_size, sha_time),
        unpack.as_secs_f64(),
        mib_s(pkg_size, unpack),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let ceilings: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{:.0} %",
                100.0 * r.ceiling(n as u32, sha_time + unpack, cores)
            )
        })
        .collect();
    println!(
        "- ceiling on these {cores} cores, if the distribution did the TCP copy's own work plus {n} x (sha256 + gunzip + untar) and nothing else, all cores busy: runs {} of the copy",
        ceilings.join(", ")
    );
    println!(
        "- goal distribution >= 50 % of the TCP copy: {} (median {:.0} %, runs {})",
        if median >= 0.5 { "met" } else { "missed" },
        median * 100.0,
        ratios
            .iter()
            .map(|r| format!("{:.0} %", r * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "- goal peak RSS growth < 64 MiB on each side: {} (largest: registry {:.1} MiB, agent {:.1} MiB)",
        if reg_growth_max < 64 << 20 && agent_growth_max < 64 << 20 {
            "met"
        } else {
            "missed"
        },
        mib(reg_growth_max),
        mib(agent_growth_max)
    );
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
    let dir = match &args.tmp {
        Some(t) => tempfile::tempdir_in(t)?,
        None => tempfile::tempdir()?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(&args, dir.path()))
}
