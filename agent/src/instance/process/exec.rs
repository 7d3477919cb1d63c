//! Starting a program as the leader of a new session: `posix_spawn(3)` for a service
//! that runs as the agent's user, a fork for one that runs as another user; the program
//! looked up in the service's `PATH`.

use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::{ServiceUser, SpawnPlan};

/// Makes the child the leader of a new session (and so of a new process group); for the
/// fork path only (services with a `user`).
#[allow(unsafe_code)]
fn new_session(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2),
    // which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
}

/// Where `program` is: itself when it names a path, else the first executable file of that
/// name in the service's `PATH` (not the agent's, which `posix_spawnp` would search).
pub(super) fn resolve_program(
    program: &Path,
    env: &[(String, String)],
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    if program.as_os_str().as_encoded_bytes().contains(&b'/') {
        return Ok(program.to_path_buf());
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or("", |(_, v)| v.as_str());
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))
}

pub(super) fn c_string(text: impl Into<Vec<u8>>) -> std::io::Result<CString> {
    CString::new(text).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an argument, environment variable or path contains a NUL byte",
        )
    })
}

/// The attributes and file actions of one `posix_spawn`, destroyed on drop.
#[allow(unsafe_code)]
struct SpawnSetup {
    attr: libc::posix_spawnattr_t,
    actions: libc::posix_spawn_file_actions_t,
}

#[allow(unsafe_code)]
impl Drop for SpawnSetup {
    fn drop(&mut self) {
        // SAFETY: both were initialised by `SpawnSetup::new` and are destroyed once.
        unsafe {
            libc::posix_spawnattr_destroy(&mut self.attr);
            libc::posix_spawn_file_actions_destroy(&mut self.actions);
        }
    }
}

fn os_result(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// Starts `program` as the leader of a new session with posix_spawn(3) and
/// `POSIX_SPAWN_SETSID`. glibc starts the child with `clone(CLONE_VM | CLONE_VFORK)`, whose
/// cost does not grow with the agent, where fork(2) copies the page tables of a
/// multi-threaded agent first: about 0.5 ms more per restart on a small VM. stdin is
/// /dev/null, stdout and stderr the log files, SIGPIPE back to its default (Rust ignores
/// it in the agent), no signal blocked. glibc reports a failed exec as the error.
#[allow(unsafe_code)]
pub(super) fn posix_spawn_session(
    program: &Path,
    plan: &SpawnPlan,
    stdout: &File,
    stderr: &File,
) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd as _;
    // The same C strings and argv/envp arrays as the clone paths' children use.
    let prepared = super::child::Prepared::new(program, plan, stdout, stderr, &[], None)?;
    // SAFETY: every libc call below gets pointers to live, initialised values: the
    // attribute and file-action objects are initialised before use and destroyed by
    // `SpawnSetup`'s drop; the C strings and the null-terminated argv/envp arrays outlive
    // the posix_spawn call; the log files stay open until it returns.
    unsafe {
        let mut setup = SpawnSetup {
            attr: std::mem::zeroed(),
            actions: std::mem::zeroed(),
        };
        os_result(libc::posix_spawnattr_init(&mut setup.attr))?;
        os_result(libc::posix_spawn_file_actions_init(&mut setup.actions))?;
        let actions = &mut setup.actions;
        os_result(libc::posix_spawn_file_actions_addopen(
            actions,
            0,
            c"/dev/null".as_ptr(),
            libc::O_RDONLY,
            0,
        ))?;
        os_result(libc::posix_spawn_file_actions_adddup2(
            actions,
            stdout.as_raw_fd(),
            1,
        ))?;
        os_result(libc::posix_spawn_file_actions_adddup2(
            actions,
            stderr.as_raw_fd(),
            2,
        ))?;
        os_result(libc::posix_spawn_file_actions_addchdir_np(
            actions,
            prepared.cwd.as_ptr(),
        ))?;
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        os_result(libc::posix_spawnattr_setsigmask(&mut setup.attr, &none))?;
        let mut default: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut default);
        libc::sigaddset(&mut default, libc::SIGPIPE);
        os_result(libc::posix_spawnattr_setsigdefault(
            &mut setup.attr,
            &default,
        ))?;
        let flags = libc::POSIX_SPAWN_SETSID
            | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
            | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short;
        os_result(libc::posix_spawnattr_setflags(&mut setup.attr, flags))?;
        let mut pid: libc::pid_t = 0;
        os_result(libc::posix_spawn(
            &mut pid,
            prepared.program.as_ptr(),
            &setup.actions,
            &setup.attr,
            prepared.argv.as_ptr().cast(),
            prepared.envp.as_ptr().cast(),
        ))?;
        Ok(pid as u32)
    }
}

/// Starts a service that runs as another user: posix_spawn cannot change the user, so
/// this forks (std's `Command`). In the child, before the exec: setsid(2), then the
/// user's groups, gid and uid, then the working directory, entered as that user.
#[allow(unsafe_code)]
pub(super) fn fork_as_user(
    program: &Path,
    plan: &SpawnPlan,
    user: &ServiceUser,
    stdout: File,
    stderr: File,
    procs: &[std::os::fd::OwnedFd],
) -> std::io::Result<u32> {
    use std::os::unix::process::CommandExt as _;
    let cwd = c_string(plan.cwd.as_os_str().as_encoded_bytes())?;
    let groups: Vec<libc::gid_t> = user.groups.clone();
    let procs: Vec<libc::c_int> = procs.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
    let (uid, gid) = (user.uid, user.gid);
    let mut cmd = std::process::Command::new(program);
    cmd.arg0(&plan.program)
        .args(&plan.args)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    new_session(&mut cmd);
    // std's `uid()` would drop every supplementary group (its `groups()` is unstable), so
    // the ids are set here. SAFETY: the closure runs in the forked child before exec and
    // only calls write(2) (entering the instance's cgroups through descriptors opened
    // before the fork), setgroups(2), setgid(2), setuid(2) and chdir(2), which are
    // async-signal-safe, on memory made before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            for fd in &procs {
                if libc::write(*fd, c"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            check(libc::setgroups(groups.len(), groups.as_ptr()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))?;
            check(libc::chdir(cwd.as_ptr()))
        });
    }
    // Dropping a std Child neither waits nor kills: the pidfd watches it from here on.
    Ok(cmd.spawn()?.id())
}
