//! Tracing set-up shared by both binaries: `RUST_LOG` wins, `-v` raises the level, and
//! `--log-format json` writes one JSON object per line for log shippers.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
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
