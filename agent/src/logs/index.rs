//! When each part of a log file was written, for `logs --since`: log lines carry no time
//! of their own, so the agent samples the size of every instance's log file and keeps
//! (size, time) pairs. Bytes past the size a file had at time T were written after T.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often sizes are sampled: `--since` is exact to about this.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Samples kept per file (only changes of size are kept): at one a sample interval, an
/// hour and more of steady writing.
const KEEP: usize = 8192;

#[derive(Default)]
pub struct SizeIndex {
    files: Mutex<HashMap<PathBuf, VecDeque<(u64, i64)>>>,
}

impl SizeIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, VecDeque<(u64, i64)>>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `path` is `size` bytes long at `now_ms`.
    pub fn record(&self, path: &Path, size: u64, now_ms: i64) {
        let mut files = self.lock();
        let samples = files.entry(path.to_path_buf()).or_default();
        match samples.back() {
            Some(&(last, _)) if last == size => return,
            // Cut by a rotation: what was sampled is in `.1` now.
            Some(&(last, _)) if last > size => samples.clear(),
            _ => {}
        }
        if samples.len() == KEEP {
            samples.pop_front();
        }
        samples.push_back((size, now_ms));
    }

    /// The offset in `path` from which bytes were written at `since_ms` or later, or
    /// None when the index does not know (the agent started after `since_ms`).
    pub fn offset_since(&self, path: &Path, since_ms: i64) -> Option<u64> {
        let files = self.lock();
        let samples = files.get(path)?;
        let first = samples.front()?;
        if first.1 > since_ms {
            // The file was this long before anything was sampled: it may be older.
            return (first.0 == 0).then_some(0);
        }
        samples
            .iter()
            .rev()
            .find(|(_, at)| *at <= since_ms)
            .map(|(size, _)| *size)
    }

    /// Forgets files that are gone.
    fn retain(&self, seen: &[PathBuf]) {
        self.lock().retain(|p, _| seen.contains(p));
    }
}

/// Samples every instance's log files until shutdown.
pub async fn sample_forever(
    index: std::sync::Arc<SizeIndex>,
    instances_dir: PathBuf,
    shutdown: CancellationToken,
) {
    loop {
        let mut seen = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&instances_dir) {
            let now = corral_common::time::now_ms();
            for entry in entries.flatten() {
                for name in ["stdout.log", "stderr.log"] {
                    let path = entry.path().join("logs").join(name);
                    if let Ok(meta) = std::fs::metadata(&path) {
                        index.record(&path, meta.len(), now);
                        seen.push(path);
                    }
                }
            }
        }
        index.retain(&seen);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_by_time() {
        let index = SizeIndex::default();
        let p = Path::new("/x/stdout.log");
        index.record(p, 0, 1000);
        index.record(p, 10, 2000);
        index.record(p, 10, 2500);
        index.record(p, 30, 3000);
        assert_eq!(index.offset_since(p, 500), Some(0));
        assert_eq!(index.offset_since(p, 2000), Some(10));
        assert_eq!(index.offset_since(p, 2999), Some(10));
        assert_eq!(index.offset_since(p, 9999), Some(30));
        // A rotation: the new content is all after the cut.
        index.record(p, 5, 4000);
        assert_eq!(index.offset_since(p, 3500), None);
        assert_eq!(index.offset_since(p, 4000), Some(5));
        index.record(Path::new("/y"), 100, 1000);
        assert_eq!(index.offset_since(Path::new("/y"), 500), None);
    }
}
