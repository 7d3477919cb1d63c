//! Reading files with errors that name the file: "cannot read /etc/corral/ca.pem: No such
//! file or directory".

use std::path::{Path, PathBuf};

/// A file that could not be read, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The whole file at `path`.
pub fn read(path: &Path) -> Result<Vec<u8>, ReadError> {
    std::fs::read(path).map_err(|source| ReadError {
        path: path.to_path_buf(),
        source,
    })
}

/// `path` made absolute against the current directory (as it is when given); unchanged
/// when the current directory cannot be read.
pub fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named() {
        let gone = Path::new("/nonexistent/corral/gone.pem");
        let err = read(gone).expect_err("missing").to_string();
        assert!(
            err.starts_with(&format!("cannot read {}: ", gone.display())),
            "{err}"
        );
    }

    #[test]
    fn relative_paths_are_made_absolute() {
        assert!(absolute(PathBuf::from("x/y")).is_absolute());
        assert_eq!(absolute(PathBuf::from("/a/b")), PathBuf::from("/a/b"));
    }
}
