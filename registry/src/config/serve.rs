//! `registry serve`'s flags and how they, the environment, the config file and the
//! defaults make its configuration.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use corral_common::archive;

use super::{ConfigError, FileConfig, RegistryConfig, TlsFiles, defaults, parse_addr, read_file};

#[derive(Args)]
pub struct ServeArgs {
    /// Config file [default: /etc/corral/registry.toml, if present].
    #[arg(long, env = "CORRAL_REGISTRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC address [default: 127.0.0.1:17890].
    #[arg(long, env = "CORRAL_REGISTRY_LISTEN")]
    pub listen: Option<String>,
    /// HTTP address for the dashboard, /health and /metrics [default: 127.0.0.1:17891].
    #[arg(long, env = "CORRAL_REGISTRY_HTTP")]
    pub http: Option<String>,
    /// Database: sqlite://PATH or mysql://USER[:PASS]@HOST[:PORT]/DB [default: sqlite:///var/lib/corral/registry.db].
    #[arg(long, env = "CORRAL_DB")]
    pub db: Option<String>,
    /// A node whose session is silent this long is down [default: 10s].
    #[arg(long, env = "CORRAL_NODE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub node_timeout: Option<Duration>,
    /// How often agents send heartbeats [default: 2s].
    #[arg(long, env = "CORRAL_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Pace each package download to this many bytes per second, e.g. "50 MiB" [default: unlimited].
    #[arg(long, env = "CORRAL_DOWNLOAD_RATE")]
    pub download_rate: Option<bytesize::ByteSize>,
    /// An admin token, NAME:SECRET, or a bare SECRET named "admin" (repeatable;
    /// CORRAL_ADMIN_TOKENS is comma-separated). Clients present only SECRET.
    #[arg(
        long = "admin-token",
        env = "CORRAL_ADMIN_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_tokens: Vec<String>,
    /// A viewer token (reads everything but secrets, changes nothing), NAME:SECRET or a
    /// bare SECRET named "viewer" (repeatable; CORRAL_VIEWER_TOKENS is comma-separated).
    #[arg(
        long = "viewer-token",
        env = "CORRAL_VIEWER_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub viewer_tokens: Vec<String>,
    /// A TOML file of tokens: [[token]] entries with name, role ("admin" or "viewer") and secret.
    #[arg(long, env = "CORRAL_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// The token agents need to join for the first time.
    #[arg(long, env = "CORRAL_JOIN_TOKEN")]
    pub join_token: Option<String>,
    /// Let anyone read discovery (Query.Find/Watch) without a token.
    #[arg(long, env = "CORRAL_PUBLIC_DISCOVERY")]
    pub public_discovery: bool,
    /// Serve without tokens even on a non-loopback address.
    #[arg(long, env = "CORRAL_NO_AUTH")]
    pub no_auth: bool,
    /// TLS certificate (PEM) for the gRPC port.
    #[arg(long, env = "CORRAL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "CORRAL_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) whose client certificates agents must present: mutual TLS.
    #[arg(long, env = "CORRAL_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// TLS certificate (PEM) for the HTTP port (/health, /metrics).
    #[arg(long, env = "CORRAL_HTTP_TLS_CERT")]
    pub http_tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the HTTP port.
    #[arg(long, env = "CORRAL_HTTP_TLS_KEY")]
    pub http_tls_key: Option<PathBuf>,
    /// The key secrets are sealed with (64 hex digits; created 0600 when missing) [default:
    /// DBFILE.key beside an SQLite database]. Replicas must share it. CORRAL_SECRET_KEY
    /// gives the key itself instead.
    #[arg(long, env = "CORRAL_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// The gRPC URL other replicas reach this one at, e.g. http://10.0.0.1:17890 (for
    /// `registry logs` through any replica) [default: the --listen address, unless it is
    /// 0.0.0.0 or ::].
    #[arg(long, env = "CORRAL_REGISTRY_ADVERTISE")]
    pub advertise: Option<String>,
}

/// The configuration of `registry serve`: flags, then environment (clap reads both),
/// then the config file, then the defaults.
pub fn load(args: ServeArgs) -> Result<RegistryConfig, ConfigError> {
    let (path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(defaults::CONFIG_FILE), false),
    };
    let file: FileConfig = read_file(&path, required)?;
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| defaults::LISTEN.into());
    let http = args
        .http
        .or(file.http)
        .unwrap_or_else(|| defaults::HTTP.into());
    let config = RegistryConfig {
        listen: parse_addr("--listen", &listen)?,
        http: parse_addr("--http", &http)?,
        db: args.db.or(file.db).unwrap_or_else(|| defaults::DB.into()),
        heartbeat_interval: args
            .heartbeat_interval
            .or(file.heartbeat_interval)
            .unwrap_or(defaults::HEARTBEAT_INTERVAL),
        node_timeout: args
            .node_timeout
            .or(file.node_timeout)
            .unwrap_or(defaults::NODE_TIMEOUT),
        flush_interval: file.flush_interval.unwrap_or(defaults::FLUSH_INTERVAL),
        event_retention: file.event_retention.unwrap_or(defaults::EVENT_RETENTION),
        max_package_size: file
            .max_package_size
            .map_or(defaults::MAX_PACKAGE_SIZE, |b| b.as_u64()),
        package_limits: archive::Limits {
            max_unpacked_bytes: file
                .max_unpacked_size
                .map_or(archive::MAX_UNPACKED_SIZE, |b| b.as_u64()),
            max_entries: file
                .max_package_entries
                .unwrap_or(archive::MAX_PACKAGE_ENTRIES),
        },
        download_rate: args
            .download_rate
            .map(|b| b.as_u64())
            .or(file.download_rate.map(|b| b.as_u64())),
        admin_tokens: super::tokens::collect(&super::tokens::Sources {
            admin: if args.admin_tokens.is_empty() {
                file.admin_tokens.unwrap_or_default()
            } else {
                args.admin_tokens
            },
            viewer: if args.viewer_tokens.is_empty() {
                file.viewer_tokens.unwrap_or_default()
            } else {
                args.viewer_tokens
            },
            file: args.tokens_file.or(file.tokens_file),
        })?,
        join_token: args.join_token.or(file.join_token),
        advertise: args
            .advertise
            .or(file.advertise)
            .map(|value| {
                crate::cli::args::registry_addr(&value)
                    .map_err(|why| ConfigError::Advertise { value, why })
            })
            .transpose()?,
        public_discovery: args.public_discovery || file.public_discovery.unwrap_or(false),
        no_auth: args.no_auth || file.no_auth.unwrap_or(false),
        tls: match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
            args.tls_client_ca.or(file.tls_client_ca),
        ) {
            (Some(cert), Some(key), client_ca) => Some(TlsFiles {
                cert,
                key,
                client_ca,
            }),
            (None, None, None) => None,
            _ => return Err(ConfigError::HalfTls),
        },
        http_tls: match (
            args.http_tls_cert.or(file.http_tls_cert),
            args.http_tls_key.or(file.http_tls_key),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(ConfigError::HalfTls),
        },
        secret_key_file: args.secret_key_file.or(file.secret_key_file),
        secret_key: std::env::var("CORRAL_SECRET_KEY")
            .ok()
            .filter(|k| !k.is_empty())
            .map(crate::secrets::startup::KeyText::new),
    };
    config.validate()?;
    Ok(config)
}
