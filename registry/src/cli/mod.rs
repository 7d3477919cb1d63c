//! The admin command line: a gRPC client of the registry.
//!
//! Every command connects through [`connect`] and ends through [`finish`], so a registry
//! that does not answer reads the same everywhere: "cannot reach the registry at ADDR: …"
//! (exit 1). A flag whose value cannot work is a usage error (exit 2), refused before
//! anything is sent ([`args`]).

pub mod apply;
pub mod args;
pub mod audit;
pub mod events;
pub mod logs;
pub mod node;
pub mod output;
pub mod package;
pub mod rollout;
pub mod secret;
pub mod server;
// The `server` subcommands of spec history and `--wait`.
pub mod control;
pub mod history;

use clap::{Args, ValueEnum};
use corral_proto::v1::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

/// Options every admin command takes, before or after the subcommand (`global`):
/// `registry --addr X node list -o json` and `registry node list -o json --addr X`.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// The registry's gRPC address (http:// or https://, host and port).
    ///
    /// Checked when a command connects ([`args::registry_addr`]), not by clap: the option
    /// is global, and a CORRAL_ADDR meant for the CLI must not stop `registry serve`.
    #[arg(
        long,
        env = "CORRAL_ADDR",
        default_value = "http://127.0.0.1:17890",
        global = true
    )]
    pub addr: String,
    /// CA (PEM) that signed the registry's certificate, for https:// addresses.
    #[arg(long, env = "CORRAL_CA", global = true)]
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM), when the registry wants one.
    #[arg(long, env = "CORRAL_CERT", global = true)]
    pub cert: Option<std::path::PathBuf>,
    /// Client key (PEM).
    #[arg(long, env = "CORRAL_KEY", global = true)]
    pub key: Option<std::path::PathBuf>,
    /// Admin token (sent as a bearer token).
    #[arg(long, env = "CORRAL_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table, global = true)]
    pub output: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// The names of [`ClientArgs`]' options, for commands that take none of them.
pub const CLIENT_OPTIONS: [(&str, &str); 6] = [
    ("addr", "--addr"),
    ("ca", "--ca"),
    ("cert", "--cert"),
    ("key", "--key"),
    ("token", "--token"),
    ("output", "--output"),
];

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("--addr (or CORRAL_ADDR) {addr:?}: {why}")]
    BadAddr { addr: String, why: String },
    #[error("cannot reach the registry at {addr}: {}", chain(.source))]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    /// A call that the transport failed, not the registry: it did not answer, went away
    /// or is not a gRPC server.
    #[error("cannot reach the registry at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("--ca/--cert/--key: {0}")]
    Tls(corral_common::tls::ClientTlsError),
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("cannot read {}: {source}", .path.display())]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
    #[error("--token (or CORRAL_TOKEN) has characters that cannot be sent in a header")]
    BadToken,
}

impl CliError {
    /// Exit code: 2 for bad input, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::BadAddr { .. }
            | CliError::File { .. }
            | CliError::BadToken
            | CliError::Tls(_) => 2,
            CliError::Rpc(s) if s.code() == tonic::Code::InvalidArgument => 2,
            _ => 1,
        }
    }
}

/// The end of every admin command: a status that the transport made (the registry did
/// not answer, the connection broke, the address is not a gRPC server) becomes
/// "cannot reach the registry at ADDR: …"; anything the registry said stays as it is.
pub fn finish(result: Result<(), CliError>, args: &ClientArgs) -> Result<(), CliError> {
    match result {
        Err(CliError::Rpc(status)) => match transport_failure(&status) {
            Some(reason) => Err(CliError::Unreachable {
                addr: args.addr.clone(),
                reason: dedupe(&reason),
            }),
            None => Err(CliError::Rpc(status)),
        },
        other => other,
    }
}

/// "a: b: b: c" as "a: b: c": hyper and tonic repeat a cause as they wrap it.
fn dedupe(reason: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in reason.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

/// Why the transport failed a call, or None when the registry itself answered. tonic
/// makes these statuses on the client side: they carry the transport error as their
/// source, or one of a few fixed messages.
fn transport_failure(status: &tonic::Status) -> Option<String> {
    let message = status.message();
    if let Some(code) =
        message.strip_prefix("grpc-status header missing, mapped from HTTP status code ")
    {
        return Some(format!(
            "it answers HTTP {code}, not gRPC (is this the registry's --http port instead of its --listen port?)"
        ));
    }
    const TRANSPORT: [&str; 6] = [
        "h2 protocol error",
        "transport error",
        "error trying to connect",
        "connection error",
        "operation was canceled",
        "keep-alive timed out",
    ];
    let silent = message.contains("keep-alive timed out")
        || std::error::Error::source(status)
            .is_some_and(|e| chain(e).contains("keep-alive timed out"));
    if silent {
        return Some(format!(
            "it accepted the connection but did not answer within {}s",
            2 * KEEPALIVE.as_secs()
        ));
    }
    match std::error::Error::source(status) {
        Some(source) => {
            let chained = chain(source);
            Some(if message.is_empty() || chained.starts_with(message) {
                chained
            } else {
                format!("{message}: {chained}")
            })
        }
        None if TRANSPORT.iter().any(|p| message.starts_with(p)) => Some(message.to_string()),
        None => None,
    }
}

/// An error and its sources, joined: "transport error: connection refused". A source
/// that only repeats what is already said (tonic nests "tcp connect error" twice) is
/// left out.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

/// Adds the admin token to every call.
#[derive(Clone)]
pub struct WithToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for WithToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// A channel to the registry that sends the admin token.
pub type Authed = tonic::service::interceptor::InterceptedService<Channel, WithToken>;
pub type Client = AdminClient<Authed>;

fn with_token(args: &ClientArgs) -> Result<WithToken, CliError> {
    match &args.token {
        None => Ok(WithToken(None)),
        Some(t) => format!("Bearer {t}")
            .parse()
            .map(|v| WithToken(Some(v)))
            .map_err(|_| CliError::BadToken),
    }
}

pub async fn connect(args: &ClientArgs) -> Result<Client, CliError> {
    Ok(AdminClient::with_interceptor(
        connect_channel(args).await?,
        with_token(args)?,
    ))
}

/// A client of the Query service, with the token.
pub async fn connect_query(
    args: &ClientArgs,
) -> Result<corral_proto::v1::query_client::QueryClient<Authed>, CliError> {
    Ok(
        corral_proto::v1::query_client::QueryClient::with_interceptor(
            connect_channel(args).await?,
            with_token(args)?,
        ),
    )
}

/// How long the CLI waits for the registry to accept a connection, and to answer an
/// HTTP/2 ping on it: a peer that accepts but never answers is given up on after about
/// `KEEPALIVE * 2` rather than hanging the command.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(5);

/// A channel to the registry, for any of its services.
pub async fn connect_channel(args: &ClientArgs) -> Result<Channel, CliError> {
    let bad = |why: String| CliError::BadAddr {
        addr: args.addr.clone(),
        why,
    };
    args::registry_addr(&args.addr).map_err(bad)?;
    let endpoint = Endpoint::from_shared(args.addr.clone())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true);
    let tls = corral_common::tls::ClientTls {
        ca: args.ca.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
    };
    let endpoint = if tls.is_set() || args.addr.starts_with("https://") {
        let config = tls.config().map_err(CliError::Tls)?;
        endpoint
            .tls_config(config)
            .map_err(|source| CliError::Connect {
                addr: args.addr.clone(),
                source,
            })?
    } else {
        endpoint
    };
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| CliError::Connect {
            addr: args.addr.clone(),
            source,
        })?;
    Ok(channel)
}
