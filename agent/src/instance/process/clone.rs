//! Starting a program inside cgroups it must move into: `clone(CLONE_VM | CLONE_VFORK)`,
//! as glibc's posix_spawn does (no copy of the agent's page tables), with a child that
//! first writes `0` to each pre-opened `cgroup.procs` (so it, and all it will ever fork,
//! is in the cgroups before the program runs a single instruction), then does the rest
//! of [`child`](super::child) and execs. The path of an instance with `[resources]` on a
//! host with v1 controllers, and of a kernel without clone3's CLONE_INTO_CGROUP; each
//! write to `cgroup.procs` is a migration, which waits for an RCU grace period when none
//! happened recently (some milliseconds).
//!
//! The child shares the agent's memory until it execs, so it reports a failure through
//! atomics the parent reads once the child has exec'd or exited (CLONE_VFORK suspends the
//! parent until then).

use std::fs::File;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use super::SpawnPlan;
use super::child::{self, Prepared};

/// The child's stack: it runs a few system calls, no Rust code that allocates.
const STACK: usize = 64 * 1024;

/// Starts `program` in a new session inside the cgroups whose `cgroup.procs` are `procs`.
#[allow(unsafe_code)]
pub(super) fn clone_into_cgroup(
    program: &Path,
    plan: &SpawnPlan,
    stdout: &File,
    stderr: &File,
    procs: &[OwnedFd],
) -> std::io::Result<u32> {
    let procs: Vec<libc::c_int> = procs.iter().map(|f| f.as_raw_fd()).collect();
    let prepared = Prepared::new(program, plan, stdout, stderr, &procs, None)?;
    // errno of the step that failed in the child, and which step; 0: none.
    let failed = AtomicI32::new(0);
    let step = AtomicI32::new(0);
    let mut stack = vec![0u8; STACK];
    let run = || -> isize {
        // SAFETY: in the child between clone and exec, every signal blocked; `prepared`
        // outlives it (the parent is suspended until the exec or the exit).
        unsafe {
            let (s, e) = prepared.run();
            failed.store(e, Ordering::SeqCst);
            step.store(s, Ordering::SeqCst);
            libc::_exit(127)
        }
    };
    // Every signal blocked in this thread while the child shares it; restored after.
    let old = child::block_all();
    let flags = nix::sched::CloneFlags::CLONE_VM | nix::sched::CloneFlags::CLONE_VFORK;
    // SAFETY: the child runs `run` on its own stack, sharing memory with this thread,
    // which CLONE_VFORK suspends until the child execs or exits; `run` makes only
    // async-signal-safe system calls on data that outlives it.
    let pid = unsafe { nix::sched::clone(Box::new(run), &mut stack, flags, Some(libc::SIGCHLD)) };
    child::restore(&old);
    let pid = pid.map_err(std::io::Error::from)?;
    let s = step.load(Ordering::SeqCst);
    if s != 0 {
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(child::failure(s, failed.load(Ordering::SeqCst), plan));
    }
    Ok(pid.as_raw() as u32)
}
