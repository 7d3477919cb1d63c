//! The supervisors the `restart` benchmark compares, each running `restart_child` in a
//! temp dir of its own: runit's `runsv` and supervisord here, Corral in [`crate::corral`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::procs::{Group, kill_if_running, reap_orphans, track_dir, untrack_dir};
use crate::records::{self, Start};

/// What every supervisor under test needs.
pub struct Setup {
    pub registry: PathBuf,
    pub agent: PathBuf,
    /// The supervised child, `restart_child`.
    pub child: PathBuf,
    /// Where the temp dirs go: the file system matters, since supervisors write state
    /// files around each restart.
    pub tmp: PathBuf,
}

/// One supervisor under test: its processes, its temp dir and the child's record file.
/// Dropping it kills the supervisor's process groups, then any child still running
/// (a supervisor may have put it in a group of its own).
pub struct Harness {
    pub name: String,
    /// The process whose memory is reported: runsv, supervisord, or the Corral agent.
    pub supervisor_pid: u32,
    /// The measured child's record file.
    pub record: PathBuf,
    /// The child binary: a pid from a record is only killed if it still runs this.
    child: PathBuf,
    groups: Vec<Group>,
    /// Every record file handed out, to find the children to kill at the end.
    records: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

impl Harness {
    pub fn new(name: &str, setup: &Setup) -> anyhow::Result<Harness> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("corral-bench-{name}-"))
            .tempdir_in(&setup.tmp)
            .with_context(|| format!("temp dir in {}", setup.tmp.display()))?;
        track_dir(dir.path());
        let record = dir.path().join("starts");
        Ok(Harness {
            name: name.to_string(),
            supervisor_pid: 0,
            record: record.clone(),
            child: setup.child.clone(),
            groups: Vec::new(),
            records: vec![record],
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `cmd` in a process group of its own, owned by this harness; its output
    /// goes to `DIR/LOG_NAME.log`.
    pub fn spawn(&mut self, cmd: &mut Command, log_name: &str) -> anyhow::Result<u32> {
        let group = Group::spawn(cmd, &self.dir().join(format!("{log_name}.log")))?;
        let pid = group.pid();
        self.groups.push(group);
        Ok(pid)
    }

    /// A new record file in this harness's dir, for one more child.
    pub fn new_record(&mut self, name: &str) -> PathBuf {
        let path = self.dir().join(format!("{name}.starts"));
        self.records.push(path.clone());
        path
    }

    /// Fails if any process of this harness has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for g in &mut self.groups {
            g.check_alive()?;
        }
        Ok(())
    }

    /// Waits for the `count`-th start in `record` and returns it.
    pub fn wait_for(
        &mut self,
        record: &Path,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Start> {
        let name = self.name.clone();
        records::wait_for(record, count, timeout, || self.check_alive())
            .with_context(|| format!("{name}: waiting for start {count}"))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.groups.clear();
        for record in &self.records {
            for start in records::read(record).unwrap_or_default() {
                kill_if_running(start.pid, &self.child);
            }
        }
        reap_orphans(Duration::from_secs(1));
        untrack_dir(self.dir.path());
    }
}

/// Writes an executable file.
fn write_executable(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// `runsv DIR` on a service dir of its own. With `shell`, `run` is the usual
/// `#!/bin/sh` script that execs the child (one more exec per restart, as runit is
/// normally set up); without, `run` is a symlink to the child itself, which finds its
/// record file in the environment: the same direct exec as the other supervisors.
pub fn start_runit(setup: &Setup, shell: bool) -> anyhow::Result<Harness> {
    let name = if shell { "runit-sh" } else { "runit" };
    let child = &setup.child;
    let mut h = Harness::new(name, setup)?;
    let service = h.dir().join("service");
    std::fs::create_dir(&service)?;
    let run = service.join("run");
    if shell {
        let script = format!(
            "#!/bin/sh\nexec {} {}\n",
            child.display(),
            h.record.display()
        );
        write_executable(&run, &script)?;
    } else {
        std::os::unix::fs::symlink(child, &run)?;
    }
    let runsv = crate::procs::on_path("runsv").context("runsv is not on PATH")?;
    let mut cmd = Command::new(runsv);
    cmd.arg(&service).env("CORRAL_BENCH_RECORD", &h.record);
    h.supervisor_pid = h.spawn(&mut cmd, "runsv")?;
    Ok(h)
}

/// `supervisord -n` with a minimal config: one program, restarted whenever it exits,
/// considered started after 1 s, never given up on.
pub fn start_supervisord(setup: &Setup) -> anyhow::Result<Harness> {
    let child = &setup.child;
    let mut h = Harness::new("supervisord", setup)?;
    let dir = h.dir().to_path_buf();
    let conf = dir.join("supervisord.conf");
    let text = format!(
        "[supervisord]\n\
         nodaemon=true\n\
         logfile={d}/supervisord.log\n\
         pidfile={d}/supervisord.pid\n\
         childlogdir={d}\n\
         \n\
         [program:child]\n\
         command={child} {record}\n\
         autorestart=true\n\
         startsecs=1\n\
         startretries=1000\n\
         stdout_logfile={d}/child.out\n\
         stderr_logfile={d}/child.err\n",
        d = dir.display(),
        child = child.display(),
        record = h.record.display(),
    );
    std::fs::write(&conf, text)?;
    let supervisord = crate::procs::on_path("supervisord").context("supervisord not on PATH")?;
    let mut cmd = Command::new(supervisord);
    cmd.arg("-n").arg("-c").arg(&conf);
    h.supervisor_pid = h.spawn(&mut cmd, "supervisord-out")?;
    Ok(h)
}
