//! Starting a program inside the instance's cgroup: `clone(CLONE_VM | CLONE_VFORK)`, as
//! glibc's posix_spawn does (no copy of the agent's page tables), with a child that
//! first writes `0` to each pre-opened `cgroup.procs` (so it, and all it will ever fork,
//! is in the cgroup before the program runs a single instruction), then does what
//! posix_spawn's attributes did: a new session, stdin /dev/null, the log files, the
//! working directory, default signal handlers and an empty mask, exec.
//!
//! The child shares the agent's memory until it execs, so it only makes system calls on
//! data prepared before the clone, and reports a failure through an atomic the parent
//! reads once the child has exec'd or exited (CLONE_VFORK suspends the parent until then).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use super::SpawnPlan;
use super::exec::c_string;

/// The child's stack: it runs a few system calls, no Rust code that allocates.
const STACK: usize = 64 * 1024;

/// The highest signal number (SIGRTMAX on Linux).
const NSIG: libc::c_int = 64;

/// Starts `program` in a new session inside the cgroups whose `cgroup.procs` are `procs`.
#[allow(unsafe_code)]
pub(super) fn clone_into_cgroup(
    program: &Path,
    plan: &SpawnPlan,
    stdout: &File,
    stderr: &File,
    procs: &[OwnedFd],
) -> std::io::Result<u32> {
    let c_program = c_string(program.as_os_str().as_encoded_bytes())?;
    let c_cwd = c_string(plan.cwd.as_os_str().as_encoded_bytes())?;
    let mut args = vec![c_string(plan.program.as_os_str().as_encoded_bytes())?];
    for a in &plan.args {
        args.push(c_string(a.as_str())?);
    }
    let env: Vec<CString> = plan
        .env
        .iter()
        .map(|(k, v)| c_string(format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let procs: Vec<libc::c_int> = procs.iter().map(|f| f.as_raw_fd()).collect();
    let (out, err) = (stdout.as_raw_fd(), stderr.as_raw_fd());
    // errno of the step that failed in the child, and which step; 0: none.
    let failed = AtomicI32::new(0);
    let step = AtomicI32::new(0);
    let mut stack = vec![0u8; STACK];
    let child = || -> isize {
        // SAFETY: only system calls on pointers made before the clone and still alive
        // (the parent is suspended until the exec or the exit); no allocation, no lock.
        unsafe {
            let fail = |n: i32| -> isize {
                failed.store(*libc::__errno_location(), Ordering::SeqCst);
                step.store(n, Ordering::SeqCst);
                libc::_exit(127)
            };
            for fd in &procs {
                if libc::write(*fd, c"0".as_ptr().cast(), 1) != 1 {
                    return fail(1);
                }
            }
            if libc::setsid() < 0 {
                return fail(2);
            }
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if null < 0
                || libc::dup2(null, 0) < 0
                || libc::dup2(out, 1) < 0
                || libc::dup2(err, 2) < 0
            {
                return fail(3);
            }
            if null > 2 {
                libc::close(null);
            }
            if libc::chdir(c_cwd.as_ptr()) < 0 {
                return fail(4);
            }
            // Handlers the agent installed would run on this stack: back to the default
            // (an ignored signal stays ignored, except SIGPIPE, which Rust ignores).
            for sig in 1..=NSIG {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                    && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
                    && old.sa_sigaction != libc::SIG_DFL
                {
                    let mut dfl: libc::sigaction = std::mem::zeroed();
                    dfl.sa_sigaction = libc::SIG_DFL;
                    libc::sigaction(sig, &dfl, std::ptr::null_mut());
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::execve(c_program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            fail(5)
        }
    };
    // Every signal blocked in this thread while the child shares it; restored after.
    let mut all: libc::sigset_t = unsafe_zeroed_set();
    let mut old: libc::sigset_t = unsafe_zeroed_set();
    // SAFETY: sigfillset and pthread_sigmask write into live sigset_t values.
    #[allow(unsafe_code)]
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let flags = nix::sched::CloneFlags::CLONE_VM | nix::sched::CloneFlags::CLONE_VFORK;
    // SAFETY: the child runs `child` on its own stack, sharing memory with this thread,
    // which CLONE_VFORK suspends until the child execs or exits; `child` makes only
    // async-signal-safe system calls on data that outlives it.
    let pid = unsafe { nix::sched::clone(Box::new(child), &mut stack, flags, Some(libc::SIGCHLD)) };
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    let pid = pid.map_err(std::io::Error::from)?;
    let errno = failed.load(Ordering::SeqCst);
    if errno != 0 || step.load(Ordering::SeqCst) != 0 {
        let _ = nix::sys::wait::waitpid(pid, None);
        let e = std::io::Error::from_raw_os_error(errno);
        return Err(match step.load(Ordering::SeqCst) {
            1 => std::io::Error::new(e.kind(), format!("cannot enter the instance's cgroup: {e}")),
            2 => std::io::Error::new(e.kind(), format!("setsid: {e}")),
            3 => std::io::Error::new(e.kind(), format!("cannot set up stdin/stdout/stderr: {e}")),
            4 => std::io::Error::new(
                e.kind(),
                format!("cannot enter {}: {e}", plan.cwd.display()),
            ),
            _ => e,
        });
    }
    Ok(pid.as_raw() as u32)
}

#[allow(unsafe_code)]
fn unsafe_zeroed_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; all zeros is a valid (empty) set.
    unsafe { std::mem::zeroed() }
}
