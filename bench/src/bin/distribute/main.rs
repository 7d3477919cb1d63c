//! Package distribution against today's practice: the same package to N nodes, by Corral
//! (registry + agents, nodes serving each other) and by what Tars' patch and most
//! operators' scripts do (nginx + `curl -o` + `sha256sum -c` + `tar -xzf`, N pipelines at
//! once), in the same run, on the same machine.
//!
//!     cargo build --release -p corral-registry -p corral-agent --bins
//!     cargo run --release -p corral-bench --bin distribute -- \
//!         --registry target/release/registry --agent target/release/agent \
//!         --agents 4,16 --runs 2
//!     cargo run --release -p corral-bench --bin distribute -- --smoke     # CI, not timed
//!
//! Two packages of about `--size-mib` compressed: random bytes (incompressible) and
//! binaries of this host (`/usr/bin`, `/usr/lib`, gzip'd by `tar czf`). For each package
//! and each N, the pipelines run, then Corral ([`corral`]): each is timed from its start
//! to every node holding the verified, unpacked release on disk. Reported: wall time and
//! ratio (pipelines / Corral), CPU per node (agents from /proc; pipelines' curl, sha256sum
//! and tar from getrusage of children), the servers' CPU (registry; nginx), the
//! registry's egress (its `package_bytes_sent` counter) in packages, and the stages of an
//! install measured alone in this process (inflate, sha256, write) beside Corral's CPU
//! per node; then with what a node does besides them: writing the package file, and
//! moving the bytes over plain loopback TCP (receiving the package once, sending the
//! share of a package that nodes served their peers). The ceiling: N x those stages
//! spread over the cores, against the pipelines' wall time.
//!
//! `--smoke`: a 1 MiB package to 2 agents, both sides; fails loudly if either fails.

mod corral;
mod fleet;
mod package;
mod pipeline;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::ensure;
use clap::Parser;
use corral_bench::mib;
use package::{Kind, Package, Stages};

#[derive(Parser)]
struct Args {
    /// Size of each package, compressed, in MiB.
    #[arg(long, default_value_t = 100)]
    size_mib: u64,
    /// How many nodes, one figure each (e.g. 4,16).
    #[arg(long, value_delimiter = ',', default_value = "4,16")]
    agents: Vec<usize>,
    /// Which packages.
    #[arg(long, value_delimiter = ',', default_value = "incompressible,binaries")]
    packages: Vec<Kind>,
    /// Runs of each (package, N).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// The registry binary.
    #[arg(long, default_value = "target/release/registry")]
    registry: PathBuf,
    /// The agent binary.
    #[arg(long, default_value = "target/release/agent")]
    agent: PathBuf,
    /// Give up on one distribution after this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Where the temporary files go (about N + 3 times the package, unpacked).
    #[arg(long)]
    tmp: Option<PathBuf>,
    /// A 1 MiB package to 2 agents, once: a check that both sides work, not a measure.
    #[arg(long)]
    smoke: bool,
}

struct Row {
    kind: Kind,
    nodes: usize,
    size: u64,
    corral: corral::Measured,
    pipes: pipeline::Measured,
    stages: Stages,
}

fn s(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn print(rows: &[Row], cores: u32) {
    println!(
        "| package | nodes | Corral | pipelines | ratio | CPU per node: Corral / pipelines | stages alone (inflate + sha256 + write) | Corral CPU / stages | + package file write | Corral CPU / (stages + file) | + TCP receive, + sends to peers | Corral CPU / (stages + file + transport) | registry CPU / nginx CPU | registry egress | from peers | ceiling |"
    );
    println!(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for r in rows {
        let n = r.nodes as u32;
        let per_node = r.corral.agents_cpu / n;
        let stages = r.stages.total();
        // The least wall time N x the stages allow on these cores.
        let floor = stages * n / cores.max(1);
        // Every node receives the package once; the bytes nodes got from peers were sent
        // by nodes, so each node sends that share of a package on average.
        let peer_share = r.corral.peer_bytes as f64 / (r.size * u64::from(n)).max(1) as f64;
        let sends = r.stages.send.mul_f64(peer_share);
        let transport = r.stages.receive + sends;
        let all = stages + r.stages.package_file + transport;
        println!(
            "| {} {:.0} MiB | {} | {} | {} | {:.2}x | {} / {} | {} ({} + {} + {}) | {:.2}x | {} | {:.2}x | {} + {} | {:.2}x | {} / {} | {:.2}x the package | {:.0} % | {:.2}x ({}) |",
            r.kind.name(),
            mib(r.size),
            r.nodes,
            s(r.corral.wall),
            s(r.pipes.wall),
            r.pipes.wall.as_secs_f64() / r.corral.wall.as_secs_f64(),
            s(per_node),
            s(r.pipes.nodes_cpu / n),
            s(stages),
            s(r.stages.inflate),
            s(r.stages.hash),
            s(r.stages.write),
            per_node.as_secs_f64() / stages.as_secs_f64().max(1e-9),
            s(r.stages.package_file),
            per_node.as_secs_f64() / (stages + r.stages.package_file).as_secs_f64().max(1e-9),
            s(r.stages.receive),
            s(sends),
            per_node.as_secs_f64() / all.as_secs_f64().max(1e-9),
            s(r.corral.registry_cpu),
            s(r.pipes.server_cpu),
            r.corral.egress as f64 / r.size.max(1) as f64,
            100.0 * peer_share,
            r.pipes.wall.as_secs_f64() / floor.as_secs_f64().max(1e-9),
            s(floor),
        );
    }
}

async fn run(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let mut rows = Vec::new();
    for &kind in &args.packages {
        let pkg: Package = package::build(
            kind,
            &dir.join(format!("{}.tgz", kind.name())),
            args.size_mib << 20,
        )?;
        eprintln!(
            "package {}: {} bytes, sha256 {}",
            kind.name(),
            pkg.size,
            pkg.sha256
        );
        let stages = package::stages(&pkg.path, &dir.join("stages"))?;
        for &nodes in &args.agents {
            for run in 0..args.runs {
                let pipes = pipeline::run(&pkg, nodes, &dir.join("pipelines"))?;
                let corral = corral::run(
                    &args.registry,
                    &args.agent,
                    &pkg,
                    nodes,
                    args.timeout,
                    &dir.join("corral"),
                )
                .await?;
                eprintln!(
                    "{} x{nodes} run {}: Corral {}, pipelines {}, egress {:.2}x",
                    kind.name(),
                    run + 1,
                    s(corral.wall),
                    s(pipes.wall),
                    corral.egress as f64 / pkg.size as f64
                );
                rows.push(Row {
                    kind,
                    nodes,
                    size: pkg.size,
                    corral,
                    pipes,
                    stages,
                });
            }
        }
        std::fs::remove_file(&pkg.path)?;
    }
    print(&rows, cores);
    println!();
    println!(
        "- {cores} cores; ratio = pipelines' wall time / Corral's; ceiling = the pipelines' wall time / (N x the stages alone / cores), the best ratio the CPU allows a distribution that does nothing but the stages"
    );
    if args.smoke {
        for r in &rows {
            ensure!(
                r.corral.egress >= r.size,
                "the registry sent {} bytes of a {}-byte package",
                r.corral.egress,
                r.size
            );
        }
        println!("- smoke: both sides delivered the package to every node");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.size_mib = 1;
        args.agents = vec![2];
        args.packages = vec![Kind::Incompressible];
        args.runs = 1;
    }
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
