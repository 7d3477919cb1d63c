//! Size-based rotation of the instances' `logs/stdout.log` and `logs/stderr.log`.
//!
//! Children write to their log files directly (opened for append), so their output never
//! depends on the agent being alive: an agent restart cannot block or kill a service
//! through a full or broken pipe. Rotation is therefore copy-then-truncate: the current
//! file is copied to `.1` (older ones shift to `.2` ... `.KEEP`) and cut to zero length;
//! the child's appends continue at the new end. Lines written during the copy itself can
//! be lost, the price logrotate's `copytruncate` pays too.
//!
//! The registry reads these files through the session (`registry logs`): [`streams`]
//! runs each log stream it opens, [`follow`] follows a file across rotations and
//! restarts, [`read`] splits lines and finds the last ones, [`index`] dates them.

pub mod follow;
pub mod index;
pub mod read;
pub mod streams;

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How often file sizes are checked.
const CHECK_EVERY: Duration = Duration::from_secs(2);

pub async fn rotate_forever(
    instances_dir: std::path::PathBuf,
    max_bytes: u64,
    keep: u32,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let dir = instances_dir.clone();
        let _ = tokio::task::spawn_blocking(move || rotate_all(&dir, max_bytes, keep)).await;
    }
}

fn rotate_all(instances_dir: &Path, max_bytes: u64, keep: u32) {
    let Ok(entries) = std::fs::read_dir(instances_dir) else {
        return;
    };
    for entry in entries.flatten() {
        for name in ["stdout.log", "stderr.log"] {
            let path = entry.path().join("logs").join(name);
            if std::fs::metadata(&path).is_ok_and(|m| m.len() > max_bytes)
                && let Err(e) = rotate(&path, keep)
            {
                warn!(path = %path.display(), cause = %e, "cannot rotate a log file");
            }
        }
    }
}

/// Shifts `path.1..` up by one (dropping the oldest), copies `path` to `path.1` and
/// truncates `path`.
pub fn rotate(path: &Path, keep: u32) -> std::io::Result<()> {
    let numbered = |n: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        std::path::PathBuf::from(p)
    };
    if keep == 0 {
        return std::fs::File::options().write(true).open(path)?.set_len(0);
    }
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        let from = numbered(n);
        if from.exists() {
            std::fs::rename(&from, numbered(n + 1))?;
        }
    }
    std::fs::copy(path, numbered(1))?;
    std::fs::File::options().write(true).open(path)?.set_len(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("stdout.log");
        for round in 1..=4 {
            std::fs::write(&log, format!("round {round}\n")).expect("write");
            rotate(&log, 2).expect("rotate");
        }
        assert_eq!(std::fs::read_to_string(&log).expect("log"), "");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stdout.log.1")).expect("1"),
            "round 4\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("stdout.log.2")).expect("2"),
            "round 3\n"
        );
        assert!(!dir.path().join("stdout.log.3").exists());
    }
}
