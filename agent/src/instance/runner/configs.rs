//! The instance's rendered config files: written into `conf/` (each by rename, only
//! when its content changed) before every start and whenever the desired state brings
//! new ones; a running process is then told per each changed file's `on_change`:
//! restarted, or sent a signal. What the modes ask for is the pure [`reaction`].

use nix::sys::signal::Signal;
use tracing::info;

use super::Runner;
use crate::instance::spec::{self, OnChange};
use crate::instance::state::Event;

/// What changed config files ask of the running process.
#[derive(Debug, PartialEq, Eq)]
enum Reaction {
    /// One file asks for a restart: that covers every other.
    Restart,
    /// Send each signal, in order: its name, and the signal (None: no signal has it).
    Signals(Vec<(String, Option<Signal>)>),
}

/// The reaction to files changed with these `on_change` modes.
fn reaction<'a>(modes: impl IntoIterator<Item = &'a str>) -> Reaction {
    let modes: Vec<OnChange> = modes.into_iter().map(spec::on_change).collect();
    if modes.contains(&OnChange::Restart) {
        return Reaction::Restart;
    }
    Reaction::Signals(
        modes
            .into_iter()
            .filter_map(|m| match m {
                OnChange::Signal { name, signal } => Some((name, signal)),
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
            .filter(|c| changed.contains(&c.name))
            .map(|c| c.on_change.as_str());
        let signals = match reaction(modes) {
            Reaction::Restart => {
                self.reason = format!("config {} changed", changed.join(", "));
                self.apply(Event::Restart);
                return;
            }
            Reaction::Signals(signals) => signals,
        };
        for (name, signal) in signals {
            match signal {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reactions() {
        let signals = |list: &[(&str, Option<Signal>)]| {
            Reaction::Signals(list.iter().map(|(n, s)| (n.to_string(), *s)).collect())
        };
        #[rustfmt::skip]
        let table = [
            ("nothing changed", vec![], signals(&[])),
            ("none", vec!["none"], signals(&[])),
            ("a restart", vec!["none", "restart"], Reaction::Restart),
            ("a restart covers a signal", vec!["signal:HUP", "restart"], Reaction::Restart),
            ("signals in order", vec!["signal:SIGHUP", "none", "signal:USR2"],
                signals(&[("SIGHUP", Some(Signal::SIGHUP)), ("SIGUSR2", Some(Signal::SIGUSR2))])),
            ("an unknown signal is said", vec!["signal:BOGUS"], signals(&[("SIGBOGUS", None)])),
        ];
        for (name, modes, want) in table {
            assert_eq!(reaction(modes), want, "{name}");
        }
    }
}
