//! Restart latency after SIGKILL: Corral's agent vs runit's `runsv` vs supervisord, side
//! by side in one run, each supervising the same `restart_child`; then the agent's memory
//! with 100 running children.
//!
//! A round: read the child's pid from its record file, take t0 (CLOCK_REALTIME), SIGKILL
//! the child, wait for the next start record; latency = recorded start - t0. It covers
//! the kill, the supervisor noticing, fork + exec, and the child's own start-up (the same
//! for all). Rounds are `--gap` apart, longer than every minimum uptime configured (1 s)
//! plus supervisord's 1 s main-loop tick, so that no supervisor sees a quick failure and
//! backs off.
//!
//!     cargo build --release --bins
//!     cargo run --release -p corral-bench --bin restart -- --tmp /dev/shm   # or a disk

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use corral_bench::corral::Corral;
use corral_bench::procs::{become_subreaper, ensure_installed, kill_groups_on_signal};
use corral_bench::records::{self, since};
use corral_bench::supervisors::{Harness, Setup, start_runit, start_supervisord};
use corral_bench::{cpu_time, mib, percentile, status_bytes};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[derive(Parser)]
struct Args {
    /// The registry binary.
    #[arg(long, default_value = "target/release/registry")]
    registry: PathBuf,
    /// The agent binary.
    #[arg(long, default_value = "target/release/agent")]
    agent: PathBuf,
    /// The supervised child [default: restart_child next to this binary].
    #[arg(long)]
    child: Option<PathBuf>,
    /// Where the supervisors' temp dirs go (their state files, the child's records).
    /// Compare a disk with a tmpfs such as /dev/shm: state writes around a restart cost
    /// what the file system makes them cost. [default: $TMPDIR or /tmp]
    #[arg(long)]
    tmp: Option<PathBuf>,
    /// Kills per supervisor.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    /// Time from a start to the next kill.
    #[arg(long, default_value = "2500ms", value_parser = humantime::parse_duration)]
    gap: Duration,
    /// The supervisors to compare, in this order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "corral,corral-nocg,runit,runit-sh,supervisord"
    )]
    supervisors: Vec<String>,
    /// Children for the agent memory measurement (0: skip it).
    #[arg(long, default_value_t = 100)]
    children: usize,
}

/// One supervisor's restart latencies, sorted.
struct Latencies {
    name: String,
    sorted: Vec<Duration>,
    /// The supervisor's own RSS after the rounds, with one child.
    rss: u64,
}

/// Kills the child `rounds` times and collects how long each restart took.
fn measure(h: &mut Harness, rounds: usize, gap: Duration) -> anyhow::Result<Latencies> {
    let record = h.record.clone();
    let mut last = h.wait_for(&record, 1, Duration::from_secs(30))?;
    let mut sorted = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        std::thread::sleep(gap);
        let count = records::read(&record)?.len();
        let t0 = records::now_ns()?;
        kill(Pid::from_raw(last.pid as i32), Signal::SIGKILL)
            .with_context(|| format!("{}: kill child {}", h.name, last.pid))?;
        let next = h.wait_for(&record, count + 1, Duration::from_secs(10))?;
        if next.pid == last.pid {
            bail!("{}: the new start has the old pid {}", h.name, next.pid);
        }
        sorted.push(since(t0, next));
        last = next;
    }
    sorted.sort();
    Ok(Latencies {
        name: h.name.clone(),
        sorted,
        rss: status_bytes(h.supervisor_pid, "VmRSS")?,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn print_latencies(all: &[Latencies]) {
    println!(
        "| supervisor | rounds | median | p90 | min | max | median / Corral's | supervisor RSS |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let corral = all
        .iter()
        .find(|l| l.name == "corral")
        .map(|l| percentile(&l.sorted, 50.0));
    for l in all {
        let median = percentile(&l.sorted, 50.0);
        let ratio = corral.filter(|c| !c.is_zero()).map_or("-".into(), |c| {
            format!("{:.1}x", median.as_secs_f64() / c.as_secs_f64())
        });
        println!(
            "| {} | {} | {} | {} | {} | {} | {ratio} | {:.1} MiB |",
            l.name,
            l.sorted.len(),
            ms(median),
            ms(percentile(&l.sorted, 90.0)),
            ms(percentile(&l.sorted, 0.0)),
            ms(percentile(&l.sorted, 100.0)),
            mib(l.rss),
        );
    }
}

/// Starts one supervisor, runs the rounds, and stops it (dropping the harness).
fn run_one(which: &str, setup: &Setup, args: &Args) -> anyhow::Result<Latencies> {
    eprintln!("{which}: {} rounds, {:?} apart", args.rounds, args.gap);
    match which {
        // "corral" puts the child in a cgroup of its own (the default); "corral-nocg" runs
        // it with --cgroup off, in a process group only, as before cgroups;
        // "corral-limits" gives it `[resources]` (a pids limit), which on a hybrid v1 host
        // moves it into the v1 hierarchies before each exec.
        "corral" | "corral-nocg" | "corral-limits" => {
            let mut corral = Corral::start_with(setup, which, which != "corral-nocg")?;
            let record = corral.harness.record.clone();
            if which == "corral-limits" {
                let spec = format!(
                    "command = [{child:?}, {record:?}]\n\n[restart]\npolicy = \"always\"\n\
                     min_uptime = \"1s\"\n\n[resources]\npids = 4096\n",
                    child = setup.child.display().to_string(),
                    record = record.display().to_string(),
                );
                corral.apply_spec("child", &spec)?;
            } else {
                corral.apply("child", &setup.child, &record)?;
            }
            measure(&mut corral.harness, args.rounds, args.gap)
        }
        "runit" => measure(&mut start_runit(setup, false)?, args.rounds, args.gap),
        "runit-sh" => measure(&mut start_runit(setup, true)?, args.rounds, args.gap),
        "supervisord" => measure(&mut start_supervisord(setup)?, args.rounds, args.gap),
        other => bail!("unknown supervisor {other}"),
    }
}

/// The agent's memory and threads at one moment, as a table row.
fn memory_row(label: &str, pid: u32, cpu: f64) -> anyhow::Result<String> {
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    Ok(format!(
        "| {label} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {threads} | {cpu:.2} % |",
        mib(status_bytes(pid, "VmRSS")?),
        mib(status_bytes(pid, "VmHWM")?),
        mib(status_bytes(pid, "RssAnon")?),
        mib(status_bytes(pid, "RssFile")?),
    ))
}

/// CPU use of `pid` over `window`, in percent of one core.
fn cpu_percent(pid: u32, window: Duration) -> anyhow::Result<f64> {
    let (c0, t0) = (cpu_time(pid)?, Instant::now());
    std::thread::sleep(window);
    Ok((cpu_time(pid)? - c0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0)
}

/// A fresh registry and agent: memory with no child, then with `n` running children.
fn agent_memory(setup: &Setup, n: usize) -> anyhow::Result<()> {
    let mut corral = Corral::start(setup)?;
    let agent = corral.harness.supervisor_pid;
    std::thread::sleep(Duration::from_secs(3));
    let idle = memory_row(
        "0 (joined, idle)",
        agent,
        cpu_percent(agent, Duration::from_secs(10))?,
    )?;
    let started = Instant::now();
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let server = format!("c{i:03}");
        let record = corral.harness.new_record(&server);
        corral.apply(&server, &setup.child, &record)?;
        files.push(record);
    }
    for f in &files {
        corral.harness.wait_for(f, 1, Duration::from_secs(60))?;
    }
    eprintln!(
        "{n} children started {:.1?} after the first apply",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_secs(5));
    let cpu = cpu_percent(agent, Duration::from_secs(10))?;
    let running = files.iter().filter(|f| running(f, &setup.child)).count();
    let busy = memory_row(&format!("{n} ({running} running)"), agent, cpu)?;
    println!(
        "| children | agent VmRSS | VmHWM | RssAnon | RssFile | threads | agent CPU (one core) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!("{idle}\n{busy}");
    println!(
        "\nregistry (same run, for reference): VmRSS {:.1} MiB; `registry apply` refused \
         with \"database is locked\" and retried: {} time(s) for {n} applies",
        mib(status_bytes(corral.registry_pid, "VmRSS")?),
        corral.apply_retries,
    );
    Ok(())
}

/// Whether the last child recorded in `file` still runs `exe`.
fn running(file: &Path, exe: &Path) -> bool {
    records::read(file)
        .ok()
        .and_then(|s| s.last().copied())
        .and_then(|s| std::fs::read_link(format!("/proc/{}/exe", s.pid)).ok())
        .is_some_and(|p| p == exe)
}

fn setup(args: &Args) -> anyhow::Result<Setup> {
    let child = match &args.child {
        Some(c) => c.clone(),
        None => std::env::current_exe()?.with_file_name("restart_child"),
    };
    let canon = |p: &Path| {
        p.canonicalize()
            .with_context(|| format!("{} (build with cargo build --release --bins)", p.display()))
    };
    Ok(Setup {
        registry: canon(&args.registry)?,
        agent: canon(&args.agent)?,
        child: canon(&child)?,
        tmp: args.tmp.clone().unwrap_or_else(std::env::temp_dir),
    })
}

fn main() -> anyhow::Result<()> {
    kill_groups_on_signal()?;
    let args = Args::parse();
    let setup = setup(&args)?;
    become_subreaper()?;
    ensure_installed(&["runsv", "supervisord"], &["runit", "supervisor"])?;
    eprintln!("temp dirs in {}", setup.tmp.display());
    let mut all = Vec::new();
    for which in &args.supervisors {
        all.push(run_one(which, &setup, &args)?);
    }
    print_latencies(&all);
    if args.children > 0 {
        println!();
        agent_memory(&setup, args.children)?;
    }
    Ok(())
}
