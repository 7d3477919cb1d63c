//! The cgroup of one instance, `OWN/SUBTREE/NODE/APP.SERVER/ORDINAL` in every hierarchy
//! the agent uses: created with its limits before each start (the child is created in it,
//! or enters it between clone and exec, through the descriptors
//! [`InstanceCgroup::prepare`] opens), signalled and killed as a whole, measured,
//! removed once empty. Without `[resources]` on a hybrid host only the cgroup2 one.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::usage::{self, Usage};
use super::{Cgroups, Limits, mkdir, write};

/// The CFS period the CPU limit is a quota of (the kernel's default, 100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// How long a freeze may take before the kill goes ahead anyway.
const FREEZE_WAIT: Duration = Duration::from_millis(200);

/// How a child enters the instance's cgroup.
#[derive(Debug, Default)]
pub struct Entry {
    /// The v2 cgroup's directory, when that is the only cgroup: the child is created in
    /// it (clone3 with CLONE_INTO_CGROUP), no migration.
    pub dir: Option<OwnedFd>,
    /// The `cgroup.procs` of each cgroup, which the child writes itself into before it
    /// execs (limits on v1 hierarchies).
    pub procs: Vec<OwnedFd>,
}

#[derive(Clone, Debug)]
pub struct InstanceCgroup {
    cg: Arc<Cgroups>,
    /// `APP.SERVER/ORDINAL`
    rel: PathBuf,
    /// The v2 cgroup was created by this agent and not killed through `cgroup.kill`
    /// since. Linux 6.18 (as observed on the test machine) SIGKILLs a child that clone3
    /// creates in a cgroup that was once killed through `cgroup.kill` (its fork-versus-kill
    /// check compares the cgroup's kill count with the parent's), so a cgroup that is
    /// not known to be fresh is made anew before a clone3 start.
    fresh: Arc<AtomicBool>,
}

impl InstanceCgroup {
    pub(super) fn new(cg: Arc<Cgroups>, server: &str, ordinal: u32) -> InstanceCgroup {
        InstanceCgroup {
            cg,
            rel: Path::new(server).join(ordinal.to_string()),
            fresh: Arc::new(AtomicBool::new(false)),
        }
    }

    fn dir(&self, i: usize) -> PathBuf {
        self.cg.hiers[i].base.join(&self.rel)
    }

    /// The membership cgroup's directory (for messages and tests).
    pub fn path(&self) -> PathBuf {
        self.dir(self.cg.member)
    }

    /// Every hierarchy the instance has a cgroup in, each once.
    fn used(&self) -> Vec<usize> {
        let c = &self.cg;
        let mut out = Vec::new();
        for i in [c.member, c.memory, c.cpu, c.cpuacct, c.pids]
            .into_iter()
            .chain(c.freezer)
        {
            if !out.contains(&i) {
                out.push(i);
            }
        }
        out
    }

    /// The hierarchies a start with `limits` needs. With limits, every one; without, on a
    /// host whose membership is v2, that one alone: membership, kill and CPU time (the
    /// core `cpu.stat`) need no controller, so the child is created in it (clone3) and
    /// moved into no v1 hierarchy. On pure v2 both are the same one hierarchy.
    fn needed(&self, limits: &Limits) -> Vec<usize> {
        let c = &self.cg;
        if c.hiers[c.member].v2 && !limits.any() {
            vec![c.member]
        } else {
            self.used()
        }
    }

    /// Creates the cgroup (again), writes its limits and opens what the child needs to
    /// enter it ([`Entry`]). When `written` says these limits are in place already (a
    /// restart of the same spec) and the cgroup is still there, only that is opened: a
    /// restart pays for no more than it needs.
    pub fn prepare(&self, limits: &Limits, written: Option<&Limits>) -> Result<Entry, String> {
        let needed = self.needed(limits);
        let clone3 = matches!(needed[..], [i] if self.cg.hiers[i].v2);
        let dir = self.dir(self.cg.member);
        if clone3 && !self.fresh.load(Ordering::Relaxed) && dir.exists() {
            // Made anew (see `fresh`); still busy (processes of a kill not yet gone):
            // this start moves into it through cgroup.procs instead.
            if std::fs::remove_dir(&dir).is_err() {
                return self.enter_by_procs(limits, &needed);
            }
        } else if written == Some(limits)
            && let Some(entry) = self.open_entry(&needed)
        {
            return Ok(entry);
        }
        self.make(limits, &needed)?;
        if clone3 {
            self.fresh.store(true, Ordering::Relaxed);
        }
        self.open_entry(&needed).ok_or_else(|| {
            format!(
                "cannot open the cgroup {}: {}",
                self.path().display(),
                std::io::Error::last_os_error()
            )
        })
    }

    /// The cgroup as it is, entered through its `cgroup.procs`.
    fn enter_by_procs(&self, limits: &Limits, needed: &[usize]) -> Result<Entry, String> {
        self.make(limits, needed)?;
        let procs = self.dir(self.cg.member).join("cgroup.procs");
        let f = File::options()
            .write(true)
            .open(&procs)
            .map_err(|e| format!("cannot open {}: {e}", procs.display()))?;
        Ok(Entry {
            dir: None,
            procs: vec![OwnedFd::from(f)],
        })
    }

    /// Creates the cgroups `needed` (those that exist stay) and writes the limits.
    fn make(&self, limits: &Limits, needed: &[usize]) -> Result<(), String> {
        for &i in needed {
            let dir = self.dir(i);
            let h = &self.cg.hiers[i];
            if let Some(parent) = dir.parent() {
                mkdir(parent)?;
                if !h.enable.is_empty() {
                    let on: Vec<String> = h.enable.iter().map(|c| format!("+{c}")).collect();
                    write(&parent.join("cgroup.subtree_control"), &on.join(" "))?;
                }
            }
            mkdir(&dir)?;
        }
        if needed.len() == self.used().len() {
            self.write_limits(limits)?;
        } else {
            // v1 cgroups of an earlier spec with [resources]: their limits no longer apply.
            for i in self.used().into_iter().filter(|i| !needed.contains(i)) {
                let _ = std::fs::remove_dir(self.dir(i));
            }
        }
        Ok(())
    }

    /// What the child enters: the v2 directory when that is all it needs, else every
    /// needed `cgroup.procs`. None if a cgroup is missing.
    fn open_entry(&self, needed: &[usize]) -> Option<Entry> {
        if let [i] = needed
            && self.cg.hiers[*i].v2
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            let dir = File::options()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(self.dir(*i))
                .ok()?;
            return Some(Entry {
                dir: Some(OwnedFd::from(dir)),
                procs: Vec::new(),
            });
        }
        let procs = needed
            .iter()
            .map(|&i| {
                File::options()
                    .write(true)
                    .open(self.dir(i).join("cgroup.procs"))
                    .ok()
                    .map(OwnedFd::from)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Entry { dir: None, procs })
    }

    fn write_limits(&self, l: &Limits) -> Result<(), String> {
        let c = &self.cg;
        let (mem, cpu, pids) = (self.dir(c.memory), self.dir(c.cpu), self.dir(c.pids));
        if c.hiers[c.memory].v2 {
            let v = l.memory_bytes.map_or("max".into(), |b| b.to_string());
            write(&mem.join("memory.max"), &v)?;
            // A hard limit: past it the OOM killer, not swap.
            if mem.join("memory.swap.max").exists() {
                let swap = if l.memory_bytes.is_some() { "0" } else { "max" };
                write(&mem.join("memory.swap.max"), swap)?;
            }
        } else {
            let v = l.memory_bytes.map_or("-1".into(), |b| b.to_string());
            write(&mem.join("memory.limit_in_bytes"), &v)?;
        }
        let quota = l
            .cpu_millis
            .map(|m| (u64::from(m) * CPU_PERIOD_US / 1000).max(1000));
        let weight = u64::from(l.cpu_weight.unwrap_or(100));
        if c.hiers[c.cpu].v2 {
            let max = quota.map_or("max".into(), |q| q.to_string());
            write(&cpu.join("cpu.max"), &format!("{max} {CPU_PERIOD_US}"))?;
            write(&cpu.join("cpu.weight"), &weight.to_string())?;
        } else {
            write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            let q = quota.map_or("-1".into(), |q| q.to_string());
            write(&cpu.join("cpu.cfs_quota_us"), &q)?;
            // systemd's mapping of a weight to v1 shares: 100 is 1024.
            write(
                &cpu.join("cpu.shares"),
                &(weight * 1024 / 100).max(2).to_string(),
            )?;
        }
        let v = l.pids.map_or("max".into(), |p| p.to_string());
        write(&pids.join("pids.max"), &v)
    }

    /// Every process in the cgroup (and any cgroup below it).
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        collect_pids(&self.dir(self.cg.member), &mut out);
        out
    }

    /// Sends `signal` to every process of the instance.
    pub fn signal(&self, signal: Signal) -> Result<(), String> {
        for pid in self.pids() {
            match kill(Pid::from_raw(pid), signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => return Err(format!("cannot send {} to pid {pid}: {e}", signal.as_str())),
            }
        }
        Ok(())
    }

    /// Kills every process of the instance: `cgroup.kill` where the kernel has it,
    /// otherwise freeze (so nothing forks meanwhile), SIGKILL each, thaw.
    pub fn kill(&self) -> Result<(), String> {
        let dir = self.dir(self.cg.member);
        if !dir.exists() {
            return Ok(());
        }
        if self.cg.kill_file {
            // Nothing to kill: no kill either (see `fresh`).
            if self.is_empty() {
                return Ok(());
            }
            self.fresh.store(false, Ordering::Relaxed);
            return write(&dir.join("cgroup.kill"), "1");
        }
        let freezer = self.freezer();
        if let Some((file, frozen, thawed)) = &freezer {
            write(file, frozen)?;
            let deadline = Instant::now() + FREEZE_WAIT;
            while !self.frozen() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let result = self.signal(Signal::SIGKILL);
            write(file, thawed)?;
            return result;
        }
        self.signal(Signal::SIGKILL)
    }

    /// The freeze file with its frozen and thawed values.
    fn freezer(&self) -> Option<(PathBuf, &'static str, &'static str)> {
        let c = &self.cg;
        if c.hiers[c.member].v2 {
            return Some((self.dir(c.member).join("cgroup.freeze"), "1", "0"));
        }
        c.freezer
            .map(|i| (self.dir(i).join("freezer.state"), "FROZEN", "THAWED"))
    }

    fn frozen(&self) -> bool {
        let c = &self.cg;
        if c.hiers[c.member].v2 {
            return usage::keyed(&self.dir(c.member).join("cgroup.events"), "frozen") == Some(1);
        }
        c.freezer.is_none_or(|i| {
            std::fs::read_to_string(self.dir(i).join("freezer.state"))
                .is_ok_and(|s| s.trim() == "FROZEN")
        })
    }

    /// Whether no process of the instance is left (zombies do not count).
    pub fn is_empty(&self) -> bool {
        let c = &self.cg;
        let dir = self.dir(c.member);
        if c.hiers[c.member].v2 {
            return usage::keyed(&dir.join("cgroup.events"), "populated").is_none_or(|p| p == 0);
        }
        self.pids().is_empty()
    }

    /// Whether the cgroup exists.
    pub fn exists(&self) -> bool {
        self.dir(self.cg.member).is_dir()
    }

    /// Removes the cgroup from every hierarchy, and its server's directory once no other
    /// ordinal is left there. An error (a process is still in it) leaves it.
    pub fn remove(&self) {
        for i in self.used() {
            let dir = self.dir(i);
            let _ = std::fs::remove_dir(&dir);
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }

    /// OOM kills in the cgroup since it was created.
    pub fn oom_kills(&self) -> u64 {
        let dir = self.dir(self.cg.memory);
        if self.cg.hiers[self.cg.memory].v2 {
            usage::keyed(&dir.join("memory.events"), "oom_kill").unwrap_or(0)
        } else {
            usage::keyed(&dir.join("memory.oom_control"), "oom_kill").unwrap_or(0)
        }
    }

    /// What the instance uses now.
    pub fn usage(&self) -> Usage {
        let c = &self.cg;
        usage::read(
            (&self.dir(c.cpuacct), c.hiers[c.cpuacct].v2),
            (&self.dir(c.cpu), c.hiers[c.cpu].v2),
            (&self.dir(c.memory), c.hiers[c.memory].v2),
            &self.dir(c.pids),
            &self.dir(c.member),
        )
    }
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&e.path(), out);
        }
    }
}
