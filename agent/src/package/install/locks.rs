//! Locks on the paths installs write to, held across the threads an install writes with.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Locks on the paths installs write to: one download per package on this host (two
/// servers may ship the same bytes), one unpack per release directory. A lock is held
/// until the last thread writing under it has ended, even when the install that took it
/// was cancelled.
#[derive(Clone, Default)]
pub struct PathLocks(Arc<std::sync::Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>);

/// A held lock, shared by the install and the threads it writes with.
pub(super) type Held = Arc<tokio::sync::OwnedMutexGuard<()>>;

impl PathLocks {
    pub(super) async fn lock(&self, path: &Path) -> Held {
        let mutex = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            // Locks nobody holds or waits for are dropped.
            map.retain(|_, m| Arc::strong_count(m) > 1);
            map.entry(path.to_path_buf()).or_default().clone()
        };
        Arc::new(mutex.lock_owned().await)
    }

    #[cfg(test)]
    pub(super) fn is_locked(&self, path: &Path) -> bool {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(path).is_some_and(|m| m.try_lock().is_err())
    }
}
