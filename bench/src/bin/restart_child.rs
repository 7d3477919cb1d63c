//! The child that the `restart` benchmark puts under each supervisor: the same binary,
//! started the same way (exec'd directly, no shell) by all of them.
//!
//! First thing in `main` it appends `PID NS` to its record file (argument 1, else
//! `$CORRAL_BENCH_RECORD`), NS being CLOCK_REALTIME in nanoseconds, so that the benchmark
//! can compare it with the moment it sent SIGKILL. Then it idles until its supervisor is
//! gone: if the benchmark itself is killed, no child outlives it for long.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    // Taken before anything else, so that only process start-up is counted.
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_nanos();
    let path = std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os("CORRAL_BENCH_RECORD"))
        .context("usage: restart_child RECORD_FILE (or $CORRAL_BENCH_RECORD)")?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("open {}", path.to_string_lossy()))?;
    // One write(2) on an O_APPEND file: a reader sees the whole line or none of it.
    file.write_all(format!("{} {ns}\n", std::process::id()).as_bytes())
        .context("write the start record")?;
    drop(file);
    let parent = nix::unistd::getppid();
    // Reparented: the supervisor died (the benchmark was killed); end too.
    while nix::unistd::getppid() == parent {
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}
