//! Starting a program directly inside its v2 cgroup: `clone3(CLONE_INTO_CGROUP)` (Linux
//! 5.7+). The kernel creates the child in the cgroup under a read lock of the cgroup
//! threadgroup semaphore: no migration, so no wait for an RCU grace period, which a write
//! to `cgroup.procs` costs (several milliseconds per restart).
//!
//! clone3 has no glibc wrapper. It is called with fork semantics (no CLONE_VM: with the
//! raw system call a child sharing the agent's memory would return on a stack of its
//! own) and CLONE_VFORK, so this thread waits until the child has exec'd or exited. The
//! child does [`child`](super::child)'s steps on its copy of the agent's memory and
//! reports a failure (step and errno) through a close-on-exec pipe.
//!
//! A kernel without clone3 or without CLONE_INTO_CGROUP (ENOSYS, E2BIG, EINVAL; seccomp
//! filters of container runtimes answer ENOSYS) is detected at the first start, logged
//! once, and every later start takes the `cgroup.procs` path.

use std::fs::File;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

use super::child::{self, Prepared};
use super::{ServiceUser, SpawnPlan};

const UNKNOWN: u8 = 0;
const WORKS: u8 = 1;
const MISSING: u8 = 2;

/// Whether clone3 with CLONE_INTO_CGROUP works here, found at the first start.
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// `CLONE_INTO_CGROUP` (linux/sched.h).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` as of Linux 5.7 (`CLONE_ARGS_SIZE_VER2`, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// False once a start found that this kernel cannot create a child in a cgroup.
pub(super) fn available() -> bool {
    STATE.load(Ordering::Relaxed) != MISSING
}

/// Starts `program` in a new session inside the v2 cgroup whose directory is `cgroup`, as
/// `user` if given. `Ok(None)`: this kernel cannot (decided now, logged once); the caller
/// takes the `cgroup.procs` path.
#[allow(unsafe_code)]
pub(super) fn spawn_in_cgroup(
    program: &Path,
    plan: &SpawnPlan,
    stdout: &File,
    stderr: &File,
    cgroup: &OwnedFd,
    user: Option<&ServiceUser>,
) -> std::io::Result<Option<u32>> {
    let prepared = Prepared::new(program, plan, stdout, stderr, &[], user)?;
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let report = write_end.as_raw_fd();
    let args = CloneArgs {
        flags: (libc::CLONE_VFORK as u64) | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    let old = child::block_all();
    // SAFETY: clone3 with fork semantics: the child continues below on a copy of this
    // thread's memory and stack, with every signal blocked, and leaves only by exec or
    // _exit, making only async-signal-safe system calls on data prepared above.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: in the child (see above); `prepared` and `report` are its copies.
        unsafe {
            let (step, errno) = prepared.run();
            let msg = [step, errno];
            libc::write(report, msg.as_ptr().cast(), std::mem::size_of_val(&msg));
            libc::_exit(127);
        }
    }
    let clone_errno = std::io::Error::last_os_error();
    child::restore(&old);
    drop(write_end);
    if pid < 0 {
        let old_kernel = matches!(
            clone_errno.raw_os_error(),
            Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
        );
        if old_kernel
            && STATE
                .compare_exchange(UNKNOWN, MISSING, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                cause = %clone_errno,
                "this kernel cannot start a process inside its cgroup (clone3 with \
                 CLONE_INTO_CGROUP, Linux 5.7+): processes move into their cgroups \
                 through cgroup.procs instead, which costs some milliseconds per start"
            );
            return Ok(None);
        }
        if STATE.load(Ordering::Relaxed) == MISSING {
            return Ok(None);
        }
        return Err(std::io::Error::new(
            clone_errno.kind(),
            format!("cannot start a process inside the instance's cgroup: {clone_errno}"),
        ));
    }
    STATE.store(WORKS, Ordering::Relaxed);
    let pid = pid as libc::pid_t;
    let mut msg = [0i32; 2];
    let n = loop {
        // SAFETY: reads into a live buffer of its size.
        let n = unsafe {
            libc::read(
                read_end.as_raw_fd(),
                msg.as_mut_ptr().cast(),
                std::mem::size_of_val(&msg),
            )
        };
        if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break n;
        }
    };
    if n == std::mem::size_of_val(&msg) as isize {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(child::failure(msg[0], msg[1], plan));
    }
    Ok(Some(pid as u32))
}

/// Tests: take the `cgroup.procs` path as on a kernel without CLONE_INTO_CGROUP.
#[cfg(test)]
pub(super) fn pretend_missing(missing: bool) {
    STATE.store(if missing { MISSING } else { UNKNOWN }, Ordering::Relaxed);
}
