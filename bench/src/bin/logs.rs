//! `registry logs -f` latency: a service writes timestamped lines at a steady rate; the
//! benchmark follows them with the real CLI (registry -> agent session -> file) and
//! reports how long after a line was written it reached the CLI's stdout.
//!
//! Each line is written by `date` itself (`t <ns since the epoch>`), so the timestamp is
//! taken just before the write; receipt is when the benchmark reads it from the CLI's
//! stdout pipe.
//!
//!     cargo build --release --bins
//!     ./target/release/logs --rate 100 --lines 3000

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use corral_bench::corral::Corral;
use corral_bench::percentile;
use corral_bench::procs::{become_subreaper, kill_groups_on_signal};
use corral_bench::records::now_ns;
use corral_bench::supervisors::Setup;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/release/registry")]
    registry: PathBuf,
    #[arg(long, default_value = "target/release/agent")]
    agent: PathBuf,
    #[arg(long)]
    tmp: Option<PathBuf>,
    /// Lines the service writes per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Lines measured (after a warm-up of one second's worth).
    #[arg(long, default_value_t = 3000)]
    lines: usize,
}

/// Kills the CLI on the way out, whatever happened.
struct Cli(Child);

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    kill_groups_on_signal()?;
    let args = Args::parse();
    become_subreaper()?;
    let canon = |p: &PathBuf| {
        p.canonicalize()
            .with_context(|| format!("{} (cargo build --release --bins)", p.display()))
    };
    let setup = Setup {
        registry: canon(&args.registry)?,
        agent: canon(&args.agent)?,
        child: PathBuf::from("/bin/true"),
        tmp: args.tmp.clone().unwrap_or_else(std::env::temp_dir),
    };
    let mut corral = Corral::start_with(&setup, "logs", true)?;
    let pause = 1.0 / f64::from(args.rate.max(1));
    let script = format!("while :; do date +'t %s%N'; sleep {pause:.4}; done");
    corral.apply_spec(
        "ticker",
        &format!("command = [\"/bin/sh\", \"-c\", {script:?}]\n"),
    )?;
    let mut child = corral
        .cli()
        .args([
            "logs",
            "-f",
            "bench.ticker",
            "--stream",
            "stdout",
            "-n",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("registry logs -f")?;
    let out = child.stdout.take().context("stdout")?;
    let _cli = Cli(child);
    let warmup = args.rate as usize;
    let mut latencies = Vec::with_capacity(args.lines);
    let started = Instant::now();
    let mut seen = 0usize;
    for line in BufReader::new(out).lines() {
        let line = line.context("reading the CLI's output")?;
        let received = now_ns()?;
        let Some(written) = line
            .strip_prefix("t ")
            .and_then(|t| t.trim().parse::<u128>().ok())
        else {
            continue;
        };
        seen += 1;
        if seen > warmup {
            let ns = received.saturating_sub(written);
            latencies.push(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)));
        }
        if latencies.len() == args.lines {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {seen} lines in 10 minutes");
        }
    }
    if latencies.len() < args.lines {
        bail!("the CLI ended after {} lines", latencies.len());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "logs -f: {} lines (asked {}/s, got {:.0}/s) over {:.1}s: write -> CLI stdout p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        args.rate,
        seen as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies[latencies.len() - 1]),
    );
    Ok(())
}
