//! What a cloned child does between the clone and the exec, shared by `clone.rs` (the
//! child shares the agent's memory and writes itself into `cgroup.procs` files) and
//! `clone3.rs` (the child is created in its v2 cgroup, on a copy of the agent's memory):
//! enter the cgroups, a new session, stdin /dev/null and the log files, the service's
//! user, the working directory, default signal handlers and an empty mask, exec.
//!
//! Everything the child touches is prepared here before the clone ([`Prepared`]); the
//! child itself makes only async-signal-safe system calls, allocates nothing and takes no
//! lock (glibc does not know about a child made by a raw clone, so the user ids are set
//! with raw system calls, not glibc's wrappers that signal every thread of the agent).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::Path;

use super::exec::c_string;
use super::{ServiceUser, SpawnPlan};

/// The highest signal number (SIGRTMAX on Linux).
const NSIG: libc::c_int = 64;

/// The steps a child may fail at, reported to the parent with the errno.
pub(super) const STEP_CGROUP: i32 = 1;
const STEP_SETSID: i32 = 2;
const STEP_STDIO: i32 = 3;
const STEP_USER: i32 = 4;
const STEP_CWD: i32 = 5;
const STEP_EXEC: i32 = 6;

/// What the child needs, made before the clone and alive until the child execs.
pub(super) struct Prepared {
    pub(super) program: CString,
    pub(super) cwd: CString,
    // Owners of what `argv` and `envp` point into.
    _args: Vec<CString>,
    _env: Vec<CString>,
    pub(super) argv: Vec<*const libc::c_char>,
    pub(super) envp: Vec<*const libc::c_char>,
    out: libc::c_int,
    err: libc::c_int,
    /// `cgroup.procs` files to write `0` to.
    procs: Vec<libc::c_int>,
    user: Option<ServiceUser>,
}

impl Prepared {
    pub(super) fn new(
        program: &Path,
        plan: &SpawnPlan,
        stdout: &File,
        stderr: &File,
        procs: &[libc::c_int],
        user: Option<&ServiceUser>,
    ) -> std::io::Result<Prepared> {
        let mut args = vec![c_string(plan.program.as_os_str().as_encoded_bytes())?];
        for a in &plan.args {
            args.push(c_string(a.as_str())?);
        }
        let env: Vec<CString> = plan
            .env
            .iter()
            .map(|(k, v)| c_string(format!("{k}={v}")))
            .collect::<Result<_, _>>()?;
        let nul = |v: &[CString]| -> Vec<*const libc::c_char> {
            v.iter()
                .map(|a| a.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        Ok(Prepared {
            program: c_string(program.as_os_str().as_encoded_bytes())?,
            cwd: c_string(plan.cwd.as_os_str().as_encoded_bytes())?,
            argv: nul(&args),
            envp: nul(&env),
            _args: args,
            _env: env,
            out: stdout.as_raw_fd(),
            err: stderr.as_raw_fd(),
            procs: procs.to_vec(),
            user: user.cloned(),
        })
    }

    /// Runs in the child: returns only if a step failed, with (step, errno).
    ///
    /// # Safety
    /// Only in a child between clone and exec, with every signal blocked; `self` must be
    /// alive (the parent waits for the exec or the exit: CLONE_VFORK).
    #[allow(unsafe_code)]
    pub(super) unsafe fn run(&self) -> (i32, i32) {
        // SAFETY: system calls on memory prepared before the clone; no allocation, no lock.
        unsafe {
            let errno = || *libc::__errno_location();
            for fd in &self.procs {
                if libc::write(*fd, c"0".as_ptr().cast(), 1) != 1 {
                    return (STEP_CGROUP, errno());
                }
            }
            if libc::setsid() < 0 {
                return (STEP_SETSID, errno());
            }
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if null < 0
                || libc::dup2(null, 0) < 0
                || libc::dup2(self.out, 1) < 0
                || libc::dup2(self.err, 2) < 0
            {
                return (STEP_STDIO, errno());
            }
            if null > 2 {
                libc::close(null);
            }
            if let Some(u) = &self.user {
                // Groups, gid, then uid (after which the others could not be changed).
                if libc::syscall(libc::SYS_setgroups, u.groups.len(), u.groups.as_ptr()) != 0
                    || libc::syscall(libc::SYS_setgid, u.gid) != 0
                    || libc::syscall(libc::SYS_setuid, u.uid) != 0
                {
                    return (STEP_USER, errno());
                }
            }
            // Entered as the service's user.
            if libc::chdir(self.cwd.as_ptr()) < 0 {
                return (STEP_CWD, errno());
            }
            // Handlers the agent installed must not run in the child: back to the default
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
            libc::execve(
                self.program.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            );
            (STEP_EXEC, errno())
        }
    }
}

/// The error a child reported: which step, with its errno.
pub(super) fn failure(step: i32, errno: i32, plan: &SpawnPlan) -> std::io::Error {
    let e = std::io::Error::from_raw_os_error(errno);
    let what = match step {
        STEP_CGROUP => format!("cannot enter the instance's cgroup: {e}"),
        STEP_SETSID => format!("setsid: {e}"),
        STEP_STDIO => format!("cannot set up stdin/stdout/stderr: {e}"),
        STEP_USER => format!("cannot take the service's user and groups: {e}"),
        STEP_CWD => format!("cannot enter {}: {e}", plan.cwd.display()),
        _ => return e,
    };
    std::io::Error::new(e.kind(), what)
}

/// Blocks every signal in this thread (so no handler of the agent runs in a child before
/// it has put the defaults back); returns the mask to restore.
#[allow(unsafe_code)]
pub(super) fn block_all() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask write into live values.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

/// Restores the mask [`block_all`] returned.
#[allow(unsafe_code)]
pub(super) fn restore(old: &libc::sigset_t) {
    // SAFETY: `old` is a mask pthread_sigmask filled in.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut());
    }
}
