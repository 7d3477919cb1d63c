//! What an instance uses, read from its cgroup: CPU seconds and throttled time, memory
//! now and at its peak, processes, OOM kills; v1 and v2 file names side by side.

use std::path::Path;

/// One instance's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub cpu_seconds: f64,
    /// Time the CPU limit held the instance back.
    pub throttled_seconds: f64,
    /// None: not measured (no memory or pids cgroup: see [`read`]).
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    pub pids: Option<u64>,
}

/// The value of `key` in a flat-keyed file (`key value` per line: `cpu.stat`,
/// `memory.events`, `cgroup.events`, `memory.oom_control`).
pub fn keyed(path: &Path, key: &str) -> Option<u64> {
    parse_keyed(&std::fs::read_to_string(path).ok()?, key)
}

fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A file holding one number.
fn single(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads the figures from the instance's directories: (dir, is v2) for CPU time, the CPU
/// controller and memory; the pids controller's dir. A v1 directory that does not exist
/// (an instance without `[resources]` on a hybrid host is in the cgroup2 hierarchy
/// alone) is read in `member`, the cgroup2 one, where the core `cpu.stat` gives CPU time
/// without any controller; memory and pids are then not measured (None, not zero).
pub fn read(
    cpuacct: (&Path, bool),
    cpu: (&Path, bool),
    memory: (&Path, bool),
    pids: &Path,
    member: &Path,
) -> Usage {
    let cpuacct = if !cpuacct.1 && !cpuacct.0.is_dir() {
        (member, true)
    } else {
        cpuacct
    };
    let cpu_seconds = if cpuacct.1 {
        keyed(&cpuacct.0.join("cpu.stat"), "usage_usec").map(|u| u as f64 / 1e6)
    } else {
        single(&cpuacct.0.join("cpuacct.usage")).map(|n| n as f64 / 1e9)
    };
    let throttled_seconds = if cpu.1 {
        keyed(&cpu.0.join("cpu.stat"), "throttled_usec").map(|u| u as f64 / 1e6)
    } else {
        keyed(&cpu.0.join("cpu.stat"), "throttled_time").map(|n| n as f64 / 1e9)
    };
    let (current, peak) = if memory.1 {
        ("memory.current", "memory.peak")
    } else {
        ("memory.usage_in_bytes", "memory.max_usage_in_bytes")
    };
    Usage {
        cpu_seconds: cpu_seconds.unwrap_or(0.0),
        throttled_seconds: throttled_seconds.unwrap_or(0.0),
        memory_bytes: single(&memory.0.join(current)),
        memory_peak_bytes: single(&memory.0.join(peak)),
        pids: single(&pids.join("pids.current")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_keyed;

    #[test]
    fn keyed_files() {
        let stat = "usage_usec 1500000\nuser_usec 1000000\nnr_throttled 3\nthrottled_usec 250000\n";
        assert_eq!(parse_keyed(stat, "usage_usec"), Some(1_500_000));
        assert_eq!(parse_keyed(stat, "throttled_usec"), Some(250_000));
        assert_eq!(parse_keyed(stat, "nope"), None);
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(parse_keyed(oom, "oom_kill"), Some(2));
        assert_eq!(parse_keyed("populated 1\nfrozen 0\n", "populated"), Some(1));
    }
}
