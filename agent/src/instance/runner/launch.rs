//! Launching a process of the instance: the ports its adapters need must be free, the
//! plan of the process (program, arguments, environment, user, working directory, log
//! files) comes from the spec and the release, the config files are written, then
//! [`process::spawn`]; what started is remembered for the next agent.

use std::path::{Path, PathBuf};

use corral_proto::v1::ServerSpec;
use tracing::warn;

use super::Runner;
use crate::instance::process::{self, ServiceUser, SpawnPlan};
use crate::instance::state::Event;
use crate::instance::{fallback, spec_hash};

/// The `PATH` a service (and an exec health check) starts with.
pub(super) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Runner {
    /// Starts a process of the desired spec, or of `other` (the previous release's).
    pub(super) fn start_process(
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
        let plan = self.plan(spec, release.as_deref()).and_then(|mut plan| {
            let (entry, oom_kills, limits) = self.enter_cgroup(spec)?;
            plan.cgroup_dir = entry.dir;
            plan.cgroup_procs = entry.procs;
            Ok((plan, oom_kills, limits))
        });
        let version = spec
            .package
            .as_ref()
            .map(|p| p.version.clone())
            .unwrap_or_default();
        let hash = other.map_or_else(|| self.hash.clone(), spec_hash);
        let kept = fallback::encode(spec);
        self.write_configs();
        let spawned = plan.and_then(|(plan, oom_kills, limits)| {
            self.oom_seen = oom_kills;
            self.limits_written = self.cgroup.is_some().then_some(limits);
            process::spawn(&plan).map_err(|e| e.to_string())
        });
        match spawned {
            Ok(proc) => {
                if self.memory.started_at_ms != 0 {
                    self.memory.restarts += 1;
                }
                self.last_error = self.oom_note.clone();
                self.started_at_ms = proc.started_at_ms;
                self.group = Some(proc.pid);
                self.memory.pid = proc.pid;
                self.memory.start_ticks = proc.start_ticks;
                self.memory.started_at_ms = proc.started_at_ms;
                self.memory.boot_id = process::boot_id();
                self.memory.spec_hash = hash;
                self.memory.spec = kept;
                self.memory.version = version;
                self.memory.ordinal = self.desired.ordinal;
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

    /// The instance's cgroup, created with the spec's limits: what the child enters. A spec with `[resources]` on a node without cgroups is refused,
    /// never run without its limits.
    fn enter_cgroup(
        &self,
        spec: &ServerSpec,
    ) -> Result<(crate::cgroup::Entry, u64, crate::cgroup::Limits), String> {
        let limits = crate::cgroup::Limits::from_wire(spec.resources.as_ref());
        let Some(cg) = &self.cgroup else {
            if limits.any() {
                return Err(format!(
                    "the spec has [resources] but this node cannot apply them: {}",
                    self.shared.cgroups_error
                ));
            }
            return Ok((crate::cgroup::Entry::default(), 0, limits));
        };
        let entry = cg.prepare(&limits, self.limits_written.as_ref())?;
        Ok((entry, cg.oom_kills(), limits))
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

    /// Program, arguments, environment and user of a new process. With a release, the
    /// program and working directory are in it; else in the instance directory.
    fn plan(&self, spec: &ServerSpec, release: Option<&Path>) -> Result<SpawnPlan, String> {
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
            cgroup_dir: None,
            cgroup_procs: Vec::new(),
        })
    }
}
