//! The node's secret identity, kept in `DATA_DIR/identity` (mode 0600), so a restarted
//! agent is the same node. The agent makes it up and stores it *before* its first join;
//! the registry records it at that join. So no crash can leave the registry holding an
//! identity the agent never kept: the agent retries with the one it stored, marked new
//! until a registry has welcomed it once.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    pub node: String,
    pub secret: String,
    /// Whether a registry has welcomed the node with this identity. Files written before
    /// this field existed hold identities the registry issued, so they count as admitted.
    #[serde(default = "admitted_by_default")]
    pub admitted: bool,
}

fn admitted_by_default() -> bool {
    true
}

impl Identity {
    /// A new identity for `node`: 32 random bytes as 64 hex digits, not yet admitted.
    pub fn generate(node: &str) -> Self {
        use rand::Rng;
        Identity {
            node: node.to_string(),
            secret: hex::encode(rand::rng().random::<[u8; 32]>()),
            admitted: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read identity file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("identity file {path} is damaged ({source}); delete it to join as a new node")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write identity file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("identity")
}

/// The stored identity, if any.
pub fn load(data_dir: &Path) -> Result<Option<Identity>, IdentityError> {
    let path = path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IdentityError::Read { path, source }),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| IdentityError::Parse { path, source })
}

/// Stores the identity: written to a temporary file with mode 0600, synced, then renamed
/// over the old one, so a crash leaves either the old or the new identity, never half.
pub fn store(data_dir: &Path, identity: &Identity) -> Result<(), IdentityError> {
    let path = path(data_dir);
    let tmp = data_dir.join(".identity.tmp");
    let err = |source| IdentityError::Write {
        path: path.clone(),
        source,
    };
    let text = serde_json::to_string(identity).map_err(|e| err(std::io::Error::other(e)))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("load"), None);
        let id = Identity {
            node: "node-a".into(),
            secret: "s3cret".into(),
            admitted: true,
        };
        store(dir.path(), &id).expect("store");
        assert_eq!(load(dir.path()).expect("load"), Some(id));
        let mode = std::fs::metadata(path(dir.path()))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn generated_identities_are_new_and_distinct() {
        let a = Identity::generate("node-a");
        let b = Identity::generate("node-a");
        assert_eq!(a.secret.len(), 64);
        assert_ne!(a.secret, b.secret);
        assert!(!a.admitted);
    }

    #[test]
    fn files_without_the_admitted_field_count_as_admitted() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(path(dir.path()), r#"{"node":"node-a","secret":"x"}"#).expect("write");
        let id = load(dir.path()).expect("load").expect("some");
        assert!(id.admitted);
    }

    #[test]
    fn damaged_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(path(dir.path()), "{not json").expect("write");
        let err = load(dir.path()).expect_err("must fail").to_string();
        assert!(err.contains("identity file"), "{err}");
    }
}
