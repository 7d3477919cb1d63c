//! Starting a program directly inside its v2 cgroup: `clone3(CLONE_INTO_CGROUP)` (Linux
//! 5.7+). The kernel creates the child in the cgroup under a read lock of the cgroup
//! threadgroup semaphore: no migration, so no wait for an RCU grace period, which a write
//! to `cgroup.procs` costs (several milliseconds per restart).
//!
//! clone3 has no glibc wrapper. On x86_64 it is called as glibc's posix_spawn calls
//! clone: `CLONE_VM | CLONE_VFORK` with a stack of the child's own, so the agent's page
//! tables are not copied and its pages are not made copy-on-write for the child's few
//! microseconds (which cost a fault on each page the agent writes next). The raw system
//! call returns in the child on that new stack, so a few instructions of assembly
//! ([`clone3_vm`]) call the child's entry there. Elsewhere it is called with fork
//! semantics (no CLONE_VM; the child continues on its copy of this thread's stack). Either
//! way CLONE_VFORK holds this thread until the child has exec'd or exited; the child does
//! [`child`](super::child)'s steps and reports a failure (step and errno) through a
//! close-on-exec pipe.
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
    let child_args = ChildArgs {
        prepared: &prepared,
        report: write_end.as_raw_fd(),
    };
    let old = child::block_all();
    let pid = start(&child_args, cgroup.as_raw_fd());
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

/// What the child needs: the prepared steps and where to report a failure.
struct ChildArgs<'a> {
    prepared: &'a Prepared,
    report: libc::c_int,
}

/// The child's entry: runs the steps and execs; if a step fails, reports it and exits.
///
/// # Safety
/// Only in a child made by [`start`], with every signal blocked; `arg` points to a
/// [`ChildArgs`] that the parent keeps alive (CLONE_VFORK holds it until the exec or exit).
#[allow(unsafe_code)]
unsafe extern "C" fn child_main(arg: *mut libc::c_void) -> ! {
    // SAFETY: see above; only async-signal-safe system calls on prepared data.
    unsafe {
        let args = &*arg.cast::<ChildArgs>();
        let (step, errno) = args.prepared.run();
        let msg = [step, errno];
        libc::write(
            args.report,
            msg.as_ptr().cast(),
            std::mem::size_of_val(&msg),
        );
        libc::_exit(127)
    }
}

/// The child's stack (x86_64): it runs a few system calls, no Rust code that allocates.
#[cfg(target_arch = "x86_64")]
const STACK: usize = 64 * 1024;

/// Makes the child in the cgroup whose directory is `cgroup`: its pid, or -1 with errno.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn start(child: &ChildArgs, cgroup: libc::c_int) -> libc::c_long {
    let mut stack = vec![0u8; STACK];
    let base = stack.as_mut_ptr() as u64;
    // The ABI wants the stack pointer 16-byte aligned at a call.
    let top = (base + STACK as u64) & !15;
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        stack: base,
        stack_size: top - base,
        cgroup: cgroup as u64,
        ..CloneArgs::default()
    };
    // SAFETY: the child shares this memory and runs `child_main` on `stack`, which lives
    // until the child has exec'd or exited (CLONE_VFORK holds this thread until then).
    unsafe {
        clone3_vm(
            &args,
            child_main,
            std::ptr::from_ref(child).cast_mut().cast(),
        )
    }
}

/// `clone3` whose child starts on `args.stack` and calls `entry(arg)`, which never
/// returns; the parent gets the pid, or -1 with errno set.
///
/// # Safety
/// `args` names a stack for the child, alive until it execs or exits; `entry` must only
/// make async-signal-safe calls.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
unsafe fn clone3_vm(
    args: &CloneArgs,
    entry: unsafe extern "C" fn(*mut libc::c_void) -> !,
    arg: *mut libc::c_void,
) -> libc::c_long {
    let ret: libc::c_long;
    // SAFETY: the system call's registers per the x86_64 Linux ABI (rcx and r11
    // clobbered). The child returns from `syscall` with its stack pointer at the top of
    // the new stack and the parent's other registers: it clears the frame pointer and
    // calls `entry(arg)` (r12, r13), which never returns (ud2 if it did).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") std::ptr::from_ref(args),
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        // SAFETY: errno of this thread.
        unsafe { *libc::__errno_location() = (-ret) as libc::c_int };
        return -1;
    }
    ret
}

/// Makes the child in the cgroup whose directory is `cgroup` with fork semantics (a copy
/// of this thread's memory): its pid, or -1 with errno.
#[cfg(not(target_arch = "x86_64"))]
#[allow(unsafe_code)]
fn start(child: &ChildArgs, cgroup: libc::c_int) -> libc::c_long {
    let args = CloneArgs {
        flags: (libc::CLONE_VFORK as u64) | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 with fork semantics: the child continues here on a copy of this
    // thread's memory and stack, with every signal blocked, and leaves only by exec or
    // _exit (`child_main`).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: in the child (see above).
        unsafe { child_main(std::ptr::from_ref(child).cast_mut().cast()) }
    }
    pid
}

/// Tests: take the `cgroup.procs` path as on a kernel without CLONE_INTO_CGROUP.
#[cfg(test)]
pub(super) fn pretend_missing(missing: bool) {
    STATE.store(if missing { MISSING } else { UNKNOWN }, Ordering::Relaxed);
}
