//! What an instance keeps on disk: its newest releases, and the cache files a release on
//! this host still refers to.

use std::path::Path;
use std::time::Duration;

use super::sha_file;

/// Keeps the newest `keep` releases of an instance (and any in `protect`); removes the
/// rest, and cache files no release on this host was unpacked from.
pub fn collect_garbage(data_dir: &Path, instance_dir: &Path, keep: usize, protect: &[&str]) {
    let releases = instance_dir.join("releases");
    let Ok(entries) = std::fs::read_dir(&releases) else {
        return;
    };
    let mut versions: Vec<(std::time::SystemTime, String)> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            (!name.ends_with(".partial") && !name.ends_with(".old"))
                .then_some((e.metadata().ok()?.modified().ok()?, name))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    for (_, version) in versions.iter().skip(keep) {
        if protect.contains(&version.as_str()) {
            continue;
        }
        let _ = std::fs::remove_dir_all(releases.join(version));
        let _ = std::fs::remove_file(sha_file(instance_dir, version));
    }
    // Cache files still referenced by a release of any instance stay.
    let mut referenced = std::collections::HashSet::new();
    if let Ok(instances) = std::fs::read_dir(data_dir.join("instances")) {
        for inst in instances.flatten() {
            if let Ok(files) = std::fs::read_dir(inst.path().join("releases")) {
                for f in files
                    .flatten()
                    .filter(|f| f.file_name().to_string_lossy().ends_with(".sha256"))
                {
                    if let Ok(sha) = std::fs::read_to_string(f.path()) {
                        referenced.insert(sha.trim().to_string());
                    }
                }
            }
        }
    }
    // Young files may be about to be unpacked by another instance's install.
    let old_enough = |f: &std::fs::DirEntry| {
        f.metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(600))
    };
    if let Ok(cache) = std::fs::read_dir(data_dir.join("cache")) {
        for f in cache.flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            if !name.ends_with(".partial") && !referenced.contains(&name) && old_enough(&f) {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}
