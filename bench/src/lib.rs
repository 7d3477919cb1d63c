//! Shared pieces of the benchmarks: process sampling from `/proc`, percentiles, ports.
//!
//! - [`procs`]: processes the benchmarks start, killed with their group on drop
//! - [`records`]: the start records `restart_child` writes
//! - [`supervisors`]: runit and supervisord under test; [`corral`]: Corral under test
//! - [`ceiling`]: the smallest push servers, the floor under the watch and wake-up rows

pub mod ceiling;
pub mod corral;
pub mod procs;
pub mod records;
pub mod supervisors;

use std::time::Duration;

/// CPU time (user + system) of a process so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).unwrap_or(&"0").parse::<u64>()?
        + fields.get(12).unwrap_or(&"0").parse::<u64>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as u64;
    Ok(Duration::from_millis(ticks * 1000 / hz))
}

/// CPU time of a process's threads so far, to the nanosecond (`/proc/PID/task/*/schedstat`,
/// where `cpu_time` counts clock ticks): every thread, or those whose name starts with
/// `prefix`. Threads that ended before the call are not counted, so compare two calls
/// around a stretch in which the threads that matter live.
pub fn threads_cpu(pid: u32, prefix: Option<&str>) -> anyhow::Result<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = task?.path();
        if let Some(prefix) = prefix {
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if !comm.starts_with(prefix) {
                continue;
            }
        }
        // The thread may have ended since the directory was listed.
        let Ok(stat) = std::fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        total += stat
            .split_whitespace()
            .next()
            .unwrap_or("0")
            .parse::<u64>()?;
    }
    Ok(Duration::from_nanos(total))
}

/// A `/proc/PID/status` field in bytes (e.g. `VmRSS`, `VmHWM`).
pub fn status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .ok_or_else(|| anyhow::anyhow!("{field} not in /proc/{pid}/status"))?;
    let kb: u64 = line.split_whitespace().nth(1).unwrap_or("0").parse()?;
    Ok(kb * 1024)
}

/// The `p`-th percentile (0-100) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Raises this process's open-files limit to the hard limit (children inherit it).
pub fn raise_nofile() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
