//! The registry's secret key and sealing with it: ChaCha20-Poly1305 from `ring` (no
//! crypto is written here). A sealed value is hex of a random 96-bit nonce, the
//! ciphertext and the tag; the associated data names the row it belongs to, so a value
//! copied to another row (another server, node or file) does not open there.
//!
//! The key is 32 random bytes, kept as 64 hex digits in a file the registry creates 0600
//! on first start (`--secret-key-file`, by default beside the SQLite database), or given
//! in `CORRAL_SECRET_KEY`. Replicas on one MySQL database must share it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Where the key came from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Env,
    /// A key for an in-memory database, which nothing outlives.
    Ephemeral,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "the key file {}", p.display()),
            KeySource::Env => f.write_str("the key in CORRAL_SECRET_KEY"),
            KeySource::Ephemeral => f.write_str("the in-memory database's key"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the secret key file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the secret key file {}: {source}", .path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{from}: must hold 64 hex digits (32 bytes), as the registry writes it")]
    Malformed { from: KeySource },
    #[error("cannot draw random bytes for a key or nonce")]
    Random,
}

/// A 256-bit key; its bytes are never shown.
pub struct SecretKey {
    key: LessSafeKey,
    pub source: KeySource,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.source)
    }
}

/// A sealed value that did not open: the key is not the one it was sealed with, or the
/// value was changed in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFailed;

fn parse(hex_text: &str, source: KeySource) -> Result<SecretKey, KeyError> {
    let bytes = hex::decode(hex_text.trim()).map_err(|_| KeyError::Malformed {
        from: source.clone(),
    })?;
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| KeyError::Malformed {
        from: source.clone(),
    })?;
    Ok(SecretKey {
        key: LessSafeKey::new(unbound),
        source,
    })
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| KeyError::Random)?;
    Ok(out)
}

impl SecretKey {
    /// The key given in the environment (hex).
    pub fn from_hex(text: &str) -> Result<SecretKey, KeyError> {
        parse(text, KeySource::Env)
    }

    /// A fresh key kept nowhere (for `sqlite::memory:`).
    pub fn ephemeral() -> Result<SecretKey, KeyError> {
        parse(&hex::encode(random::<32>()?), KeySource::Ephemeral)
    }

    /// Reads the key file. With `create`, a missing file is created (0600, a fresh key);
    /// without, a missing file is None.
    pub fn from_file(path: &Path, create: bool) -> Result<Option<SecretKey>, KeyError> {
        let source = KeySource::File(path.to_path_buf());
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if let Ok(meta) = std::fs::metadata(path)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    tracing::warn!(
                        path = %path.display(),
                        "the secret key file can be read by other users; chmod 600 it"
                    );
                }
                parse(&text, source).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let text = format!("{}\n", hex::encode(random::<32>()?));
                let err = |source| KeyError::Create {
                    path: path.to_path_buf(),
                    source,
                };
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(err)?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(err)?;
                file.write_all(text.as_bytes()).map_err(err)?;
                file.sync_all().map_err(err)?;
                tracing::info!(path = %path.display(), "created the secret key file");
                parse(&text, source).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(KeyError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Seals `plain` for the row named by `aad`.
    pub fn seal(&self, aad: &str, plain: &[u8]) -> Result<String, KeyError> {
        let nonce_bytes = random::<NONCE_LEN>()?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .map_err(|_| KeyError::Random)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        Ok(hex::encode(out))
    }

    /// Opens a value sealed for the row named by `aad`.
    pub fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>, OpenFailed> {
        let bytes = hex::decode(sealed).map_err(|_| OpenFailed)?;
        if bytes.len() < NONCE_LEN {
            return Err(OpenFailed);
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenFailed)?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| OpenFailed)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_for_its_row_and_key() {
        let key = SecretKey::ephemeral().expect("key");
        let sealed = key
            .seal("a|b|ssl.key", b"-----BEGIN KEY-----")
            .expect("seal");
        assert!(!sealed.contains("BEGIN"));
        assert_eq!(
            key.open("a|b|ssl.key", &sealed).expect("open"),
            b"-----BEGIN KEY-----"
        );
        assert_eq!(key.open("a|b|other", &sealed), Err(OpenFailed));
        let other = SecretKey::ephemeral().expect("key");
        assert_eq!(other.open("a|b|ssl.key", &sealed), Err(OpenFailed));
        assert_eq!(key.open("a|b|ssl.key", "zz"), Err(OpenFailed));
        // A fresh nonce every time.
        assert_ne!(
            sealed,
            key.seal("a|b|ssl.key", b"-----BEGIN KEY-----")
                .expect("seal")
        );
    }

    #[test]
    fn key_files_are_created_0600_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/secret.key");
        assert!(SecretKey::from_file(&path, false).expect("read").is_none());
        let key = SecretKey::from_file(&path, true)
            .expect("create")
            .expect("key");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = SecretKey::from_file(&path, true)
            .expect("read")
            .expect("key");
        let sealed = key.seal("x", b"v").expect("seal");
        assert_eq!(again.open("x", &sealed).expect("open"), b"v");
        std::fs::write(&path, "nothex").expect("write");
        let err = SecretKey::from_file(&path, true).expect_err("malformed");
        assert!(err.to_string().contains("64 hex digits"), "{err}");
    }
}
