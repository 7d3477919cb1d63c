//! Watching a process end through a pidfd, and reaping our children.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;

/// Opens a pidfd for `pid` (pidfd_open(2)); readable once the process has ended.
#[allow(unsafe_code)]
pub(super) fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1;
    // on success we take sole ownership of that descriptor.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd as i32))
    }
}

/// Registers a pidfd with the reactor.
#[allow(unsafe_code)]
pub(super) fn watch_fd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is a valid open descriptor whose `as_raw_fd` never changes, and
    // it is owned by the AsyncFd from here on, so it stays open as long as that lives.
    unsafe { AsyncFd::register(fd).map_err(|e| e.into_parts().1) }
}

/// Reaps our child `pid` if it has ended (waitpid with WNOHANG): its exit status, or None
/// while it runs.
pub(super) fn reap(pid: u32) -> std::io::Result<Option<ExitStatus>> {
    let mut status: libc::c_int = 0;
    #[allow(unsafe_code)]
    // SAFETY: waitpid writes the status of the given child into a live c_int.
    let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    match rc {
        0 => Ok(None),
        r if r < 0 => Err(std::io::Error::last_os_error()),
        _ => Ok(Some(ExitStatus::from_raw(status))),
    }
}
