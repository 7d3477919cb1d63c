//! Commands that should end on their own: a daemon given bad input must exit at once, and
//! one that takes the input instead keeps running; the test must fail, not hang.

use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::wait_until;

/// Runs `cmd` in a process group of its own and returns its output once it exits; if it
/// is still running after `timeout`, kills the group and panics naming `what`.
pub fn exits_within(what: &str, mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let pgid = Pid::from_raw(child.id() as i32);
    let start = std::time::Instant::now();
    let exited = wait_until(
        &format!("{what} to exit"),
        timeout + Duration::from_secs(1),
        || match child.try_wait() {
            Ok(Some(_)) => Ok(true),
            Ok(None) if start.elapsed() > timeout => Ok(false),
            Ok(None) => Err("still running".to_string()),
            Err(e) => Err(e.to_string()),
        },
    );
    if !exited {
        let _ = killpg(pgid, Signal::SIGKILL);
        let out = child.wait_with_output().ok();
        panic!(
            "{what} was still running after {timeout:?}; stderr: {}",
            out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default()
        );
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}
