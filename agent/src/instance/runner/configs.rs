//! The instance's rendered config files: written into `conf/` (each by rename, only
//! when its content changed) before every start and whenever the desired state brings
//! new ones; a running process is then told per each changed file's `on_change`:
//! restarted, or sent a signal. What the modes ask for is the pure [`reaction`].

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use nix::sys::signal::Signal;
use tracing::info;

use super::Runner;
use crate::instance::spec::OnChange;
use crate::instance::state::Event;

/// The bits of a config file the registry gave none for.
const DEFAULT_MODE: u32 = 0o644;

/// What changed config files ask of the running process.
#[derive(Debug, PartialEq, Eq)]
enum Reaction {
    /// One file asks for a restart: that covers every other.
    Restart,
    /// Send each signal, in order: its name, and the signal.
    Signals(Vec<(String, Signal)>),
}

/// The reaction to files changed with these `on_change` modes.
fn reaction<'a>(modes: impl IntoIterator<Item = &'a OnChange>) -> Reaction {
    let modes: Vec<&OnChange> = modes.into_iter().collect();
    if modes.contains(&&OnChange::Restart) {
        return Reaction::Restart;
    }
    Reaction::Signals(
        modes
            .into_iter()
            .filter_map(|m| match m {
                OnChange::Signal { name, signal } => Some((name.clone(), *signal)),
                OnChange::Nothing | OnChange::Restart => None,
            })
            .collect(),
    )
}

impl Runner {
    /// Writes the rendered config files into conf/, each by rename; the names of the
    /// files whose content changed.
    pub(super) fn write_configs(&mut self) -> Vec<String> {
        let mut changed = Vec::new();
        let owner = self.file_owner();
        for c in &self.desired.configs {
            let path = self.dir.join("conf").join(&c.name);
            let mode = if c.mode == 0 { DEFAULT_MODE } else { c.mode };
            let same_content = std::fs::read(&path).is_ok_and(|old| old == c.content.as_bytes());
            let same_file = std::fs::metadata(&path).is_ok_and(|m| {
                m.permissions().mode() & 0o7777 == mode
                    && owner.is_none_or(|(uid, gid)| m.uid() == uid && m.gid() == gid)
            });
            if same_content && same_file {
                continue;
            }
            match crate::datadir::write_private(&path, c.content.as_bytes(), mode, owner) {
                // Only new content is news to the process.
                Ok(()) if !same_content => changed.push(c.name.clone()),
                Ok(()) => {}
                Err(e) => self.last_error = format!("cannot write config {}: {e}", c.name),
            }
        }
        changed
    }

    /// Who owns the files of `conf/`: the spec's user, when the agent may give files
    /// away (it runs as root); else the agent's user (None: left as created).
    fn file_owner(&self) -> Option<(u32, u32)> {
        let user = &self.desired.spec.user;
        if user.is_empty() || !nix::unistd::geteuid().is_root() {
            return None;
        }
        nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
    }

    /// New rendered configs: written at once; a running process is told per `on_change`.
    pub(super) fn configs_changed(&mut self) {
        let changed = self.write_configs();
        if changed.is_empty() {
            return;
        }
        let Some(pid) = self.proc.as_ref().map(|p| p.pid) else {
            return;
        };
        let modes = self
            .desired
            .configs
            .iter()
            .zip(&self.desired.on_change)
            .filter(|(c, _)| changed.contains(&c.name))
            .map(|(_, mode)| mode);
        let signals = match reaction(modes) {
            Reaction::Restart => {
                self.reason = format!("config {} changed", changed.join(", "));
                self.apply(Event::Restart);
                return;
            }
            Reaction::Signals(signals) => signals,
        };
        for (name, signal) in signals {
            info!(instance = %self.name, signal = %name, "config changed; signalling the process");
            if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal) {
                self.last_error = format!("cannot send {name} to pid {pid}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reactions() {
        let signals = |list: &[(&str, Signal)]| {
            Reaction::Signals(list.iter().map(|(n, s)| (n.to_string(), *s)).collect())
        };
        let sig = |name: &str, signal| OnChange::Signal {
            name: name.into(),
            signal,
        };
        let (none, restart) = (OnChange::Nothing, OnChange::Restart);
        #[rustfmt::skip]
        let table = [
            ("nothing changed", vec![], signals(&[])),
            ("none", vec![none.clone()], signals(&[])),
            ("a restart", vec![none.clone(), restart.clone()], Reaction::Restart),
            ("a restart covers a signal", vec![sig("SIGHUP", Signal::SIGHUP), restart], Reaction::Restart),
            ("signals in order", vec![sig("SIGHUP", Signal::SIGHUP), none, sig("SIGUSR2", Signal::SIGUSR2)],
                signals(&[("SIGHUP", Signal::SIGHUP), ("SIGUSR2", Signal::SIGUSR2)])),
        ];
        for (name, modes, want) in table {
            assert_eq!(reaction(&modes), want, "{name}");
        }
    }
}
