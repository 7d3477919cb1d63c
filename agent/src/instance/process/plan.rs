//! What a spawn needs: the plan of a process, built by the runner from the spec, and
//! the user a service runs as.

use std::ffi::CString;
use std::path::PathBuf;

/// What `spawn` needs; built by the runner from the spec.
pub struct SpawnPlan {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// The user to run as; None: the agent's.
    pub user: Option<ServiceUser>,
    /// The instance's v2 cgroup directory: the child is created in it (clone3 with
    /// CLONE_INTO_CGROUP), or, on a kernel without that, writes itself into its
    /// `cgroup.procs` before it execs.
    pub cgroup_dir: Option<std::os::fd::OwnedFd>,
    /// The `cgroup.procs` files of the instance's cgroups, open for writing: the child
    /// enters them before it execs (v1 hierarchies). Both empty: no cgroup (the process
    /// group is the instance).
    pub cgroup_procs: Vec<std::os::fd::OwnedFd>,
}

/// Who a service runs as: the user's uid, primary gid and every group it belongs to
/// (as `initgroups(3)` gives a login, and systemd's `User=` a service).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl ServiceUser {
    /// Looks the user up by name.
    pub fn lookup(name: &str) -> Result<(ServiceUser, nix::unistd::User), String> {
        let u = nix::unistd::User::from_name(name)
            .map_err(|e| format!("cannot look up user {name:?}: {e}"))?
            .ok_or_else(|| format!("unknown user {name:?}"))?;
        let cname =
            CString::new(name).map_err(|_| format!("user name {name:?} contains a NUL byte"))?;
        let groups = nix::unistd::getgrouplist(&cname, u.gid)
            .map_err(|e| format!("cannot list the groups of user {name:?}: {e}"))?;
        Ok((
            ServiceUser {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                groups: groups.iter().map(|g| g.as_raw()).collect(),
            },
            u,
        ))
    }
}
