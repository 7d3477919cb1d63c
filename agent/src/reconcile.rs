//! The reconciler: makes this host run exactly the node's desired state. It keeps one
//! runner per instance, sends each its desired half, removes what is no longer wanted,
//! and stops processes a previous agent left behind for instances no longer assigned.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use corral_proto::v1::{DesiredState, HealthStatus, InstanceState, InstanceStatus};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::instance::Desired;
use crate::instance::runner::{Command, Runner, Shared};

struct Handle {
    tx: mpsc::Sender<Command>,
    task: JoinHandle<()>,
    removing: bool,
}

/// Where the last desired state is kept, so that an agent restarted while the registry
/// is unreachable goes on running what it was told.
pub fn desired_path(data_dir: &Path) -> PathBuf {
    data_dir.join("desired.pb")
}

pub fn load_desired(data_dir: &Path) -> Option<DesiredState> {
    let bytes = std::fs::read(desired_path(data_dir)).ok()?;
    match DesiredState::decode(bytes.as_slice()) {
        Ok(d) => Some(d),
        Err(e) => {
            warn!(cause = %e, "ignoring a damaged desired-state file; waiting for the registry");
            None
        }
    }
}

pub struct Reconciler {
    shared: Arc<Shared>,
    data_dir: PathBuf,
    runners: HashMap<String, Handle>,
    /// Whether leftovers of instances no longer assigned have been looked for.
    swept: bool,
}

impl Reconciler {
    pub fn new(shared: Arc<Shared>, data_dir: PathBuf) -> Reconciler {
        Reconciler {
            shared,
            data_dir,
            runners: HashMap::new(),
            swept: false,
        }
    }

    /// Follows the desired state until shutdown; then stops the services (when
    /// `stop_on_exit`) or leaves them running for the next agent.
    pub async fn run(
        mut self,
        mut desired: watch::Receiver<Option<DesiredState>>,
        shutdown: CancellationToken,
        stop_on_exit: bool,
    ) {
        loop {
            let current = desired.borrow_and_update().clone();
            if let Some(state) = current {
                self.apply(state).await;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = desired.changed() => if changed.is_err() { break },
            }
        }
        self.shutdown(stop_on_exit).await;
    }

    async fn apply(&mut self, state: DesiredState) {
        // 0600: it holds the instances' files, secrets among them.
        if let Err(e) = crate::datadir::write_private(
            &desired_path(&self.data_dir),
            &state.encode_to_vec(),
            0o600,
            None,
        ) {
            warn!(cause = %e, "cannot keep the desired state on disk");
        }
        self.runners.retain(|_, h| !h.task.is_finished());
        let mut wanted = Vec::with_capacity(state.instances.len());
        for inst in state.instances {
            let name = format!("{}.{}", inst.app, inst.server);
            wanted.push(name.clone());
            let (app, server) = (inst.app.clone(), inst.server.clone());
            let d = match Desired::from_wire(inst) {
                Ok(d) => d,
                Err(e) => {
                    self.refuse(&name, &app, &server, &e);
                    continue;
                }
            };
            match self.runners.get_mut(&name) {
                Some(h) if !h.removing => {
                    if h.tx.send(Command::Update(Box::new(d))).await.is_err() {
                        self.runners.remove(&name);
                    }
                }
                // Being removed: let that finish; the next desired state starts it anew.
                Some(_) => {}
                None => {
                    let (tx, task) = Runner::spawn(self.shared.clone(), app, server, d);
                    self.runners.insert(
                        name,
                        Handle {
                            tx,
                            task,
                            removing: false,
                        },
                    );
                }
            }
        }
        for (name, h) in self.runners.iter_mut().filter(|(n, _)| !wanted.contains(n)) {
            if !h.removing {
                info!(instance = %name, "no longer assigned to this node; stopping it");
                h.removing = true;
                let _ = h.tx.send(Command::Remove).await;
            }
        }
        if !self.swept {
            self.swept = true;
            self.sweep_leftovers(&wanted).await;
        }
    }

    /// The registry sent an instance this agent cannot read: nothing changes for it, and
    /// its status says why (its runner's, or a `failed` one for an instance not run yet).
    fn refuse(&mut self, name: &str, app: &str, server: &str, error: &str) {
        let message = format!(
            "the registry sent a spec this agent cannot run ({error}); nothing was changed: \
             is the agent older than the registry?"
        );
        warn!(instance = %name, cause = %error, "refused a desired state");
        match self.runners.get(name) {
            Some(h) if !h.removing => {
                let _ = h.tx.try_send(Command::Refused(message));
            }
            _ => {
                let status = InstanceStatus {
                    app: app.to_string(),
                    server: server.to_string(),
                    state: InstanceState::Failed.into(),
                    health: HealthStatus::NoCheck.into(),
                    last_error: message,
                    ..InstanceStatus::default()
                };
                self.shared.board.publish(name, status, None);
            }
        }
    }

    /// Instance directories with a process of a previous agent but no assignment now:
    /// adopt and stop them, so nothing runs that the registry did not ask for.
    async fn sweep_leftovers(&mut self, wanted: &[String]) {
        let Ok(entries) = std::fs::read_dir(&self.shared.instances_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if wanted.contains(&name) || self.runners.contains_key(&name) {
                continue;
            }
            let Some(memory) = crate::instance::memory::load(&entry.path()) else {
                continue;
            };
            let Some((app, server)) = corral_proto::names::split_server(&name) else {
                continue;
            };
            if memory.pid == 0 {
                continue;
            }
            info!(instance = %name, pid = memory.pid, "stopping a leftover instance that is no longer assigned");
            let d = Desired::leftover(&memory);
            let (tx, task) =
                Runner::spawn(self.shared.clone(), app.to_string(), server.to_string(), d);
            let _ = tx.send(Command::Remove).await;
            self.runners.insert(
                name,
                Handle {
                    tx,
                    task,
                    removing: true,
                },
            );
        }
        self.sweep_cgroups(wanted);
    }

    /// Cgroups of instances no runner has (none assigned, no state file): what is in
    /// them is killed, and the empty cgroups are removed.
    fn sweep_cgroups(&self, wanted: &[String]) {
        let Some(cgroups) = &self.shared.cgroups else {
            return;
        };
        for (server, ordinal) in cgroups.existing() {
            if wanted.contains(&server) || self.runners.contains_key(&server) {
                continue;
            }
            let cg = cgroups.instance(&server, ordinal);
            if !cg.is_empty() {
                info!(instance = %server, cgroup = %cg.path().display(), "killing the processes of a cgroup no instance owns");
                if let Err(e) = cg.kill() {
                    warn!(instance = %server, cause = %e, "cannot kill a leftover cgroup");
                }
            }
            tokio::spawn(async move {
                for _ in 0..250 {
                    if cg.is_empty() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                cg.remove();
            });
        }
    }

    async fn shutdown(self, stop: bool) {
        let mut tasks = Vec::new();
        for (_, h) in self.runners {
            let _ = h.tx.send(Command::Shutdown { stop }).await;
            tasks.push(h.task);
        }
        // Each runner ends once its instance is stopped (stop timeout, then SIGKILL).
        let all = futures_join(tasks);
        if tokio::time::timeout(Duration::from_secs(600), all)
            .await
            .is_err()
        {
            warn!("gave up waiting for services to stop");
        }
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}
