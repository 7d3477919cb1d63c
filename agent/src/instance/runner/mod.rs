//! The runner of one instance: a task that owns the instance's state machines and its
//! process, takes commands from the reconciler, and reports every change to the board.
//!
//! This file is the task itself: its fields, its event loop (what can wake it) and the
//! reconciler's commands. The rest is split by concern, each an `impl Runner` block:
//!
//! * `desired.rs` — the first desired state (adopt what a previous agent left running,
//!   or start) and each new one (new spec, start, stop, restart request);
//! * `lifecycle.rs` — runs events through the lifecycle machine ([`state`](super::state))
//!   and performs its actions: signals, timers, exits;
//! * `release.rs` — performs the install machine's actions ([`install`](super::install)):
//!   which release starts, downloads, switches;
//! * `launch.rs` — the plan of a process (program, environment, user, directory), the
//!   port checks, the spawn;
//! * `configs.rs` — writing `conf/` files and telling the process (`on_change`);
//! * `checker.rs` — the health checker while the instance runs, and what its results
//!   mean;
//! * `report.rs` — status and events for the board.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::health::{self, Health};
use super::install::Install;
use super::memory::{self, Memory};
use super::process::{ExitInfo, Proc};
use super::state::{Event, Machine, Policy, State};
use super::{Desired, spec_hash};
use crate::package::install::{InstallError, Installer, Progress};
use crate::status::Board;

mod checker;
mod configs;
mod desired;
mod launch;
mod lifecycle;
mod release;
mod report;

/// How often a stopping runner checks whether its process group is gone.
const GROUP_POLL: Duration = Duration::from_millis(20);

pub enum Command {
    Update(Box<Desired>),
    /// The registry sent a desired state this agent cannot read for the instance: it
    /// keeps what it has and reports why.
    Refused(String),
    /// Stop the instance and forget it (undeployed).
    Remove,
    /// The agent is exiting: stop the instance first when `stop` is set, else leave it
    /// running for the next agent to adopt.
    Shutdown {
        stop: bool,
    },
}

/// What every runner of this agent shares.
pub struct Shared {
    pub node: String,
    pub node_ip: String,
    pub instances_dir: PathBuf,
    pub board: Arc<Board>,
    /// Whether services may run as root.
    pub allow_root: bool,
    pub installer: Installer,
    /// The agent's cgroups; None: not usable here, for the reason in `cgroups_error`.
    pub cgroups: Option<Arc<crate::cgroup::Cgroups>>,
    pub cgroups_error: String,
}

/// The task downloading and unpacking a release (what it is for is in [`Install`]).
struct Download {
    handle: JoinHandle<Result<PathBuf, InstallError>>,
    progress: watch::Receiver<Progress>,
}

pub struct Runner {
    name: String,
    app: String,
    server: String,
    shared: Arc<Shared>,
    dir: PathBuf,
    desired: Desired,
    hash: String,
    policy: Policy,
    machine: Machine,
    proc: Option<Proc>,
    /// The process group of the last process started: it outlives the main process.
    group: Option<u32>,
    /// The instance's cgroup (None without cgroups): what a stop kills and waits for.
    cgroup: Option<crate::cgroup::InstanceCgroup>,
    /// OOM kills in the cgroup counted so far (to tell whether an exit was one).
    oom_seen: u64,
    /// The limits last written to the cgroup (None: not written by this runner).
    limits_written: Option<crate::cgroup::Limits>,
    /// Why the last process ended, when the OOM killer ended it: kept as the last error
    /// across the restart that follows.
    oom_note: String,
    memory: Memory,
    last_exit: String,
    last_error: String,
    started_at_ms: i64,
    retry_at: Option<Instant>,
    stop_deadline: Option<Instant>,
    awaiting_group: bool,
    /// Why the next reported transition happens.
    reason: String,
    /// Set by Remove / Shutdown{stop}: end the task once stopped.
    finishing: Option<Finish>,
    /// The install machine: the install under way, its progress, a switch pending.
    install: Install,
    /// The task performing the install under way.
    download: Option<Download>,
    health: Health,
    /// The running health checker and its results.
    checker: Option<(JoinHandle<()>, health::Results)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Finish {
    Remove,
    Shutdown,
}

/// What woke the runner.
enum Wake {
    Command(Option<Command>),
    Exited(ExitInfo),
    Retry,
    StopTimeout,
    GroupCheck,
    Installed(Result<PathBuf, InstallError>),
    InstallProgress,
    Health(Result<(), String>),
}

impl Runner {
    /// Starts the runner task of `app.server`; adopts its process if a previous agent
    /// left one running.
    pub fn spawn(
        shared: Arc<Shared>,
        app: String,
        server: String,
        desired: Desired,
    ) -> (mpsc::Sender<Command>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(8);
        let name = format!("{app}.{server}");
        let dir = shared.instances_dir.join(&name);
        let hash = spec_hash(&desired.spec);
        let cgroup = shared
            .cgroups
            .as_ref()
            .map(|cg| cg.instance(&name, desired.ordinal));
        let runner = Runner {
            cgroup,
            oom_seen: 0,
            limits_written: None,
            oom_note: String::new(),
            policy: desired.policy,
            name,
            app,
            server,
            shared,
            dir,
            desired,
            hash,
            machine: Machine::new(State::Stopped),
            proc: None,
            group: None,
            memory: Memory::default(),
            last_exit: String::new(),
            last_error: String::new(),
            started_at_ms: 0,
            retry_at: None,
            stop_deadline: None,
            awaiting_group: false,
            reason: String::new(),
            finishing: None,
            install: Install::default(),
            download: None,
            health: Health::new(None),
            checker: None,
        };
        let task = tokio::spawn(runner.run(rx));
        (tx, task)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        self.begin();
        loop {
            if self.finished() {
                return;
            }
            self.sync_checker();
            let wake = self.wait(&mut rx).await;
            match wake {
                // The reconciler is gone: the agent is exiting; leave the process running.
                Wake::Command(None) => return,
                Wake::Command(Some(cmd)) => {
                    if self.command(cmd) {
                        return;
                    }
                }
                Wake::Exited(info) => self.exited(info),
                Wake::Retry => {
                    self.retry_at = None;
                    self.reason = "retrying".into();
                    self.apply(Event::RetryDue);
                }
                Wake::StopTimeout => {
                    self.stop_deadline = None;
                    self.reason = if self.cgroup.is_some() {
                        "stop timeout: every process of the cgroup killed"
                    } else {
                        "stop timeout: SIGKILL to the process group"
                    }
                    .into();
                    self.apply(Event::StopTimeout);
                }
                Wake::Installed(result) => self.installed(result),
                Wake::Health(result) => self.checked(result),
                Wake::InstallProgress => self.install_progressed(),
                Wake::GroupCheck => self.group_check(),
            }
        }
    }

    /// Waits for whatever comes first: a command, the process's exit, the install's
    /// end or progress, a health result, a timer.
    async fn wait(&mut self, rx: &mut mpsc::Receiver<Command>) -> Wake {
        let exit = async {
            match self.proc.as_mut() {
                Some(p) => p.wait().await,
                None => std::future::pending().await,
            }
        };
        let retry_at = self.retry_at;
        let stop_deadline = self.stop_deadline;
        let (installed, progressed) = match self.download.as_mut() {
            Some(t) => (futures_either(Some(&mut t.handle)), Some(&mut t.progress)),
            None => (futures_either(None), None),
        };
        let progressed = async {
            match progressed {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let checked = async {
            match self.checker.as_mut() {
                Some((_, rx)) => match rx.recv().await {
                    Some(r) => r,
                    None => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = rx.recv() => Wake::Command(cmd),
            result = checked => Wake::Health(result),
            info = exit => Wake::Exited(info),
            result = installed => Wake::Installed(result),
            () = progressed => Wake::InstallProgress,
            () = sleep_until(retry_at) => Wake::Retry,
            () = sleep_until(stop_deadline) => Wake::StopTimeout,
            () = tokio::time::sleep(GROUP_POLL), if self.awaiting_group => Wake::GroupCheck,
        }
    }

    /// Handles a command; true when the task should end now.
    fn command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Update(new) => {
                self.update(*new);
                self.maybe_prefetch();
                false
            }
            Command::Refused(why) => {
                self.last_error = why;
                self.publish(None);
                false
            }
            Command::Remove => {
                self.finishing = Some(Finish::Remove);
                self.reason = "undeployed".into();
                self.apply(Event::Stop);
                false
            }
            Command::Shutdown { stop: false } => true,
            Command::Shutdown { stop: true } => {
                self.finishing = Some(Finish::Shutdown);
                self.reason = "the agent is stopping its services".into();
                self.apply(Event::Stop);
                false
            }
        }
    }

    fn finished(&mut self) -> bool {
        let Some(finish) = self.finishing else {
            return false;
        };
        if matches!(
            self.machine.state,
            State::Stopping | State::Starting | State::Running
        ) {
            return false;
        }
        if let Some(cg) = &self.cgroup {
            cg.remove();
            self.limits_written = None;
        }
        if finish == Finish::Remove {
            memory::forget(&self.dir);
            self.shared.board.remove(&self.name);
            info!(instance = %self.name, "instance removed");
        }
        true
    }

    fn save(&self) {
        if let Err(e) = memory::store(&self.dir, &self.memory) {
            warn!(instance = %self.name, cause = %e, "cannot write the instance state file");
        }
    }
}

/// Awaits an install task if there is one; never resolves otherwise.
async fn futures_either(
    handle: Option<&mut JoinHandle<Result<PathBuf, InstallError>>>,
) -> Result<PathBuf, InstallError> {
    match handle {
        Some(h) => match h.await {
            Ok(r) => r,
            Err(e) => Err(InstallError::Download {
                version: String::new(),
                reason: format!("install task ended: {e}"),
            }),
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
