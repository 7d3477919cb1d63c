//! What both Corral binaries use, written once: the `agent` and the `registry` (serve,
//! dev and the admin CLI) call these instead of keeping copies.
//!
//! Layout:
//! * [`logging`] — `init_tracing`: `RUST_LOG`, `-v`, text or JSON lines on stderr.
//! * [`signal`] — signals by name (`"SIGHUP"` or `"HUP"`), and SIGTERM/SIGINT for `main`.
//! * [`notify`] — telling systemd `READY=1`, watchdog pings, `STOPPING=1`.
//! * [`health`] — asking a daemon's `/health` (`agent check`; the registry's readiness).
//! * [`tls`] — the client side of TLS: the registry's CA, our certificate for mTLS.
//! * [`archive`] — what a package may contain, and its size limits: the registry checks
//!   uploads, the agent checks again while it unpacks.
//! * [`metrics`] — Prometheus text for `/metrics`, gauges set at scrape time.
//! * [`config_file`] — reading a TOML config file, unknown keys refused.
//! * [`fs`] — reading a file with an error that names it; absolute paths.
//! * [`time`] — `now_ms`, the clock of every `*_ms` field.
//!
//! Not here: the name rules (`APP.SERVER.ADAPTER`, node names) and how messages quote
//! user input are in `corral_proto::{names, text}`, because the client library checks
//! them too and depends on `corral_proto` alone.

pub mod archive;
pub mod config_file;
pub mod fs;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod signal;
pub mod ticket;
pub mod time;
pub mod tls;
