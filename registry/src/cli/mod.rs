//! The admin command line: a gRPC client of the registry.

pub mod node;
pub mod output;
pub mod package;
pub mod server;

use clap::{Args, ValueEnum};
use corral_proto::v1::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

/// Options every admin command takes.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// The registry's gRPC address.
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

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("registry address {addr:?} is not a valid URL (expected e.g. http://127.0.0.1:17890)")]
    BadAddr { addr: String },
    #[error("cannot reach the registry at {addr}: {}", chain(.source))]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("cannot read {}: {source}", .path.display())]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
    #[error("the token has characters that cannot be sent in a header")]
    BadToken,
}

impl CliError {
    /// Exit code: 2 for bad input, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::BadAddr { .. } | CliError::File { .. } | CliError::BadToken => 2,
            CliError::Rpc(s) if s.code() == tonic::Code::InvalidArgument => 2,
            _ => 1,
        }
    }
}

/// An error and its sources, joined: "transport error: connection refused".
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
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

/// A channel to the registry, for any of its services.
pub async fn connect_channel(args: &ClientArgs) -> Result<Channel, CliError> {
    let endpoint = Endpoint::from_shared(args.addr.clone())
        .map_err(|_| CliError::BadAddr {
            addr: args.addr.clone(),
        })?
        .connect_timeout(std::time::Duration::from_secs(5));
    let tls = corral_agent::tls::ClientTls {
        ca: args.ca.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
    };
    let endpoint = if tls.is_set() || args.addr.starts_with("https://") {
        let config = tls.config().map_err(|e| CliError::Failed(e.to_string()))?;
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
