//! The runner of one instance: a task that owns the instance's state machine and its
//! process, takes commands from the reconciler, and reports every change to the board.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_proto::v1::{Install, InstanceEvent, InstanceStatus, PackageRef, ServerSpec};
use nix::sys::signal::Signal;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::fallback;
use super::health::{self, Health};
use super::memory::{self, Memory};
use super::process::{self, ExitInfo, Proc, ServiceUser, SpawnPlan};
use super::state::{Action, Event, Machine, Policy, RestartKind, State, step};
use super::{Desired, spec_hash};
use crate::package::install::{self, InstallError, Installer, Progress};
use crate::status::Board;

mod release;

/// How often a stopping runner checks whether its process group is gone.
const GROUP_POLL: Duration = Duration::from_millis(20);
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub enum Command {
    Update(Box<Desired>),
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
}

/// A release being downloaded and unpacked.
struct InstallTask {
    version: String,
    /// Start the process once it is ready (else it is a download ahead of time).
    for_spawn: bool,
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
    install: Option<InstallTask>,
    /// The last install's progress, reported with the status.
    install_progress: Progress,
    /// Restart (for this reason) once the install in progress succeeds.
    restart_when_installed: Option<String>,
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

fn policy_of(spec: &ServerSpec) -> Policy {
    let r = spec.restart.clone().unwrap_or_default();
    Policy {
        kind: match r.policy.as_str() {
            "never" => RestartKind::Never,
            "on-failure" => RestartKind::OnFailure,
            _ => RestartKind::Always,
        },
        min_uptime: Duration::from_millis(r.min_uptime_ms),
        initial_delay: Duration::from_millis(r.initial_delay_ms),
        max_delay: Duration::from_millis(r.max_delay_ms.max(1)),
        max_quick_failures: r.max_quick_failures.max(1),
    }
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
        let runner = Runner {
            policy: policy_of(&desired.spec),
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
            install: None,
            install_progress: Progress::default(),
            restart_when_installed: None,
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
            let wake = {
                let exit = async {
                    match self.proc.as_mut() {
                        Some(p) => p.wait().await,
                        None => std::future::pending().await,
                    }
                };
                let retry_at = self.retry_at;
                let stop_deadline = self.stop_deadline;
                let (installed, progressed) = match self.install.as_mut() {
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
            };
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
                    self.reason = "stop timeout: SIGKILL to the process group".into();
                    self.apply(Event::StopTimeout);
                }
                Wake::Installed(result) => self.installed(result),
                Wake::Health(result) => self.checked(result),
                Wake::InstallProgress => {
                    if let Some(t) = &self.install {
                        self.install_progress = t.progress.borrow().clone();
                        self.publish(None);
                    }
                }
                Wake::GroupCheck => {
                    if let Some(pgid) = self.group
                        && process::group_alive(pgid)
                    {
                        continue;
                    }
                    self.awaiting_group = false;
                    self.stop_deadline = None;
                    self.group = None;
                    self.apply(Event::GroupGone);
                }
            }
        }
    }

    /// Set-up: directories, then adopt what a previous agent left running, or start;
    /// then any download ahead of time.
    fn begin(&mut self) {
        self.adopt_or_start();
        self.maybe_prefetch();
    }

    fn adopt_or_start(&mut self) {
        for sub in ["conf", "logs", "data"] {
            if let Err(e) = std::fs::create_dir_all(self.dir.join(sub)) {
                self.last_error = format!("cannot create {}: {e}", self.dir.join(sub).display());
            }
        }
        let remembered = memory::load(&self.dir);
        self.memory = remembered.clone().unwrap_or(Memory {
            acted_counter: self.desired.restart_counter,
            ..Memory::default()
        });
        self.last_exit = self.memory.last_exit.clone();
        let boot = process::boot_id();
        if let Some(m) = remembered.filter(|m| m.pid != 0) {
            let adopted = (m.boot_id == boot)
                .then(|| process::adopt(m.pid, m.start_ticks, m.started_at_ms))
                .flatten();
            match adopted {
                Some(proc) => {
                    info!(instance = %self.name, pid = proc.pid, "adopted a running process");
                    self.started_at_ms = proc.started_at_ms;
                    self.group = Some(proc.pid);
                    self.proc = Some(proc);
                    self.machine = Machine::new(State::Running);
                    self.publish(None);
                    if m.spec_hash != self.hash && self.desired.running {
                        self.restart_for_new_spec("the spec changed while the agent was away");
                    } else if !self.desired.running {
                        self.reason = "stop requested".into();
                        self.apply(Event::Stop);
                    } else {
                        self.take_restart_request();
                    }
                    return;
                }
                None => {
                    // It ended while no agent watched it: report that, then apply policy.
                    self.machine = Machine::new(State::Running);
                    self.memory.pid = 0;
                    self.save();
                    if self.desired.running {
                        if m.spec_hash != self.hash {
                            // It ran an older spec: as after a crash while the new
                            // release installs, that runs again until the switch.
                            self.restart_when_installed =
                                Some("the spec changed while the agent was away".into());
                        }
                        self.reason = "the process ended while the agent was away".into();
                        self.last_exit = "unknown".into();
                        self.apply(Event::Exited {
                            failed: true,
                            uptime: self.policy.min_uptime,
                        });
                    } else {
                        self.machine = Machine::new(State::Stopped);
                        self.publish(None);
                    }
                    return;
                }
            }
        }
        self.publish(None);
        if self.desired.running {
            self.reason = "deployed".into();
            self.apply(Event::Start);
        }
    }

    /// Acts on a restart counter bumped since the last restart we did.
    fn take_restart_request(&mut self) {
        if self.desired.restart_counter > self.memory.acted_counter {
            self.memory.acted_counter = self.desired.restart_counter;
            self.save();
            if self.desired.running {
                self.reason = "restart requested".into();
                self.apply(Event::Restart);
            }
        }
    }

    /// A new desired state: restart for a new spec, start or stop, or restart once
    /// for a restart request.
    fn update(&mut self, new: Desired) {
        let new_hash = spec_hash(&new.spec);
        let configs_changed = new.configs != self.desired.configs;
        let spec_changed = new_hash != self.hash;
        let was_running = self.desired.running;
        self.policy = policy_of(&new.spec);
        self.desired = new;
        self.hash = new_hash;
        if spec_changed && self.desired.running {
            // The restart request, if any, is covered by this restart.
            self.memory.acted_counter = self.memory.acted_counter.max(self.desired.restart_counter);
            self.save();
            if self.machine.state == State::Stopping {
                self.restart_for_new_spec("the spec changed");
                // A stop under way ends in a start, whatever the install does.
                self.apply(Event::Start);
            } else if self.proc.is_some() && self.memory.spec_hash == self.hash {
                // The process runs this spec already (a revert to the release it kept
                // running): nothing to restart, no switch to wait for.
                self.restart_when_installed = None;
            } else if self.proc.is_some() {
                self.restart_for_new_spec("the spec changed");
            } else if self.machine.state == State::Starting {
                // A start waiting for an install: for the new spec's release now.
                self.start_again("the spec changed");
            } else {
                self.reason = "the spec changed".into();
                self.apply(Event::Start);
            }
            return;
        }
        if self.desired.running != was_running {
            self.reason = if self.desired.running {
                "start requested"
            } else {
                "stop requested"
            }
            .into();
            self.apply(if self.desired.running {
                Event::Start
            } else {
                Event::Stop
            });
        }
        if configs_changed {
            self.configs_changed();
        }
        self.take_restart_request();
    }

    /// New rendered configs: written at once; a running process is told per `on_change`.
    fn configs_changed(&mut self) {
        let changed = self.write_configs();
        if changed.is_empty() {
            return;
        }
        let Some(pid) = self.proc.as_ref().map(|p| p.pid) else {
            return;
        };
        let modes: Vec<&str> = self
            .desired
            .configs
            .iter()
            .filter(|c| changed.contains(&c.name))
            .map(|c| c.on_change.as_str())
            .collect();
        if modes.contains(&"restart") {
            self.reason = format!("config {} changed", changed.join(", "));
            self.apply(Event::Restart);
            return;
        }
        for mode in modes {
            let Some(sig) = mode.strip_prefix("signal:") else {
                continue;
            };
            let name = corral_common::signal::canonical(sig);
            match corral_common::signal::parse(sig) {
                Some(signal) => {
                    info!(instance = %self.name, signal = %name, "config changed; signalling the process");
                    if let Err(e) =
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
                    {
                        self.last_error = format!("cannot send {name} to pid {pid}: {e}");
                    }
                }
                None => self.last_error = format!("unknown signal {name:?} in on_change"),
            }
        }
    }

    /// Restarts a running process onto a new spec. When the new spec needs a release
    /// that is not on disk yet, it is installed first and the process keeps running
    /// meanwhile: a package that cannot be installed leaves the running release alone.
    fn restart_for_new_spec(&mut self, why: &str) {
        if let Some(pkg) = self.desired.spec.package.clone()
            && install::ready_release(&self.dir, &pkg).is_none()
        {
            info!(instance = %self.name, version = %pkg.version, "installing the new release before restarting");
            if self
                .install
                .as_ref()
                .is_none_or(|t| t.version != pkg.version)
            {
                self.start_install(pkg, false);
            }
            self.restart_when_installed = Some(why.to_string());
            return;
        }
        self.restart_when_installed = None;
        self.reason = why.into();
        self.apply(Event::Restart);
    }

    /// Runs the health checker exactly while the instance runs and has a check.
    fn sync_checker(&mut self) {
        let wanted = self.machine.state == State::Running && self.desired.spec.health.is_some();
        match (&self.checker, wanted) {
            (None, true) => {
                let started = self.proc.as_ref().map_or_else(Instant::now, |p| p.started);
                self.health
                    .restart(self.desired.spec.health.clone(), started);
                let (tx, rx) = mpsc::channel(4);
                let target = self.health_target();
                self.checker = Some((health::spawn(target, tx), rx));
            }
            (Some(_), false) => {
                if let Some((task, _)) = self.checker.take() {
                    task.abort();
                }
                self.health
                    .restart(self.desired.spec.health.clone(), Instant::now());
            }
            _ => {}
        }
    }

    fn health_target(&self) -> health::Target {
        let check = self.desired.spec.health.clone().unwrap_or_default();
        let spec = &self.desired.spec;
        let addr = if spec.external_address.is_empty() {
            let port = spec
                .adapters
                .iter()
                .find(|a| a.name == check.adapter)
                .or(spec.adapters.first())
                .map(|a| a.port as u16);
            port.map(|p| (self.shared.node_ip.clone(), p))
        } else {
            spec.external_address.rsplit_once(':').and_then(|(h, p)| {
                Some((
                    h.trim_start_matches('[').trim_end_matches(']').to_string(),
                    p.parse().ok()?,
                ))
            })
        };
        let exec = check.command.first().map(|program| {
            let base = self.dir.join("current");
            let base = if base.exists() {
                base
            } else {
                self.dir.clone()
            };
            let path = PathBuf::from(program);
            let program = if path.is_absolute() || !program.contains('/') {
                path
            } else {
                base.join(program)
            };
            let env = vec![
                ("PATH".to_string(), DEFAULT_PATH.to_string()),
                ("CORRAL_NODE_IP".to_string(), self.shared.node_ip.clone()),
                (
                    "CORRAL_INSTANCE_DIR".to_string(),
                    self.dir.display().to_string(),
                ),
            ];
            health::ExecCheck {
                program,
                args: check.command[1..].to_vec(),
                cwd: base,
                env,
            }
        });
        health::Target { check, addr, exec }
    }

    fn checked(&mut self, result: Result<(), String>) {
        let (verdict, cause) = (self.health.report(), self.health.report_error().to_string());
        let outcome = self.health.record(result, Instant::now());
        if outcome.changed {
            info!(instance = %self.name, health = self.health.report(), cause = %self.health.last_error, "health changed");
            let event = health::change_event(&self.health);
            self.shared.board.publish(
                &self.name,
                self.status(),
                Some(self.event("health", verdict, event)),
            );
        } else if self.health.report_error() != cause {
            self.publish(None);
        }
        if outcome.restart && self.machine.state == State::Running {
            self.reason = format!("health check failed too often: {}", self.health.last_error);
            self.apply(Event::Restart);
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
        if finish == Finish::Remove {
            memory::forget(&self.dir);
            self.shared.board.remove(&self.name);
            info!(instance = %self.name, "instance removed");
        }
        true
    }

    fn exited(&mut self, info: ExitInfo) {
        let uptime = self
            .proc
            .as_ref()
            .map_or(Duration::ZERO, |p| p.started.elapsed());
        let pid = self.proc.as_ref().map_or(0, |p| p.pid);
        self.proc = None;
        self.memory.pid = 0;
        self.memory.last_exit = info.description.clone();
        self.last_exit = info.description.clone();
        self.reason = format!(
            "pid {pid} exited ({}) after {:.3}s",
            info.description,
            uptime.as_secs_f64()
        );
        self.apply(Event::Exited {
            failed: info.failed,
            uptime,
        });
        // A restart has already written the new pid; otherwise remember that none runs
        // (after the respawn, so a restart waits for no disk write).
        if self.proc.is_none() {
            self.save();
        }
    }

    /// Runs one event through the state machine and performs the actions, with any
    /// events those produce, reporting every state change.
    fn apply(&mut self, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            let before = self.machine.state;
            let jitter = rand::rng().random_range(0.75..=1.25);
            let (machine, actions) = step(self.machine, &self.policy, event, jitter);
            self.machine = machine;
            let mut reason = std::mem::take(&mut self.reason);
            let given = reason.clone();
            let queued = queue.len();
            for action in actions {
                if let Some(next) = self.perform(action, &mut reason) {
                    queue.push_back(next);
                }
            }
            if self.machine.state != before {
                let (reason, next) = super::reason::split(&given, reason, queue.len() > queued);
                self.publish(Some((before, reason)));
                self.reason = next;
            } else if !reason.is_empty() {
                self.reason = reason;
            }
        }
    }

    fn perform(&mut self, action: Action, reason: &mut String) -> Option<Event> {
        match action {
            Action::Spawn => self.spawn_or_install(reason),
            Action::SignalGroup => {
                // Nothing runs (an install was in progress, or the group already ended).
                if !self.group.is_some_and(process::group_alive) {
                    if let Some(t) = self.install.as_mut() {
                        t.for_spawn = false;
                    }
                    return Some(Event::GroupGone);
                }
                let sig = self.stop_signal();
                if let Some(pgid) = self.group
                    && let Err(e) = process::signal_group(pgid, sig)
                {
                    self.last_error =
                        format!("cannot send {} to process group {pgid}: {e}", sig.as_str());
                }
                None
            }
            Action::KillGroup => {
                if let Some(pgid) = self.group
                    && let Err(e) = process::signal_group(pgid, Signal::SIGKILL)
                {
                    self.last_error = format!("cannot kill process group {pgid}: {e}");
                }
                None
            }
            Action::ArmStopTimer => {
                let timeout = Duration::from_millis(
                    self.desired
                        .spec
                        .stop
                        .as_ref()
                        .map_or(10_000, |s| s.timeout_ms),
                );
                self.stop_deadline = Some(Instant::now() + timeout);
                None
            }
            Action::AwaitGroupGone => {
                self.awaiting_group = true;
                None
            }
            Action::ArmRetry(delay) => {
                self.retry_at = Some(Instant::now() + delay);
                if !reason.is_empty() {
                    reason.push_str(&format!(
                        "; next try in {}",
                        humantime::format_duration(round_ms(delay))
                    ));
                }
                None
            }
            Action::DisarmRetry => {
                self.retry_at = None;
                None
            }
        }
    }

    fn stop_signal(&self) -> Signal {
        self.desired
            .spec
            .stop
            .as_ref()
            .and_then(|s| corral_common::signal::parse(&s.signal))
            .unwrap_or(Signal::SIGTERM)
    }

    fn switch_and_start(
        &mut self,
        pkg: &PackageRef,
        release: PathBuf,
        reason: &mut String,
    ) -> Event {
        if let Err(e) = install::switch(&self.dir, &pkg.version) {
            let e = format!("cannot switch to release {}: {e}", pkg.version);
            self.last_error = e.clone();
            *reason = e;
            return Event::SpawnFailed;
        }
        let event = self.start_process(reason, Some(release), None);
        let prefetch = self.desired.prefetch.as_ref().map(|p| p.version.clone());
        let mut protect = vec![pkg.version.as_str()];
        protect.extend(prefetch.as_deref());
        let installer = &self.shared.installer;
        install::collect_garbage(
            &installer.data_dir,
            &self.dir,
            installer.keep_releases,
            &protect,
        );
        event
    }

    fn start_install(&mut self, pkg: PackageRef, for_spawn: bool) {
        if let Some(old) = self.install.take() {
            old.handle.abort();
        }
        let (tx, rx) = watch::channel(Progress {
            version: pkg.version.clone(),
            state: "downloading".into(),
            ..Progress::default()
        });
        let installer = self.shared.installer.clone();
        let (app, server, dir) = (self.app.clone(), self.server.clone(), self.dir.clone());
        let version = pkg.version.clone();
        let handle =
            tokio::spawn(async move { installer.install(&app, &server, &dir, &pkg, &tx).await });
        self.install_progress = rx.borrow().clone();
        self.install = Some(InstallTask {
            version,
            for_spawn,
            handle,
            progress: rx,
        });
        self.publish(None);
    }

    /// Downloads ahead of time the release a rollout is about to switch to.
    fn maybe_prefetch(&mut self) {
        let Some(pkg) = self.desired.prefetch.clone() else {
            return;
        };
        let busy = self
            .install
            .as_ref()
            .is_some_and(|t| t.version == pkg.version);
        if busy || install::ready_release(&self.dir, &pkg).is_some() {
            if !busy && self.install_progress.version != pkg.version {
                self.install_progress = Progress {
                    version: pkg.version.clone(),
                    state: "ready".into(),
                    percent: 100,
                    error: String::new(),
                };
                self.publish(None);
            }
            return;
        }
        if self.install.is_none() {
            self.start_install(pkg, false);
        }
    }

    /// Every adapter's port must be free on the node's address before the start; a
    /// clear message beats a service that dies with "address in use".
    fn check_ports(&self, spec: &ServerSpec) -> Result<(), String> {
        for a in &spec.adapters {
            let Ok(port) = u16::try_from(a.port) else {
                continue;
            };
            if port == 0 {
                continue;
            }
            if let Err(e) = std::net::TcpListener::bind((self.shared.node_ip.as_str(), port)) {
                return Err(format!(
                    "adapter {}: port {port} on {} is not free: {e}",
                    a.name, self.shared.node_ip
                ));
            }
        }
        Ok(())
    }

    /// Writes the rendered config files into conf/, each by rename; the names of the
    /// files whose content changed.
    fn write_configs(&mut self) -> Vec<String> {
        let mut changed = Vec::new();
        for c in &self.desired.configs {
            let path = self.dir.join("conf").join(&c.name);
            if std::fs::read(&path).is_ok_and(|old| old == c.content.as_bytes()) {
                continue;
            }
            match crate::datadir::write_atomic(&path, c.content.as_bytes()) {
                Ok(()) => changed.push(c.name.clone()),
                Err(e) => self.last_error = format!("cannot write config {}: {e}", c.name),
            }
        }
        changed
    }

    /// Starts a process of the desired spec, or of `other` (the previous release's).
    fn start_process(
        &mut self,
        reason: &mut String,
        release: Option<PathBuf>,
        other: Option<&ServerSpec>,
    ) -> Event {
        let spec = other.unwrap_or(&self.desired.spec);
        if let Err(e) = self.check_ports(spec) {
            warn!(instance = %self.name, cause = %e, "cannot start");
            self.last_error = e.clone();
            *reason = e;
            return Event::SpawnFailed;
        }
        let plan = self.plan(spec, release.as_deref());
        let version = spec
            .package
            .as_ref()
            .map(|p| p.version.clone())
            .unwrap_or_default();
        let hash = other.map_or_else(|| self.hash.clone(), spec_hash);
        let kept = fallback::encode(spec);
        self.write_configs();
        match plan.and_then(|plan| process::spawn(&plan).map_err(|e| e.to_string())) {
            Ok(proc) => {
                if self.memory.started_at_ms != 0 {
                    self.memory.restarts += 1;
                }
                self.last_error.clear();
                self.started_at_ms = proc.started_at_ms;
                self.group = Some(proc.pid);
                self.memory.pid = proc.pid;
                self.memory.start_ticks = proc.start_ticks;
                self.memory.started_at_ms = proc.started_at_ms;
                self.memory.boot_id = process::boot_id();
                self.memory.spec_hash = hash;
                self.memory.spec = kept;
                self.memory.version = version;
                self.save();
                if !reason.is_empty() {
                    reason.push_str("; ");
                }
                reason.push_str(&format!("started pid {}", proc.pid));
                self.proc = Some(proc);
                Event::Spawned
            }
            Err(e) => {
                warn!(instance = %self.name, cause = %e, "spawn failed");
                self.last_error = e.clone();
                *reason = e;
                Event::SpawnFailed
            }
        }
    }

    /// Program, arguments, environment and user of a new process. With a release, the
    /// program and working directory are in it; else in the instance directory.
    fn plan(
        &self,
        spec: &ServerSpec,
        release: Option<&std::path::Path>,
    ) -> Result<SpawnPlan, String> {
        let Some(program) = spec.command.first() else {
            return Err("the spec has no command".into());
        };
        let base = release.unwrap_or(&self.dir);
        let path = PathBuf::from(program);
        let program = if path.is_absolute() {
            path
        } else if program.contains('/') || base.join(program).exists() {
            base.join(program)
        } else {
            path // a bare name: looked up in the service's PATH
        };
        let mut env: Vec<(String, String)> = vec![("PATH".into(), DEFAULT_PATH.into())];
        let mut user = None;
        if !spec.user.is_empty() {
            let (service_user, u) = ServiceUser::lookup(&spec.user)?;
            env.push(("HOME".into(), u.dir.display().to_string()));
            env.push(("USER".into(), u.name.clone()));
            env.push(("LOGNAME".into(), u.name.clone()));
            let data = self.dir.join("data");
            let _ = nix::unistd::chown(&data, Some(u.uid), Some(u.gid));
            user = Some(service_user);
        } else if let Ok(home) = std::env::var("HOME") {
            env.push(("HOME".into(), home));
        }
        let uid = user
            .as_ref()
            .map_or_else(|| nix::unistd::geteuid().as_raw(), |u| u.uid);
        if uid == 0 && !self.shared.allow_root {
            return Err(
                "services may not run as root on this node: set user = \"...\" in the spec, \
                        or start the agent with --allow-root (allow_root = true)"
                    .into(),
            );
        }
        env.push(("CORRAL_APP".into(), self.app.clone()));
        env.push(("CORRAL_SERVER".into(), self.server.clone()));
        env.push(("CORRAL_NODE".into(), self.shared.node.clone()));
        env.push(("CORRAL_NODE_IP".into(), self.shared.node_ip.clone()));
        env.push(("CORRAL_INSTANCE_DIR".into(), self.dir.display().to_string()));
        env.push(("CORRAL_ORDINAL".into(), self.desired.ordinal.to_string()));
        if let Some(release) = release {
            env.push(("CORRAL_RELEASE_DIR".into(), release.display().to_string()));
        }
        for a in &spec.adapters {
            env.push((
                corral_proto::names::port_env_var(&a.name),
                a.port.to_string(),
            ));
        }
        let mut spec_env: Vec<(&String, &String)> = spec.env.iter().collect();
        spec_env.sort();
        for (k, v) in spec_env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        Ok(SpawnPlan {
            program,
            args: spec.command[1..].to_vec(),
            env,
            cwd: base.to_path_buf(),
            stdout: self.dir.join("logs/stdout.log"),
            stderr: self.dir.join("logs/stderr.log"),
            user,
        })
    }

    fn save(&self) {
        if let Err(e) = memory::store(&self.dir, &self.memory) {
            warn!(instance = %self.name, cause = %e, "cannot write the instance state file");
        }
    }

    fn publish(&self, change: Option<(State, String)>) {
        let event = change.map(|(from, reason)| {
            info!(instance = %self.name, from = from.as_str(), to = self.machine.state.as_str(), %reason, "instance state");
            self.event("state", from.as_str(), reason)
        });
        self.shared.board.publish(&self.name, self.status(), event);
    }

    /// An event of this instance: from `from` to where it is now (its state, or its
    /// health verdict for kind "health").
    fn event(&self, kind: &str, from: &str, reason: String) -> InstanceEvent {
        let to = if kind == "health" {
            self.health.report()
        } else {
            self.machine.state.as_str()
        };
        InstanceEvent {
            app: self.app.clone(),
            server: self.server.clone(),
            from: from.into(),
            to: to.into(),
            reason,
            at_ms: crate::now_ms(),
            kind: kind.into(),
        }
    }

    fn status(&self) -> InstanceStatus {
        InstanceStatus {
            health: self.health.report().to_string(),
            health_error: self.health.report_error().to_string(),
            app: self.app.clone(),
            server: self.server.clone(),
            state: self.machine.state.as_str().into(),
            pid: self.proc.as_ref().map_or(0, |p| p.pid),
            restarts: self.memory.restarts,
            started_at_ms: self.started_at_ms,
            last_exit: self.last_exit.clone(),
            last_error: self.last_error.clone(),
            version: if self.proc.is_some() {
                self.memory.version.clone()
            } else {
                String::new()
            },
            install: (!self.install_progress.version.is_empty()).then(|| Install {
                version: self.install_progress.version.clone(),
                state: self.install_progress.state.clone(),
                percent: self.install_progress.percent,
                error: self.install_progress.error.clone(),
            }),
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
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
