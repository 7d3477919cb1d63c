//! Which key a registry seals secrets with, decided at start and checked against the
//! database, so that a registry with the wrong key (or none) refuses to start with a
//! message saying why, instead of serving values it cannot open:
//!
//! 1. `CORRAL_SECRET_KEY` (64 hex digits), when set;
//! 2. else `--secret-key-file` (`secret_key_file`), created 0600 with a fresh key when it
//!    does not exist and the database holds nothing sealed yet;
//! 3. else, for an SQLite file, `DBFILE.key` beside it, the same way; for
//!    `sqlite::memory:` a key kept nowhere;
//! 4. else (MySQL without a key) no key: the registry runs, and storing a secret is
//!    refused saying how to give one. Replicas must share one key: give every replica the
//!    same file or the same `CORRAL_SECRET_KEY`.

use std::path::PathBuf;
use std::sync::Arc;

use super::key::{KeyError, SecretKey};
use crate::config::RegistryConfig;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(
        "the database holds sealed secrets, but the secret key file {} does not exist: restore \
         it (or give the key in CORRAL_SECRET_KEY); a new key would not open them", .0.display()
    )]
    KeyFileMissing(PathBuf),
    #[error(
        "the database holds sealed secrets, but this registry has no key: give it the key they \
         were sealed with, with --secret-key-file FILE or CORRAL_SECRET_KEY"
    )]
    NoKey,
    #[error("secrets: {0}")]
    Store(#[from] StoreError),
}

/// The key file used when none is given: `DBFILE.key` for an SQLite file.
fn default_file(db: &str) -> Option<PathBuf> {
    crate::store::sqlite_path(db)
        .filter(|p| *p != ":memory:")
        .map(|p| PathBuf::from(format!("{p}.key")))
}

/// The store with the registry's key, checked against what the database holds.
pub async fn with_key(config: &RegistryConfig, store: Store) -> Result<Store, StartupError> {
    let sealed = store.holds_sealed().await?;
    let key = if let Some(hex) = &config.secret_key {
        Some(SecretKey::from_hex(hex.expose())?)
    } else if let Some(path) = config
        .secret_key_file
        .clone()
        .or_else(|| default_file(&config.db))
    {
        match SecretKey::from_file(&path, !sealed)? {
            Some(k) => Some(k),
            None => return Err(StartupError::KeyFileMissing(path)),
        }
    } else if crate::store::sqlite_path(&config.db) == Some(":memory:") {
        Some(SecretKey::ephemeral()?)
    } else {
        None
    };
    match key {
        Some(key) => {
            let store = store.with_key(Arc::new(key));
            store.verify_key().await?;
            Ok(store)
        }
        None if sealed => Err(StartupError::NoKey),
        None => {
            tracing::info!(
                "no secret key (--secret-key-file or CORRAL_SECRET_KEY): secrets cannot be stored"
            );
            Ok(store)
        }
    }
}

/// A key given in the environment; never shown.
#[derive(Clone)]
pub struct KeyText(String);

impl KeyText {
    pub fn new(text: String) -> KeyText {
        KeyText(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for KeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyText(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_key_file_is_beside_the_sqlite_file() {
        assert_eq!(
            default_file("sqlite:///var/lib/corral/registry.db"),
            Some(PathBuf::from("/var/lib/corral/registry.db.key"))
        );
        assert_eq!(default_file("sqlite::memory:"), None);
        assert_eq!(default_file("mysql://root@h/db"), None);
    }
}
