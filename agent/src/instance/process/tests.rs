//! Spawning into a cgroup on this host's real cgroup2 mount: created in it by clone3
//! (CLONE_INTO_CGROUP), as another user, a failure reported with its step, and the
//! fallback through `cgroup.procs` for kernels without clone3. Skipped, saying so, where
//! no cgroup2 hierarchy is mounted or it is not writable.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{ServiceUser, SpawnPlan, clone3, spawn};

/// A scratch cgroup2 directory, removed on drop (its processes killed first).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn scratch() -> Option<Scratch> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let found = crate::cgroup::layout::hierarchies(
        &read("/proc/self/mountinfo"),
        &read("/proc/self/cgroup"),
    );
    let v2 = found.into_iter().find(|m| m.is_v2())?;
    let dir = v2
        .own
        .join(format!("corral-unit-clone3-{}", std::process::id()));
    if std::fs::create_dir(&dir).is_err() {
        eprintln!("SKIPPED: cannot create a cgroup under {}", v2.own.display());
        return None;
    }
    Some(Scratch(dir))
}

fn open_dir(dir: &Path) -> OwnedFd {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .expect("cgroup dir");
    OwnedFd::from(f)
}

fn plan(dir: &Path, logs: &Path, program: &str, args: &[&str]) -> SpawnPlan {
    SpawnPlan {
        program: PathBuf::from(program),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: PathBuf::from("/"),
        stdout: logs.join("stdout.log"),
        stderr: logs.join("stderr.log"),
        user: None,
        cgroup_dir: Some(open_dir(dir)),
        cgroup_procs: Vec::new(),
    }
}

fn members(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn kill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[tokio::test]
async fn created_in_the_cgroup_as_a_user_failures_named_and_the_fallback() {
    let Some(cg) = scratch() else { return };
    let logs = tempfile::tempdir().expect("tempdir");
    // clone3: in the cgroup from the start, leader of a session of its own.
    let mut p = spawn(&plan(&cg.0, logs.path(), "sleep", &["1000"])).expect("spawn");
    assert!(members(&cg.0).contains(&p.pid), "{:?}", members(&cg.0));
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(p.pid as i32))).expect("sid");
    assert_eq!(sid.as_raw() as u32, p.pid);
    kill(p.pid);
    assert_eq!(p.wait().await.description, "signal SIGKILL");
    // A failed step is reported, not a process that never ran.
    let mut bad = plan(&cg.0, logs.path(), "sleep", &["1000"]);
    bad.cwd = PathBuf::from("/nonexistent-corral-dir");
    let e = spawn(&bad)
        .err()
        .expect("a missing working directory fails");
    assert!(
        e.to_string()
            .contains("cannot enter /nonexistent-corral-dir"),
        "{e}"
    );
    // As another user (root only: setgroups, setgid, setuid in the child).
    if nix::unistd::geteuid().is_root() {
        let mut as_nobody = plan(&cg.0, logs.path(), "sh", &["-c", "id -u; id -g"]);
        as_nobody.user = Some(ServiceUser {
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        });
        let mut p = spawn(&as_nobody).expect("spawn as nobody");
        let out = logs.path().join("stdout.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&out).is_ok_and(|t| t.lines().count() >= 2) {
            assert!(Instant::now() < deadline, "no output from id");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            std::fs::read_to_string(&out).unwrap_or_default(),
            "65534\n65534\n"
        );
        assert_eq!(p.wait().await.description, "code 0");
        let _ = std::fs::remove_file(&out);
    }
    // A kernel without CLONE_INTO_CGROUP: the child writes itself into cgroup.procs.
    clone3::pretend_missing(true);
    let p = spawn(&plan(&cg.0, logs.path(), "sleep", &["1000"]));
    clone3::pretend_missing(false);
    let mut p = p.expect("spawn through cgroup.procs");
    assert!(members(&cg.0).contains(&p.pid), "{:?}", members(&cg.0));
    kill(p.pid);
    assert_eq!(p.wait().await.description, "signal SIGKILL");
}
