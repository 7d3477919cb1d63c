//! Stop of an instance with 100 processes that ignore SIGTERM: how long after the grace
//! period every one of them is gone, with each instance in a cgroup of its own.
//!
//! The service is bash starting 100 `sleep`s, all ignoring SIGTERM, some of them in
//! sessions of their own (`setsid`), so only the cgroup holds them all. Each round:
//! `registry server stop`, then poll every process of the cgroup (listed before the stop)
//! until none is left; the agent's `running -> stopping` event says when the stop signal
//! went out, so the figure is (last process gone) - (stopping + stop.timeout). The
//! agent's own `stopping -> stopped` event is reported too. Then `server start` for the
//! next round.
//!
//!     cargo build --release --bins
//!     ./target/release/stop --rounds 20

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use corral_bench::corral::Corral;
use corral_bench::percentile;
use corral_bench::procs::{become_subreaper, kill_groups_on_signal, run_checked};
use corral_bench::supervisors::Setup;
use serde_json::Value;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/release/registry")]
    registry: PathBuf,
    #[arg(long, default_value = "target/release/agent")]
    agent: PathBuf,
    #[arg(long)]
    tmp: Option<PathBuf>,
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Processes of the instance besides its main one.
    #[arg(long, default_value_t = 100)]
    processes: usize,
    /// The spec's stop.timeout (the grace period).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    grace: Duration,
}

fn now_ms_f() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn status(c: &Corral) -> anyhow::Result<Value> {
    let out = run_checked(
        c.cli()
            .args(["server", "status", "bench.many", "-o", "json"]),
    )?;
    let v: Value = serde_json::from_str(&out)?;
    v.get(0).cloned().context("no instance")
}

fn wait_status(c: &Corral, what: &str, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(c)?;
        if pred(&s) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("{what}: {s}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The at_ms of the last event of bench.many going to `to`.
fn last_event(c: &Corral, to: &str) -> anyhow::Result<i64> {
    let out = run_checked(c.cli().args([
        "events",
        "--server",
        "bench.many",
        "--limit",
        "1000",
        "-o",
        "json",
    ]))?;
    let v: Value = serde_json::from_str(&out)?;
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["to"] == to)
        .filter_map(|e| e["at_ms"].as_i64())
        .max()
        .with_context(|| format!("no event to {to}"))
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
    let mut corral = Corral::start_with(&setup, "stop", true)?;
    let half = args.processes / 2;
    let script = format!(
        "trap '' TERM; for i in $(seq {half}); do sleep 100000 & done; \
         for i in $(seq {}); do setsid sleep 100000 & done; echo started > data/started; wait",
        args.processes - half
    );
    corral.apply_spec(
        "many",
        &format!(
            "command = [\"/bin/bash\", \"-c\", {script:?}]\n[stop]\ntimeout = \"{}\"\n",
            humantime::format_duration(args.grace)
        ),
    )?;
    let leaf = corral_tests::cgroups::instance_dir(&corral.data_dir, "bench", "bench.many", "v2")
        .or_else(|| {
            corral_tests::cgroups::instance_dir(&corral.data_dir, "bench", "bench.many", "freezer")
        })
        .context("no membership hierarchy")?;
    let mut after_grace = Vec::new();
    let mut by_events = Vec::new();
    for round in 0..args.rounds {
        if round > 0 {
            run_checked(corral.cli().args(["server", "start", "bench.many"]))?;
        }
        wait_status(&corral, "running", |s| s["state"] == "running")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let pids = loop {
            let pids = corral_tests::cgroups::pids_under(&leaf);
            if pids.len() > args.processes {
                break pids;
            }
            if Instant::now() > deadline {
                bail!("only {} processes in {}", pids.len(), leaf.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        run_checked(corral.cli().args(["server", "stop", "bench.many"]))?;
        let mut gone_ms = 0.0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while pids.iter().any(|p| corral_tests::alive(*p as u32)) {
            if Instant::now() > deadline {
                bail!("processes left 60 s after the stop");
            }
            std::thread::sleep(Duration::from_micros(500));
            gone_ms = now_ms_f();
        }
        wait_status(&corral, "stopped", |s| s["state"] == "stopped")?;
        // Events are written in batches: wait for this round's.
        let deadline = Instant::now() + Duration::from_secs(20);
        let (stopping, stopped) = loop {
            let stopping = last_event(&corral, "stopping")?;
            match last_event(&corral, "stopped") {
                Ok(stopped) if stopped >= stopping => break (stopping as f64, stopped as f64),
                _ if Instant::now() > deadline => bail!("no stopped event after the stop"),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let grace = args.grace.as_secs_f64() * 1000.0;
        after_grace.push(Duration::from_secs_f64(
            ((gone_ms - stopping - grace) / 1000.0).max(0.0),
        ));
        by_events.push(Duration::from_secs_f64(
            ((stopped - stopping - grace) / 1000.0).max(0.0),
        ));
        eprintln!(
            "round {round}: {} processes, last gone {:.1} ms after the grace period; stopped event {:.0} ms after it",
            pids.len(),
            gone_ms - stopping - grace,
            stopped - stopping - grace
        );
    }
    after_grace.sort();
    by_events.sort();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!("| measure | rounds | median | p90 | max |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, v) in [
        ("last process gone", &after_grace),
        ("`stopped` event", &by_events),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            v.len(),
            ms(percentile(v, 50.0)),
            ms(percentile(v, 90.0)),
            ms(percentile(v, 100.0))
        );
    }
    Ok(())
}
