//! One cgroup per instance: limits (memory, CPU, pids), a stop that kills every process
//! of the instance (double-forked daemons included), OOM kills named as such, and usage.
//!
//! The agent's subtree is `OWN/SUBTREE/NODE` in every hierarchy it uses, where `OWN` is
//! the agent's own cgroup there and `SUBTREE` is `corral` (`--cgroup`); an instance is
//! `OWN/SUBTREE/NODE/APP.SERVER/ORDINAL`, so agents of several nodes on one host never
//! share a cgroup. On cgroup v2 the agent moves itself into the leaf `.../NODE/.agent`
//! (a cgroup with controllers enabled for its children may hold no process: the v2
//! no-internal-processes rule).
//!
//! Layouts: pure v2 (one `cgroup2` mount: limits, kill and membership there); hybrid (v1
//! controllers for the limits, the `cgroup2` mount for membership and `cgroup.kill`);
//! pure v1 (the freezer hierarchy for membership, freeze-then-kill). Each controller is
//! taken from the v1 hierarchy that carries it, else from v2.
//!
//! Why not the `cgroups-rs` crate: it picks one hierarchy version per host (on a hybrid
//! host it sees v1 only, so no `cgroup.kill`), assumes `/sys/fs/cgroup/<controller>`
//! paths rather than the agent's own cgroup from `/proc/self/cgroup`, and its
//! `add_task` is not something a child may call between clone and exec. What the agent
//! needs is a handful of files, written here behind one module: [`layout`] finds the
//! hierarchies, [`instance`] is one instance's cgroup, [`usage`] reads its figures.

pub mod instance;
pub mod layout;
pub mod usage;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use instance::{Entry, InstanceCgroup};
pub use usage::Usage;

/// The leaf the agent moves itself into on cgroup v2.
pub const AGENT_LEAF: &str = ".agent";

/// The default name of the agent's subtree (`--cgroup`); `off` turns cgroups off.
pub const DEFAULT_SUBTREE: &str = "corral";

/// An instance's limits, as its spec's `[resources]` gives them; None: no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// Thousandths of a core.
    pub cpu_millis: Option<u32>,
    /// 1-10000, 100 the default share.
    pub cpu_weight: Option<u32>,
    pub pids: Option<u32>,
}

impl Limits {
    pub fn from_wire(r: Option<&corral_proto::v1::Resources>) -> Limits {
        let nz = |v: u64| (v != 0).then_some(v);
        let nz32 = |v: u32| (v != 0).then_some(v);
        r.map_or_else(Limits::default, |r| Limits {
            memory_bytes: nz(r.memory_bytes),
            cpu_millis: nz32(r.cpu_millis),
            cpu_weight: nz32(r.cpu_weight),
            pids: nz32(r.pids),
        })
    }

    pub fn any(&self) -> bool {
        *self != Limits::default()
    }
}

/// One hierarchy the agent uses.
#[derive(Clone, Debug)]
pub struct Hier {
    pub v2: bool,
    /// `OWN/SUBTREE/NODE`.
    pub base: PathBuf,
    /// v2 controllers to enable for instances (pure v2: memory, cpu, pids).
    pub enable: Vec<&'static str>,
}

/// The agent's cgroups: which hierarchy serves which purpose, found once at start.
#[derive(Debug)]
pub struct Cgroups {
    pub hiers: Vec<Hier>,
    pub memory: usize,
    pub cpu: usize,
    /// CPU seconds: v1 cpuacct, else v2 `cpu.stat`.
    pub cpuacct: usize,
    pub pids: usize,
    /// Membership, signals, kill: v2 if there is one, else the v1 freezer.
    pub member: usize,
    /// The v1 freezer, when membership is not on v2.
    pub freezer: Option<usize>,
    /// The member hierarchy has `cgroup.kill` (Linux 5.14+).
    pub kill_file: bool,
    /// What was found, for the log and `node show`.
    pub summary: String,
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value)
        .map_err(|e| format!("cannot write {value:?} to {}: {e}", path.display()))
}

fn mkdir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| {
        format!(
            "cannot create the cgroup {}: {e} (under systemd the agent's unit needs \
             Delegate=yes; in a container the cgroup file system must be writable)",
            path.display()
        )
    })
}

/// The index of the hierarchy whose agent cgroup is `own`, added when new.
fn index(hiers: &mut Vec<Hier>, own: &Path, v2: bool, subtree: &str, node: &str) -> usize {
    let own = layout::outside_agent_leaf(own, subtree);
    let base = own.join(subtree).join(node);
    if let Some(i) = hiers.iter().position(|h| h.base == base) {
        return i;
    }
    hiers.push(Hier {
        v2,
        base,
        enable: Vec::new(),
    });
    hiers.len() - 1
}

impl Cgroups {
    /// Finds the hierarchies, creates the agent's subtree and moves the agent into its
    /// leaf on v2. An error says why cgroups cannot be used on this host.
    pub fn detect(subtree: &str, node: &str) -> Result<Cgroups, String> {
        if subtree == "off" {
            return Err("cgroups are turned off on this node (--cgroup off)".into());
        }
        let read =
            |p: &str| std::fs::read_to_string(p).map_err(|e| format!("cannot read {p}: {e}"));
        let found =
            layout::hierarchies(&read("/proc/self/mountinfo")?, &read("/proc/self/cgroup")?);
        if found.is_empty() {
            return Err("no cgroup file system is mounted that holds the agent".into());
        }
        let mut hiers: Vec<Hier> = Vec::new();
        let v2 = found.iter().find(|m| m.is_v2());
        let v2_ctrls = v2.map_or_else(String::new, |m| {
            let own = layout::outside_agent_leaf(&m.own, subtree);
            std::fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default()
        });
        let mut role = |name: &'static str, need_v2: bool| -> Result<usize, String> {
            if let Some(m) = found.iter().find(|m| m.has(name)) {
                return Ok(index(&mut hiers, &m.own, false, subtree, node));
            }
            match v2 {
                Some(m) if !need_v2 || v2_ctrls.split_whitespace().any(|c| c == name) => {
                    let i = index(&mut hiers, &m.own, true, subtree, node);
                    if need_v2 && !hiers[i].enable.contains(&name) {
                        hiers[i].enable.push(name);
                    }
                    Ok(i)
                }
                _ => Err(format!(
                    "the {name} controller is not available: neither mounted as cgroup v1 nor \
                     offered by the cgroup2 hierarchy{}",
                    v2.map_or(String::new(), |m| format!(
                        " ({})",
                        m.own.join("cgroup.controllers").display()
                    ))
                )),
            }
        };
        let memory = role("memory", true)?;
        let cpu = role("cpu", true)?;
        let pids = role("pids", true)?;
        let cpuacct = role("cpuacct", false)?;
        // The v1 freezer only serves a kill where membership is not on v2 (v2 has
        // cgroup.freeze and, on Linux 5.14+, cgroup.kill).
        let freezer = found
            .iter()
            .find(|m| m.has("freezer") && v2.is_none())
            .map(|m| index(&mut hiers, &m.own, false, subtree, node));
        let member = match v2 {
            Some(m) => index(&mut hiers, &m.own, true, subtree, node),
            None => freezer.ok_or(
                "neither a cgroup2 hierarchy nor the v1 freezer is mounted: a stop could not \
                 kill every process",
            )?,
        };
        for h in &hiers {
            mkdir(&h.base)?;
        }
        if hiers[member].v2 {
            // The no-internal-processes rule: the agent lives in a leaf of its own.
            let leaf = hiers[member].base.join(AGENT_LEAF);
            mkdir(&leaf)?;
            write(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
        }
        for h in &hiers {
            if h.enable.is_empty() {
                continue;
            }
            let own = h.base.parent().and_then(Path::parent).unwrap_or(&h.base);
            let on: Vec<String> = h.enable.iter().map(|c| format!("+{c}")).collect();
            for dir in [own.to_path_buf(), own.join(subtree), h.base.clone()] {
                write(&dir.join("cgroup.subtree_control"), &on.join(" ")).map_err(|e| {
                    format!("{e}: a cgroup that holds processes cannot enable controllers for its children (cgroup v2); start the agent in a cgroup of its own (systemd: Delegate=yes)")
                })?;
            }
        }
        let kill_file = hiers[member].v2
            && hiers[member]
                .base
                .join(AGENT_LEAF)
                .join("cgroup.kill")
                .exists();
        let describe = |i: usize| {
            let h = &hiers[i];
            format!("{} ({})", h.base.display(), if h.v2 { "v2" } else { "v1" })
        };
        let summary = format!(
            "memory {}, cpu {}, pids {}, processes {}{}",
            describe(memory),
            describe(cpu),
            describe(pids),
            describe(member),
            if kill_file {
                " with cgroup.kill"
            } else {
                ", killed by freeze then SIGKILL"
            }
        );
        Ok(Cgroups {
            hiers,
            memory,
            cpu,
            cpuacct,
            pids,
            member,
            freezer,
            kill_file,
            summary,
        })
    }

    /// The cgroup of instance `server` (`app.server`) number `ordinal` (not created yet).
    pub fn instance(self: &std::sync::Arc<Self>, server: &str, ordinal: u32) -> InstanceCgroup {
        InstanceCgroup::new(self.clone(), server, ordinal)
    }

    /// The instances that have a cgroup under the agent's subtree: (`app.server`, ordinal).
    pub fn existing(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        let Ok(servers) = std::fs::read_dir(&self.hiers[self.member].base) else {
            return out;
        };
        for s in servers.flatten() {
            let name = s.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !s.path().is_dir() {
                continue;
            }
            for o in std::fs::read_dir(s.path()).into_iter().flatten().flatten() {
                if let Ok(n) = o.file_name().to_string_lossy().parse::<u32>() {
                    out.push((name.clone(), n));
                }
            }
        }
        out
    }

    /// What every instance with a cgroup uses: (`app.server`, ordinal, usage, OOM kills).
    pub fn usage_all(self: &std::sync::Arc<Self>) -> Vec<(String, u32, Usage, u64)> {
        self.existing()
            .into_iter()
            .map(|(server, ordinal)| {
                let cg = self.instance(&server, ordinal);
                let (usage, ooms) = (cg.usage(), cg.oom_kills());
                (server, ordinal, usage, ooms)
            })
            .collect()
    }
}
