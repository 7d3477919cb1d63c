//! Registry settings: defaults here, overridden by the config file, then environment
//! (`CORRAL_*`), then flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_common::archive::Limits;
use corral_common::config_file::{self, ConfigFileError, first_zero};
use serde::Deserialize;

mod serve;
pub mod tokens;

pub use serve::{ServeArgs, load};

/// Defaults, in one place.
pub mod defaults {
    use std::time::Duration;

    pub const LISTEN: &str = "127.0.0.1:17890";
    pub const HTTP: &str = "127.0.0.1:17891";
    pub const DB: &str = "sqlite:///var/lib/corral/registry.db";
    pub const DEV_DB: &str = "sqlite://./.corral/dev.db";
    pub const CONFIG_FILE: &str = "/etc/corral/registry.toml";
    /// How often agents send a heartbeat.
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
    /// A node whose session has been silent this long is `down`.
    pub const NODE_TIMEOUT: Duration = Duration::from_secs(10);
    /// How often last-seen times and load reports are written, in one batch.
    pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);
    /// Instance events kept in the database; older ones are trimmed as events are written.
    pub const EVENT_RETENTION: u64 = 100_000;
    /// The largest package that can be uploaded.
    pub const MAX_PACKAGE_SIZE: u64 = 1 << 30;
    /// Audit records kept in the database ([`crate::audit`]); older ones are pruned in
    /// batches as records are written.
    pub const AUDIT_RETENTION: u64 = 100_000;
}

/// Everything `registry serve` needs.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub db: String,
    pub heartbeat_interval: Duration,
    pub node_timeout: Duration,
    pub flush_interval: Duration,
    pub event_retention: u64,
    pub max_package_size: u64,
    /// What a package may unpack to (checked at upload, as agents check it on unpack).
    pub package_limits: Limits,
    /// Bytes per second each package download is paced to; None: as fast as it goes.
    pub download_rate: Option<u64>,
    /// Every token callers may present, admin and viewer ([`crate::auth`]); empty: admin
    /// calls are open (allowed only on loopback, or with `no_auth`).
    pub admin_tokens: Vec<crate::auth::NamedToken>,
    /// The token an agent needs for its first join; None: anyone may join.
    pub join_token: Option<String>,
    /// Discovery reads (`Query.*`) need no token.
    pub public_discovery: bool,
    /// Serve without tokens on a non-loopback address, knowingly.
    pub no_auth: bool,
    /// TLS on the gRPC port; None: plain TCP.
    pub tls: Option<TlsFiles>,
    /// TLS on the HTTP port (certificate, key); None: plain HTTP.
    pub http_tls: Option<(PathBuf, PathBuf)>,
    /// The file holding the key secrets are sealed with; None: `DBFILE.key` for SQLite
    /// ([`crate::secrets::startup`]).
    pub secret_key_file: Option<PathBuf>,
    /// The key itself, from `CORRAL_SECRET_KEY` (64 hex digits); wins over the file.
    pub secret_key: Option<crate::secrets::startup::KeyText>,
    /// The gRPC address other replicas reach this one at (`registry logs` of a node
    /// whose session is open here); None: the listen address, unless it is a wildcard.
    pub advertise: Option<String>,
}

/// PEM files for TLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Agents must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// The config file's keys; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub http: Option<String>,
    pub db: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub heartbeat_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub node_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub flush_interval: Option<Duration>,
    pub event_retention: Option<u64>,
    /// e.g. "1 GiB"
    pub max_package_size: Option<bytesize::ByteSize>,
    pub max_unpacked_size: Option<bytesize::ByteSize>,
    pub max_package_entries: Option<u64>,
    /// e.g. "50 MiB" (per second, per download)
    pub download_rate: Option<bytesize::ByteSize>,
    pub admin_tokens: Option<Vec<String>>,
    pub viewer_tokens: Option<Vec<String>>,
    pub tokens_file: Option<PathBuf>,
    pub join_token: Option<String>,
    pub public_discovery: Option<bool>,
    pub no_auth: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub http_tls_cert: Option<PathBuf>,
    pub http_tls_key: Option<PathBuf>,
    pub secret_key_file: Option<PathBuf>,
    pub advertise: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error("{what} {value:?} is not a valid address (expected IP:PORT, e.g. 127.0.0.1:17890)")]
    Address { what: &'static str, value: String },
    #[error("{what} must be greater than zero")]
    Zero { what: &'static str },
    #[error("node_timeout ({timeout:?}) must be longer than heartbeat_interval ({heartbeat:?})")]
    TimeoutTooShort {
        timeout: Duration,
        heartbeat: Duration,
    },
    #[error(
        "refusing to serve on {addr} without {what}: anyone who reaches it could {risk}. Pass {flag} \
         (or --no-auth to do without, e.g. behind a gateway that authenticates)"
    )]
    Unprotected {
        addr: SocketAddr,
        what: &'static str,
        risk: &'static str,
        flag: &'static str,
    },
    #[error("{what} must not be empty")]
    EmptyToken { what: &'static str },
    #[error(transparent)]
    Tokens(#[from] tokens::TokensError),
    #[error("TLS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)")]
    HalfTls,
    #[error("--advertise (or advertise) {value:?}: {why}")]
    Advertise { value: String, why: String },
}

/// Reads a TOML config file. A missing file is an error only when `required`.
pub fn read_file<T: for<'de> Deserialize<'de> + Default>(
    path: &Path,
    required: bool,
) -> Result<T, ConfigError> {
    Ok(config_file::read(path, required)?)
}

pub fn parse_addr(what: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Address {
        what,
        value: value.to_string(),
    })
}

impl RegistryConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Zero cannot work for these (no package could be uploaded, a download would
        // never end): refused rather than taken.
        let zero = first_zero(&[
            ("heartbeat_interval", self.heartbeat_interval),
            ("node_timeout", self.node_timeout),
            ("flush_interval", self.flush_interval),
        ])
        .or(first_zero(&[
            ("max_package_size", self.max_package_size),
            ("max_unpacked_size", self.package_limits.max_unpacked_bytes),
            ("max_package_entries", self.package_limits.max_entries),
            (
                "download_rate (--download-rate)",
                self.download_rate.unwrap_or(1),
            ),
        ]));
        if let Some(what) = zero {
            return Err(ConfigError::Zero { what });
        }
        if self.admin_tokens.iter().any(|t| t.secret.is_empty()) {
            return Err(ConfigError::EmptyToken {
                what: "an admin token",
            });
        }
        if self.join_token.as_deref() == Some("") {
            return Err(ConfigError::EmptyToken {
                what: "the join token",
            });
        }
        if !self.listen.ip().is_loopback() && !self.no_auth {
            if self.admin_tokens.is_empty() {
                return Err(ConfigError::Unprotected {
                    addr: self.listen,
                    what: "an admin token",
                    risk: "change the fleet",
                    flag: "--admin-token NAME:SECRET (or --tokens-file FILE)",
                });
            }
            if self.join_token.is_none() {
                return Err(ConfigError::Unprotected {
                    addr: self.listen,
                    what: "a join token",
                    risk: "join as a node",
                    flag: "--join-token TOKEN",
                });
            }
        }
        if self.node_timeout <= self.heartbeat_interval {
            return Err(ConfigError::TimeoutTooShort {
                timeout: self.node_timeout,
                heartbeat: self.heartbeat_interval,
            });
        }
        Ok(())
    }
}
