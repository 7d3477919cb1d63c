//! The cgroups of test agents: each agent gets a subtree name of its own (`--cgroup`,
//! from its data dir, so a restarted agent finds its instances again), since tests that
//! run at once all have a `node-a`. Dropping an [`crate::Agent`] kills what is left in
//! its subtree and removes it, in every hierarchy.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_agent::cgroup::layout::{Mounted, hierarchies};

/// The subtree name of the agent with data dir `data_dir`.
pub fn subtree_name(data_dir: &Path) -> String {
    // FNV-1a: stable across runs, no dependency.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data_dir.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("corral-test-{h:016x}")
}

/// The hierarchies this test process (and so the agents it starts) sits in.
pub fn mounted() -> Vec<Mounted> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    hierarchies(&mountinfo, &own)
}

/// Whether this host lets the tests use cgroups (root, a writable cgroup file system).
pub fn usable() -> bool {
    let m = mounted();
    !m.is_empty() && m.iter().all(|h| is_writable(&h.own))
}

fn is_writable(dir: &Path) -> bool {
    let probe = dir.join(format!("corral-test-probe-{}", std::process::id()));
    let ok = std::fs::create_dir(&probe).is_ok();
    let _ = std::fs::remove_dir(&probe);
    ok
}

/// The directory of an instance's cgroup in the hierarchy carrying `controller`
/// (`"v2"`: the cgroup2 one).
pub fn instance_dir(
    data_dir: &Path,
    node: &str,
    server: &str,
    controller: &str,
) -> Option<PathBuf> {
    let h = mounted().into_iter().find(|m| {
        if controller == "v2" {
            m.is_v2()
        } else {
            m.has(controller)
        }
    })?;
    Some(
        h.own
            .join(subtree_name(data_dir))
            .join(node)
            .join(server)
            .join("0"),
    )
}

/// Every pid in `dir`'s cgroup and below.
pub fn pids_under(dir: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(pids_under(&e.path()));
        }
    }
    out
}

fn remove_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Kills every process left in the subtree of the agent with data dir `data_dir` and
/// removes the subtree from every hierarchy. Processes killed are the agent's own
/// services (the subtree is this agent's alone).
pub fn clean_up(data_dir: &Path) {
    let name = subtree_name(data_dir);
    let roots: Vec<PathBuf> = mounted()
        .into_iter()
        .map(|m| m.own.join(&name))
        .filter(|d| d.exists())
        .collect();
    if roots.is_empty() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<i32> = roots.iter().flat_map(|r| pids_under(r)).collect();
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        // Thawed first: a frozen process dies only once thawed.
        for r in &roots {
            thaw(r);
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for r in &roots {
        remove_tree(r);
    }
}

fn thaw(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
    let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            thaw(&e.path());
        }
    }
}
