//! Agent settings: defaults here, overridden by `/etc/corral/agent.toml` (or `--config`),
//! then by `CORRAL_*` environment variables, then by flags. Unknown keys are errors and
//! every error names the key or value at fault.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_common::config_file::{self, ConfigFileError, first_zero};
use corral_common::fs::absolute;
use corral_common::tls::ClientTls;
use serde::Deserialize;
use tonic::transport::Uri;

/// Defaults, in one place.
pub mod defaults {
    use std::time::Duration;

    pub const CONFIG_FILE: &str = "/etc/corral/agent.toml";
    pub const DATA_DIR: &str = "/var/lib/corral";
    pub const HTTP: &str = "127.0.0.1:17892";
    /// First reconnect delay after a failed attempt; doubles up to `RECONNECT_MAX`.
    pub const RECONNECT_INITIAL: Duration = Duration::from_millis(100);
    pub const RECONNECT_MAX: Duration = Duration::from_secs(2);
    /// How long to wait for a registry to accept a connection before trying the next.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// A service log file is rotated past this size...
    pub const LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
    /// ... keeping this many old files.
    pub const LOG_KEEP: u32 = 5;
    /// Releases kept per instance (the running one always stays).
    pub const KEEP_RELEASES: usize = 5;
    /// A package may unpack to at most this many bytes, and hold this many entries (the
    /// registry checks uploads against the same defaults).
    pub use corral_common::archive::{MAX_PACKAGE_ENTRIES, MAX_UNPACKED_SIZE};
    /// Where DNS for the `corral.` zone is served, UDP and TCP ("off": not at all).
    pub const DNS: &str = "127.0.0.1:8600";
    /// The TTL of DNS answers.
    pub const DNS_TTL: Duration = Duration::from_secs(5);
    /// A name nobody asked the agent for in this long is no longer watched.
    pub const DISCOVERY_IDLE: Duration = Duration::from_secs(600);
    /// The port peers fetch packages from on the advertise IP ("0": any free port, which
    /// the agent tells the registry; "off": serve none).
    pub const PEER_PORT: &str = "0";
}

/// Everything `agent run` needs, resolved and checked.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub locators: Vec<Uri>,
    pub node: String,
    pub advertise_ip: IpAddr,
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub connect_timeout: Duration,
    /// Stop every service when the agent exits (default: leave them running, like
    /// systemd's `KillMode=process`, for the next agent to adopt).
    pub stop_services_on_exit: bool,
    pub log_max_size: u64,
    pub log_keep: u32,
    pub keep_releases: usize,
    pub max_unpacked_size: u64,
    pub max_package_entries: u64,
    /// The registry's join token, for the first join.
    pub join_token: Option<String>,
    /// Whether services may run as root (spec without `user` on an agent run as root, or
    /// `user = "root"`). Off by default: least privilege.
    pub allow_root: bool,
    /// TLS to the registry (https:// locators): its CA, and our certificate for mTLS.
    pub tls: ClientTls,
    /// Where DNS for the `corral.` zone is served (UDP and TCP); None: off.
    pub dns: Option<SocketAddr>,
    /// The TTL of DNS answers, whole seconds.
    pub dns_ttl: Duration,
    /// How long the discovery cache keeps watching a name nobody asks for.
    pub discovery_idle: Duration,
    /// The name of the agent's cgroup subtree (`corral`), or `off`.
    pub cgroup: String,
    /// The port other nodes fetch packages from, on the advertise IP (0: any free one);
    /// None: this node serves no peer.
    pub peer_port: Option<u16>,
}

/// The keys of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// One string with comma-separated URLs, or an array of URLs.
    pub locator: Option<Locator>,
    pub node: Option<String>,
    pub advertise_ip: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub http: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub reconnect_initial: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub reconnect_max: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    pub stop_services_on_exit: Option<bool>,
    /// e.g. "10 MiB"
    pub log_max_size: Option<bytesize::ByteSize>,
    pub log_keep: Option<u32>,
    pub keep_releases: Option<usize>,
    /// e.g. "4 GiB"
    pub max_unpacked_size: Option<bytesize::ByteSize>,
    pub max_package_entries: Option<u64>,
    pub join_token: Option<String>,
    pub allow_root: Option<bool>,
    pub cgroup: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// "IP:PORT" or "off"
    pub dns: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub dns_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub discovery_idle: Option<Duration>,
    /// "PORT" or "off"
    pub peer_port: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Locator {
    One(String),
    Many(Vec<String>),
}

impl Locator {
    fn joined(&self) -> String {
        match self {
            Locator::One(s) => s.clone(),
            Locator::Many(v) => v.join(","),
        }
    }
}

/// Settings given on the command line or in the environment (clap fills both).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub locator: Option<String>,
    pub node: Option<String>,
    pub advertise_ip: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub http: Option<String>,
    pub stop_services_on_exit: bool,
    pub join_token: Option<String>,
    pub allow_root: bool,
    pub tls: ClientTls,
    pub dns: Option<String>,
    pub dns_ttl: Option<Duration>,
    pub discovery_idle: Option<Duration>,
    pub cgroup: Option<String>,
    pub peer_port: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error("no locator: pass --locator URL[,URL...], set CORRAL_LOCATOR or `locator` in {0}")]
    NoLocator(String),
    #[error("locator entry {entry:?} is not a registry URL (expected e.g. http://10.0.0.1:17890)")]
    BadLocator { entry: String },
    #[error("{0}")]
    NodeName(String),
    #[error("advertise IP {0:?} is not an IP address")]
    AdvertiseIp(String),
    #[error(
        "cannot work out which IP this host reaches the registry from ({0}); pass --advertise-ip"
    )]
    NoAdvertiseIp(String),
    #[error("--http {0:?} is not a valid address (expected IP:PORT, e.g. 127.0.0.1:17892)")]
    Http(String),
    #[error("{what} must be greater than zero")]
    Zero { what: &'static str },
    #[error(
        "--dns (dns, CORRAL_DNS) {0:?} is neither an address (IP:PORT, e.g. 127.0.0.1:8600) nor \"off\""
    )]
    Dns(String),
    #[error("--dns-ttl (dns_ttl, CORRAL_DNS_TTL) {0:?} must be whole seconds, at most 1 day")]
    DnsTtl(Duration),
    #[error(
        "--cgroup (cgroup, CORRAL_CGROUP) {0:?} is neither a cgroup name (letters, digits, '-', '_', '.', not starting with '.') nor \"off\""
    )]
    Cgroup(String),
    #[error("--peer-port (peer_port, CORRAL_PEER_PORT) {0:?} is neither a port nor \"off\"")]
    PeerPort(String),
}

/// Checks `--cgroup`: one directory name (the agent's subtree), or "off".
fn check_cgroup(name: String) -> Result<String, ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(name)
    } else {
        Err(ConfigError::Cgroup(name))
    }
}

/// Parses `--dns`: an address, or "off".
pub fn parse_dns(text: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if text == "off" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| ConfigError::Dns(text.to_string()))
}

/// Parses `--peer-port`: a port (0: any free one), or "off".
pub fn parse_peer_port(text: &str) -> Result<Option<u16>, ConfigError> {
    match text {
        "off" => Ok(None),
        _ => text
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::PeerPort(text.to_string())),
    }
}

/// Parses a comma-separated locator list. Entries without a scheme get `http://`.
pub fn parse_locator(text: &str) -> Result<Vec<Uri>, ConfigError> {
    let mut out = Vec::new();
    for (entry, uri) in corral_proto::locator::entries(text) {
        let bad = || ConfigError::BadLocator {
            entry: entry.to_string(),
        };
        let uri = uri.ok_or_else(bad)?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        let host_ok = uri.host().is_some_and(|h| !h.is_empty());
        let path_ok = uri.path() == "/" || uri.path().is_empty();
        if !scheme_ok || !host_ok || uri.port_u16().is_none() || !path_ok {
            return Err(bad());
        }
        out.push(uri);
    }
    if out.is_empty() {
        return Err(ConfigError::BadLocator {
            entry: text.to_string(),
        });
    }
    Ok(out)
}

/// The local IP this host uses to reach the first locator that resolves (no packet is
/// sent: connecting a UDP socket only picks the route).
fn route_ip(locators: &[Uri]) -> Result<IpAddr, ConfigError> {
    let mut last = String::from("no locator");
    for uri in locators {
        let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
            continue;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let bind = if host.contains(':') {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let attempt = UdpSocket::bind(bind)
            .and_then(|s| s.connect((host, port)).map(|()| s))
            .and_then(|s| s.local_addr());
        match attempt {
            Ok(addr) => return Ok(addr.ip()),
            Err(e) => last = format!("{uri}: {e}"),
        }
    }
    Err(ConfigError::NoAdvertiseIp(last))
}

/// Reads the config file; a missing one is an error only when `required`.
pub fn read_file(path: &Path, required: bool) -> Result<FileConfig, ConfigError> {
    Ok(config_file::read(path, required)?)
}

impl AgentConfig {
    /// Resolves the final settings from the file and the overrides.
    pub fn resolve(over: Overrides) -> Result<AgentConfig, ConfigError> {
        let (path, required) = match &over.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(defaults::CONFIG_FILE), false),
        };
        let file = read_file(&path, required)?;
        let shown = path.display().to_string();
        let locator = over
            .locator
            .or_else(|| file.locator.as_ref().map(Locator::joined))
            .ok_or(ConfigError::NoLocator(shown))?;
        let locators = parse_locator(&locator)?;
        let node = match over.node.or(file.node) {
            Some(node) => {
                corral_proto::names::check_node_name(&node).map_err(ConfigError::NodeName)?;
                node
            }
            None => crate::facts::default_node_name().map_err(ConfigError::NodeName)?,
        };
        let advertise_ip = match over.advertise_ip.or(file.advertise_ip) {
            Some(ip) => ip.parse().map_err(|_| ConfigError::AdvertiseIp(ip))?,
            None => route_ip(&locators)?,
        };
        let http_text = over
            .http
            .or(file.http)
            .unwrap_or_else(|| defaults::HTTP.to_string());
        let http = http_text
            .parse()
            .map_err(|_| ConfigError::Http(http_text))?;
        let config = AgentConfig {
            locators,
            node,
            advertise_ip,
            // Absolute: services run in their release or instance directory, so a path
            // relative to where the agent started would point nowhere from there.
            data_dir: absolute(
                over.data_dir
                    .or(file.data_dir)
                    .unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR)),
            ),
            http,
            reconnect_initial: file
                .reconnect_initial
                .unwrap_or(defaults::RECONNECT_INITIAL),
            reconnect_max: file.reconnect_max.unwrap_or(defaults::RECONNECT_MAX),
            connect_timeout: file.connect_timeout.unwrap_or(defaults::CONNECT_TIMEOUT),
            stop_services_on_exit: over.stop_services_on_exit
                || file.stop_services_on_exit.unwrap_or(false),
            log_max_size: file
                .log_max_size
                .map_or(defaults::LOG_MAX_SIZE, |b| b.as_u64()),
            log_keep: file.log_keep.unwrap_or(defaults::LOG_KEEP),
            keep_releases: file.keep_releases.unwrap_or(defaults::KEEP_RELEASES),
            max_unpacked_size: file
                .max_unpacked_size
                .map_or(defaults::MAX_UNPACKED_SIZE, |b| b.as_u64()),
            join_token: over.join_token.or(file.join_token),
            allow_root: over.allow_root || file.allow_root.unwrap_or(false),
            tls: ClientTls {
                ca: over.tls.ca.or(file.tls_ca),
                cert: over.tls.cert.or(file.tls_cert),
                key: over.tls.key.or(file.tls_key),
            },
            max_package_entries: file
                .max_package_entries
                .unwrap_or(defaults::MAX_PACKAGE_ENTRIES),
            dns: parse_dns(
                over.dns
                    .as_deref()
                    .or(file.dns.as_deref())
                    .unwrap_or(defaults::DNS),
            )?,
            dns_ttl: over.dns_ttl.or(file.dns_ttl).unwrap_or(defaults::DNS_TTL),
            discovery_idle: over
                .discovery_idle
                .or(file.discovery_idle)
                .unwrap_or(defaults::DISCOVERY_IDLE),
            cgroup: check_cgroup(
                over.cgroup
                    .or(file.cgroup)
                    .unwrap_or_else(|| crate::cgroup::DEFAULT_SUBTREE.into()),
            )?,
            peer_port: parse_peer_port(
                over.peer_port
                    .as_deref()
                    .or(file.peer_port.as_deref())
                    .unwrap_or(defaults::PEER_PORT),
            )?,
        };
        if config.dns_ttl.subsec_nanos() != 0 || config.dns_ttl > Duration::from_secs(86400) {
            return Err(ConfigError::DnsTtl(config.dns_ttl));
        }
        // Zero cannot work for these; refused rather than quietly turned into 1.
        let zero = first_zero(&[
            ("log_max_size", config.log_max_size),
            ("keep_releases", config.keep_releases as u64),
            ("max_unpacked_size", config.max_unpacked_size),
            ("max_package_entries", config.max_package_entries),
        ])
        .or(first_zero(&[
            ("reconnect_initial", config.reconnect_initial),
            ("reconnect_max", config.reconnect_max),
            ("connect_timeout", config.connect_timeout),
            ("discovery_idle", config.discovery_idle),
        ]));
        match zero {
            Some(what) => Err(ConfigError::Zero { what }),
            None => Ok(config),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locators_parse_and_name_bad_entries() {
        let l = parse_locator("http://127.0.0.1:17890, 10.0.0.2:17890").expect("parse");
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].to_string(), "http://10.0.0.2:17890/");
        for bad in [
            "",
            "http://",
            "ftp://h:1",
            "http://h",
            "http://h:1/path",
            "not a url:x",
        ] {
            let err = parse_locator(bad).expect_err(bad).to_string();
            assert!(err.contains("locator"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "locator = \"http://127.0.0.1:1\"\nnodee = \"x\"\n").expect("write");
        let err = read_file(&path, true).expect_err("unknown key").to_string();
        assert!(err.contains("nodee") && err.contains("agent.toml"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "locator = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]\nnode = \"from-file\"\n\
             advertise_ip = \"127.0.0.9\"\nreconnect_max = \"5s\"\n",
        )
        .expect("write");
        let c = AgentConfig::resolve(Overrides {
            config: Some(path),
            node: Some("from-flag".into()),
            ..Overrides::default()
        })
        .expect("resolve");
        assert_eq!(c.node, "from-flag");
        assert_eq!(c.locators.len(), 2);
        assert_eq!(c.advertise_ip.to_string(), "127.0.0.9");
        assert_eq!(c.reconnect_max, Duration::from_secs(5));
        assert_eq!(c.dns, Some("127.0.0.1:8600".parse().expect("addr")));
        assert_eq!(c.dns_ttl, defaults::DNS_TTL);
    }

    #[test]
    fn dns_settings_are_checked() {
        assert_eq!(parse_dns("off").expect("off"), None);
        assert!(parse_dns("127.0.0.1:53").expect("addr").is_some());
        let err = parse_dns("localhost").expect_err("no port").to_string();
        assert!(err.contains("--dns") && err.contains("localhost"), "{err}");
        assert_eq!(parse_peer_port("off").expect("off"), None);
        assert_eq!(parse_peer_port("17893").expect("port"), Some(17893));
        let err = parse_peer_port("70000").expect_err("too big").to_string();
        assert!(
            err.contains("--peer-port") && err.contains("70000"),
            "{err}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "locator = \"http://127.0.0.1:1\"\nnode = \"n\"\nadvertise_ip = \"127.0.0.1\"\n\
             dns = \"off\"\ndns_ttl = \"1500ms\"\n",
        )
        .expect("write");
        let over = || Overrides {
            config: Some(path.clone()),
            ..Overrides::default()
        };
        let err = AgentConfig::resolve(over()).expect_err("ttl").to_string();
        assert!(
            err.contains("dns_ttl") && err.contains("whole seconds"),
            "{err}"
        );
        let c = AgentConfig::resolve(Overrides {
            dns_ttl: Some(Duration::from_secs(30)),
            ..over()
        })
        .expect("resolve");
        assert_eq!((c.dns, c.dns_ttl), (None, Duration::from_secs(30)));
    }
}
