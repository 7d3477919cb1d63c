//! The kill without `cgroup.kill` — freeze, SIGKILL every member, thaw — on this host's
//! real cgroup file systems: through cgroup2's `cgroup.freeze` and through the v1
//! freezer. (The agent uses `cgroup.kill` wherever the kernel has it, so the end-to-end
//! tests never take this path on a recent kernel.) Skipped, saying so, where the
//! hierarchy is not mounted or not writable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Cgroups, Hier};

/// Children and cgroup directories, killed and removed on drop, even when a test fails.
struct Scratch {
    children: Vec<Child>,
    root: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::write(self.root.join("cgroup.freeze"), "0");
        remove_tree(&self.root);
    }
}

fn remove_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::write(e.path().join("freezer.state"), "THAWED");
            remove_tree(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A scratch cgroup root under `mount` (which must be writable), or None.
fn scratch(mount: &str, what: &str) -> Option<Scratch> {
    let root = Path::new(mount).join(format!("corral-unit-{what}-{}", std::process::id()));
    if std::fs::create_dir_all(&root).is_err() {
        eprintln!("SKIPPED: cannot create a cgroup under {mount}");
        return None;
    }
    Some(Scratch {
        children: Vec::new(),
        root,
    })
}

fn freeze_then_kill(s: &mut Scratch, v2: bool) {
    let base = s.root.join("node-a");
    let cg = Arc::new(Cgroups {
        hiers: vec![Hier {
            v2,
            base: base.clone(),
            enable: Vec::new(),
        }],
        memory: 0,
        cpu: 0,
        cpuacct: 0,
        pids: 0,
        member: 0,
        freezer: (!v2).then_some(0),
        kill_file: false,
        summary: String::new(),
    });
    let instance = cg.instance("demo.x", 0);
    std::fs::create_dir_all(instance.path()).expect("instance cgroup");
    assert!(instance.is_empty());
    for _ in 0..5 {
        let child = Command::new("sleep").arg("1000").spawn().expect("sleep");
        std::fs::write(instance.path().join("cgroup.procs"), child.id().to_string())
            .expect("enter the cgroup");
        s.children.push(child);
    }
    assert_eq!(instance.pids().len(), 5);
    assert!(!instance.is_empty());
    instance.kill().expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    for c in &mut s.children {
        let status = loop {
            if let Some(status) = c.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "a member outlived the kill");
            std::thread::sleep(Duration::from_millis(5));
        };
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
    while !instance.is_empty() {
        assert!(Instant::now() < deadline, "the cgroup stays populated");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Thawed again: a new member runs.
    let frozen = if v2 {
        std::fs::read_to_string(instance.path().join("cgroup.freeze")).expect("freeze")
    } else {
        std::fs::read_to_string(instance.path().join("freezer.state")).expect("state")
    };
    assert!(
        frozen.trim() == "0" || frozen.trim() == "THAWED",
        "{frozen}"
    );
    instance.remove();
    assert!(!instance.exists());
}

#[test]
fn freeze_then_kill_on_cgroup2() {
    let mount = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|m| {
            Path::new(m).join("cgroup.freeze").exists()
                || Path::new(m).join("cgroup.subtree_control").exists()
        });
    let Some(mut s) = mount.and_then(|m| scratch(m, "v2")) else {
        eprintln!("SKIPPED: no writable cgroup2 mount");
        return;
    };
    freeze_then_kill(&mut s, true);
}

#[test]
fn freeze_then_kill_on_the_v1_freezer() {
    if !Path::new("/sys/fs/cgroup/freezer/freezer.state").exists()
        && !Path::new("/sys/fs/cgroup/freezer/tasks").exists()
    {
        eprintln!("SKIPPED: no v1 freezer hierarchy");
        return;
    }
    let Some(mut s) = scratch("/sys/fs/cgroup/freezer", "v1") else {
        return;
    };
    freeze_then_kill(&mut s, false);
}
