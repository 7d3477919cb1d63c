//! Start records written by `restart_child`: one `PID NS` line per start, NS being the
//! CLOCK_REALTIME nanoseconds the child read first thing in `main`.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

/// One start of the child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    pub pid: u32,
    /// CLOCK_REALTIME at start, in nanoseconds since the epoch.
    pub ns: u128,
}

/// CLOCK_REALTIME now, in nanoseconds: the clock the child records with.
pub fn now_ns() -> anyhow::Result<u128> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_nanos())
}

/// Every start recorded in `path` so far; none if the file does not exist yet.
pub fn read(path: &Path) -> anyhow::Result<Vec<Start>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    text.lines().map(|line| parse(line, path)).collect()
}

fn parse(line: &str, path: &Path) -> anyhow::Result<Start> {
    let (pid, ns) = line
        .split_once(' ')
        .with_context(|| format!("bad line {line:?} in {}", path.display()))?;
    Ok(Start {
        pid: pid
            .parse()
            .with_context(|| format!("bad pid in {line:?}"))?,
        ns: ns
            .parse()
            .with_context(|| format!("bad time in {line:?}"))?,
    })
}

/// Polls `path` every millisecond until it holds at least `count` starts and returns
/// the last. `check` runs on every poll, so that a dead supervisor fails at once rather
/// than at the deadline. The poll interval does not bias the measurement: latency is
/// taken from the recorded time, not from when the poll notices it.
pub fn wait_for(
    path: &Path,
    count: usize,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Start> {
    let deadline = Instant::now() + timeout;
    loop {
        let starts = read(path)?;
        if starts.len() >= count
            && let Some(last) = starts.last()
        {
            return Ok(*last);
        }
        check()?;
        if Instant::now() > deadline {
            bail!(
                "{} has {} start(s), not {count}, after {timeout:?}",
                path.display(),
                starts.len()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Nanoseconds from `t0` to `start`, as a duration (zero if the start came first,
/// which would mean the clock stepped back).
pub fn since(t0: u128, start: Start) -> Duration {
    let ns = start.ns.saturating_sub(t0);
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}
