//! What a package (a `.tar.gz` release of a server) may contain. The same rules decide on
//! both sides: the registry checks them while a package is uploaded, the agent again while
//! it unpacks (a package is never trusted because of where it came from).
//!
//! Refused: absolute paths, `..` components, symlinks and hard links that point outside
//! the release, device files, fifos and any other special file. Allowed: regular files,
//! directories, and links that stay inside. Set-uid, set-gid and sticky bits are dropped
//! on unpack. The unpacked size and the entry count are capped ([`Limits`]).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// The default of [`Limits::max_unpacked_bytes`]: a package may unpack to at most this
/// many bytes...
pub const MAX_UNPACKED_SIZE: u64 = 4 << 30;
/// ... and hold this many entries ([`Limits::max_entries`]).
pub const MAX_PACKAGE_ENTRIES: u64 = 100_000;

/// Limits on what a package may unpack to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Sum of the sizes of all files.
    pub max_unpacked_bytes: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_unpacked_bytes: MAX_UNPACKED_SIZE,
            max_entries: MAX_PACKAGE_ENTRIES,
        }
    }
}

/// Why a package was refused; names the offending entry.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("entry {entry:?}: {why}")]
    Entry { entry: String, why: String },
    #[error("the package unpacks to more than {limit} bytes")]
    TooBig { limit: u64 },
    #[error("the package has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("the package is not a valid .tar.gz: {0}")]
    Corrupt(std::io::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// What a checked entry is.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    File {
        mode: u32,
    },
    Dir,
    /// A symlink, with its target as written in the archive.
    Symlink(PathBuf),
    /// A hard link to another entry, given as a path inside the release.
    HardLink(PathBuf),
}

fn refuse(entry: &Path, why: impl Into<String>) -> PackageError {
    PackageError::Entry {
        entry: entry.display().to_string(),
        why: why.into(),
    }
}

/// The entry's path made relative and normal, or an error if it could leave the
/// release.
pub fn clean_path(path: &Path) -> Result<PathBuf, PackageError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse(path, "has a `..` component")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(path, "is an absolute path"));
            }
        }
    }
    Ok(out)
}

/// Whether `target`, a link target written relative to the directory of `link`, stays
/// inside the release (judged on the names alone; every link is checked this way, so a
/// chain of links cannot leave either).
fn link_stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link.parent().map_or(0, |p| p.components().count() as i64);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => depth -= 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Checks one entry's header and returns its cleaned path and kind.
pub fn check_entry<R: Read>(entry: &tar::Entry<'_, R>) -> Result<(PathBuf, Kind), PackageError> {
    let raw = entry.path().map_err(PackageError::Corrupt)?.into_owned();
    let path = clean_path(&raw)?;
    let header = entry.header();
    let kind = match header.entry_type() {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => Kind::File {
            mode: header.mode().map_err(PackageError::Corrupt)? & 0o777,
        },
        EntryType::Directory => Kind::Dir,
        EntryType::Symlink => {
            let target = entry
                .link_name()
                .map_err(PackageError::Corrupt)?
                .ok_or_else(|| refuse(&raw, "is a symlink without a target"))?;
            if !link_stays_inside(&path, &target) {
                return Err(refuse(
                    &raw,
                    format!("is a symlink to {} outside the release", target.display()),
                ));
            }
            Kind::Symlink(target.into_owned())
        }
        EntryType::Link => {
            let target = entry
                .link_name()
                .map_err(PackageError::Corrupt)?
                .ok_or_else(|| refuse(&raw, "is a hard link without a target"))?;
            let inside = clean_path(&target).map_err(|_| {
                refuse(
                    &raw,
                    format!("is a hard link to {} outside the release", target.display()),
                )
            })?;
            Kind::HardLink(inside)
        }
        EntryType::Char | EntryType::Block => return Err(refuse(&raw, "is a device file")),
        EntryType::Fifo => return Err(refuse(&raw, "is a fifo")),
        other => return Err(refuse(&raw, format!("has an unsupported type {other:?}"))),
    };
    if path.as_os_str().is_empty() && !matches!(kind, Kind::Dir) {
        return Err(refuse(&raw, "has an empty path"));
    }
    Ok((path, kind))
}

/// Counts entries and bytes against the limits.
struct Budget {
    limits: Limits,
    entries: u64,
    bytes: u64,
}

impl Budget {
    fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            entries: 0,
            bytes: 0,
        }
    }

    fn entry(&mut self) -> Result<(), PackageError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(PackageError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    fn bytes(&mut self, n: u64) -> Result<(), PackageError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.limits.max_unpacked_bytes {
            return Err(PackageError::TooBig {
                limit: self.limits.max_unpacked_bytes,
            });
        }
        Ok(())
    }
}

/// Walks an archive's entries (`archive`: the tar stream, already decompressed),
/// checking each one's header and counting it against the limits, then hands it to
/// `each` with its cleaned path and kind. `each` returns how many bytes of file content
/// it read, which count against the size limit. The number of entries.
pub fn walk<R: Read>(
    archive: R,
    limits: Limits,
    mut each: impl FnMut(&mut tar::Entry<'_, R>, PathBuf, Kind) -> Result<u64, PackageError>,
) -> Result<u64, PackageError> {
    let mut archive = tar::Archive::new(archive);
    let mut budget = Budget::new(limits);
    let mut count = 0;
    for entry in archive.entries().map_err(PackageError::Corrupt)? {
        let mut entry = entry.map_err(PackageError::Corrupt)?;
        budget.entry()?;
        let (path, kind) = check_entry(&entry)?;
        budget.bytes(each(&mut entry, path, kind)?)?;
        count += 1;
    }
    Ok(count)
}

/// Reads a whole `.tar.gz` stream and checks every entry, writing nothing. The
/// registry runs this on an upload as it arrives.
pub fn check_archive(reader: impl Read, limits: Limits) -> Result<u64, PackageError> {
    let gz = flate2::read::GzDecoder::new(reader);
    walk(gz, limits, |entry, _, kind| match kind {
        // Count what really comes out, not what the header claims.
        Kind::File { .. } => std::io::copy(
            &mut entry.take(limits.max_unpacked_bytes + 1),
            &mut std::io::sink(),
        )
        .map_err(PackageError::Corrupt),
        _ => Ok(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            clean_path(Path::new("./bin/x")).expect("ok"),
            PathBuf::from("bin/x")
        );
        assert!(clean_path(Path::new("../x")).is_err());
        assert!(clean_path(Path::new("a/../../x")).is_err());
        assert!(clean_path(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn links() {
        assert!(link_stays_inside(Path::new("bin/x"), Path::new("../lib/y")));
        assert!(link_stays_inside(Path::new("x"), Path::new("y")));
        assert!(!link_stays_inside(Path::new("x"), Path::new("../y")));
        assert!(!link_stays_inside(Path::new("bin/x"), Path::new("../../y")));
        assert!(!link_stays_inside(Path::new("x"), Path::new("/etc/passwd")));
        assert!(!link_stays_inside(Path::new("a/x"), Path::new("../../a/y")));
    }
}
