//! Where this host's cgroup hierarchies are mounted and where the agent sits in each: read
//! from `/proc/self/mountinfo` and `/proc/self/cgroup`. Pure functions over their text, so
//! every layout (pure v2, hybrid, pure v1, a container's bind mounts) is table-tested.

use std::path::{Path, PathBuf};

/// The v1 controllers the agent uses: limits (memory, cpu, pids), CPU seconds (cpuacct)
/// and the freezer for a kill without `cgroup.kill`.
pub const V1_CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];

/// One mounted hierarchy and the agent's own cgroup in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mounted {
    /// None: the cgroup2 (unified) hierarchy; else the v1 controllers it carries.
    pub controllers: Option<Vec<String>>,
    /// The directory of the agent's own cgroup in it.
    pub own: PathBuf,
}

impl Mounted {
    pub fn is_v2(&self) -> bool {
        self.controllers.is_none()
    }

    pub fn has(&self, controller: &str) -> bool {
        self.controllers
            .as_ref()
            .is_some_and(|c| c.iter().any(|x| x == controller))
    }
}

/// One line of mountinfo that is a cgroup file system.
struct Mount<'a> {
    root: &'a str,
    point: &'a str,
    v2: bool,
    options: Vec<&'a str>,
}

fn mounts(mountinfo: &str) -> Vec<Mount<'_>> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let options = right.next().unwrap_or("").split(',').collect();
            let (root, point) = (*fields.get(3)?, *fields.get(4)?);
            match fstype {
                "cgroup2" => Some(Mount {
                    root,
                    point,
                    v2: true,
                    options,
                }),
                "cgroup" => Some(Mount {
                    root,
                    point,
                    v2: false,
                    options,
                }),
                _ => None,
            }
        })
        .collect()
}

/// mountinfo escapes spaces and such as octal (`\040`).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let n = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `path` (as `/proc/self/cgroup` names it) under a mount whose
/// root is `root`: None when the cgroup is outside what is mounted.
fn dir_of(point: &str, root: &str, path: &str) -> Option<PathBuf> {
    let rel = if root == "/" {
        path
    } else {
        let rest = path.strip_prefix(root)?;
        if !rest.is_empty() && !rest.starts_with('/') {
            return None;
        }
        rest
    };
    let mut dir = PathBuf::from(unescape(point));
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
    }
    Some(dir)
}

/// The hierarchies the agent can use: the cgroup2 one (if mounted) and each v1 hierarchy
/// carrying one of [`V1_CONTROLLERS`], with the agent's own cgroup in each.
pub fn hierarchies(mountinfo: &str, self_cgroup: &str) -> Vec<Mounted> {
    let mut v1_paths: Vec<(Vec<&str>, &str)> = Vec::new();
    let mut v2_path = None;
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            v2_path = Some(path);
        } else {
            v1_paths.push((ctrls.split(',').collect(), path));
        }
    }
    let mut out: Vec<Mounted> = Vec::new();
    for m in mounts(mountinfo) {
        if m.v2 {
            if let Some(own) = v2_path.and_then(|p| dir_of(m.point, m.root, p))
                && !out.iter().any(|o| o.is_v2())
            {
                out.push(Mounted {
                    controllers: None,
                    own,
                });
            }
            continue;
        }
        let ctrls: Vec<&str> = m
            .options
            .iter()
            .copied()
            .filter(|o| V1_CONTROLLERS.contains(o))
            .collect();
        if ctrls.is_empty() || out.iter().any(|o| ctrls.iter().any(|c| o.has(c))) {
            continue;
        }
        let path = v1_paths
            .iter()
            .find(|(set, _)| ctrls.iter().all(|c| set.contains(c)))
            .map(|(_, p)| *p);
        if let Some(own) = path.and_then(|p| dir_of(m.point, m.root, p)) {
            out.push(Mounted {
                controllers: Some(ctrls.iter().map(|c| c.to_string()).collect()),
                own,
            });
        }
    }
    out
}

/// The agent's own cgroup, not the leaf a previous agent of this host moved itself into
/// (`OWN/SUBTREE/NODE/.agent`): an agent started from that leaf builds its subtree beside
/// it, not inside it.
pub fn outside_agent_leaf(own: &Path, subtree: &str) -> PathBuf {
    let parts: Vec<_> = own.components().collect();
    let n = parts.len();
    if n >= 3
        && parts[n - 1].as_os_str() == super::AGENT_LEAF
        && parts[n - 3].as_os_str() == subtree
    {
        return parts[..n - 3].iter().collect();
    }
    own.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
33 30 0:29 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/freezer rw,nosuid - cgroup cgroup rw,freezer
37 30 0:33 / /sys/fs/cgroup/blkio rw,nosuid - cgroup cgroup rw,blkio
38 30 0:34 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
";
    const HYBRID_SELF: &str = "\
9:name=systemd:/system.slice/corral-agent.service
8:pids:/system.slice/corral-agent.service
6:freezer:/
4:memory:/system.slice/corral-agent.service
2:cpu,cpuacct:/system.slice/corral-agent.service
7:blkio:/system.slice
0::/system.slice/corral-agent.service
";

    #[test]
    fn a_hybrid_host() {
        let h = hierarchies(HYBRID_MOUNTS, HYBRID_SELF);
        let svc = "system.slice/corral-agent.service";
        assert_eq!(
            h,
            vec![
                Mounted {
                    controllers: None,
                    own: Path::new("/sys/fs/cgroup/unified").join(svc),
                },
                Mounted {
                    controllers: Some(vec!["memory".into()]),
                    own: Path::new("/sys/fs/cgroup/memory").join(svc),
                },
                Mounted {
                    controllers: Some(vec!["cpu".into(), "cpuacct".into()]),
                    own: Path::new("/sys/fs/cgroup/cpu,cpuacct").join(svc),
                },
                Mounted {
                    controllers: Some(vec!["pids".into()]),
                    own: Path::new("/sys/fs/cgroup/pids").join(svc),
                },
                Mounted {
                    controllers: Some(vec!["freezer".into()]),
                    own: PathBuf::from("/sys/fs/cgroup/freezer"),
                },
            ]
        );
    }

    #[test]
    fn pure_v2_and_a_container_view() {
        let mounts = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        let h = hierarchies(mounts, "0::/user.slice/session-1.scope\n");
        assert_eq!(
            h,
            vec![Mounted {
                controllers: None,
                own: PathBuf::from("/sys/fs/cgroup/user.slice/session-1.scope"),
            }]
        );
        // A container sees its own cgroup as the mount's root.
        let mounts = "29 23 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let h = hierarchies(mounts, "0::/docker/abc/inner\n");
        assert_eq!(h[0].own, PathBuf::from("/sys/fs/cgroup/inner"));
        // A cgroup outside what is mounted cannot be used.
        assert!(hierarchies(mounts, "0::/elsewhere\n").is_empty());
        // No cgroup file system at all.
        assert!(hierarchies("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n", "0::/\n").is_empty());
    }

    #[test]
    fn the_leaf_of_a_previous_agent_is_left() {
        let own = Path::new("/sys/fs/cgroup/unified/x/corral/node-a/.agent");
        assert_eq!(
            outside_agent_leaf(own, "corral"),
            PathBuf::from("/sys/fs/cgroup/unified/x")
        );
        let other = Path::new("/sys/fs/cgroup/unified/x/y");
        assert_eq!(outside_agent_leaf(other, "corral"), other.to_path_buf());
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
