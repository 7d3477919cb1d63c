//! Tracing set-up shared by both binaries: `RUST_LOG` wins, `-v` raises the level, and
//! `--log-format json` writes one JSON object per line for log shippers.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The logging flags of both binaries, flattened into their command lines.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log format.
    #[arg(long, env = "CORRAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// [`init_tracing`] as the flags say.
    pub fn init(&self) {
        init_tracing(self.verbose, self.log_format);
    }
}

/// Installs the global subscriber; logs go to stderr.
pub fn init_tracing(verbose: u8, format: LogFormat) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // hickory logs every DNS answer at info.
        EnvFilter::new(format!(
            "{level},h2=warn,hyper=warn,tower=warn,sqlx=warn,hickory_server=warn,hickory_net=warn,hickory_proto=warn"
        ))
    });
    // Colours only on a terminal: log files and journald get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
