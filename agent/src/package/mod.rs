//! Packages: `.tar.gz` releases of a server. The same rules decide what a package may
//! contain on both sides: the registry checks them while a package is uploaded, the
//! agent again while it unpacks (a package is never trusted because of where it came
//! from).
//!
//! * [`check`] — the rules, over a stream of tar entries, writing nothing.
//! * [`unpack`] — checked unpacking into `releases/VERSION.partial/`.
//! * [`install`] — download (resumable, sha256-verified) into the cache, unpack, switch.

pub mod check;
pub mod install;
pub mod unpack;

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
            max_unpacked_bytes: 4 << 30,
            max_entries: 100_000,
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
