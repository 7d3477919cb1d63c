//! What one window of the storm measures: the registry's CPU and RSS from `/proc`, the
//! latency of the two admin calls an operator makes during an incident, and what the
//! database and `/metrics` say was reported and written.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use corral_bench::{cpu_time, percentile, status_bytes};
use corral_proto::v1::admin_client::AdminClient;
use corral_proto::v1::{ListNodesRequest, ServerStatusRequest};
use sqlx::Row;
use tokio::sync::Mutex;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// How long each probe waits between two calls of the same kind.
const PROBE_GAP: Duration = Duration::from_millis(100);

/// Counters read at the start and the end of a window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Restarts summed over every instance, as the registry stored them.
    pub restarts: i64,
    /// The newest event id: events written = its growth.
    pub last_event: i64,
    /// Rows in the events table.
    pub event_rows: i64,
    /// `corral_registry_reports_received_total` (statuses and events), when the
    /// registry under test has that counter.
    pub reports: Option<f64>,
}

/// The database the registry writes, read beside it (SQLite: read-only).
pub struct Db {
    pool: sqlx::AnyPool,
}

impl Db {
    pub async fn open(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let url = match url.strip_prefix("sqlite://") {
            Some(path) => format!("sqlite://{path}?mode=ro"),
            None => url.to_string(),
        };
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await?;
        Ok(Db { pool })
    }

    pub async fn counts(&self, http_port: u16) -> anyhow::Result<Counts> {
        let row =
            sqlx::query("SELECT CAST(COALESCE(SUM(restarts), 0) AS SIGNED) AS r FROM instances")
                .fetch_one(&self.pool)
                .await;
        // SQLite has no SIGNED type name in CAST: it takes it as NUMERIC.
        let restarts: i64 = match row {
            Ok(r) => r.try_get("r")?,
            Err(_) => sqlx::query("SELECT COALESCE(SUM(restarts), 0) AS r FROM instances")
                .fetch_one(&self.pool)
                .await?
                .try_get("r")?,
        };
        let row = sqlx::query("SELECT COUNT(*) AS n, COALESCE(MAX(id), 0) AS m FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(Counts {
            restarts,
            last_event: row.try_get("m")?,
            event_rows: row.try_get("n")?,
            reports: scrape(http_port, "corral_registry_reports_received_total").await,
        })
    }
}

/// One sample of a Prometheus counter from `/metrics` (None when absent).
async fn scrape(port: u16, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// Latencies of the admin calls, taken while a window runs.
#[derive(Default)]
pub struct Probes {
    pub node_list: Vec<Duration>,
    pub server_status: Vec<Duration>,
    /// The gRPC health check: the same server and connection, no state read, so the
    /// floor under the other two on this machine at that moment.
    pub health: Vec<Duration>,
    pub errors: Vec<String>,
}

/// Calls `ListNodes`, the health check and (given a server) `ServerStatus(server)` in a
/// loop each, [`PROBE_GAP`] apart, until `stop`.
pub fn start_probes(
    channel: Channel,
    server: Option<&str>,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Probes>>, Vec<tokio::task::JoinHandle<()>>) {
    let probes = Arc::new(Mutex::new(Probes::default()));
    let mut tasks = Vec::new();
    let kinds: &[u8] = if server.is_some() {
        &[0, 1, 2]
    } else {
        &[0, 2]
    };
    let server = server.unwrap_or_default().to_string();
    for &kind in kinds {
        let mut admin = AdminClient::new(channel.clone());
        let mut health = HealthClient::new(channel.clone());
        let (server, stop, probes) = (server.clone(), stop.clone(), probes.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let result = match kind {
                    0 => admin.list_nodes(ListNodesRequest {}).await.map(|_| ()),
                    1 => {
                        let req = ServerStatusRequest {
                            server: server.clone(),
                        };
                        admin.server_status(req).await.map(|_| ())
                    }
                    _ => {
                        let req = HealthCheckRequest {
                            service: String::new(),
                        };
                        health.check(req).await.map(|_| ())
                    }
                };
                let took = t.elapsed();
                let mut p = probes.lock().await;
                match result {
                    Ok(()) if kind == 0 => p.node_list.push(took),
                    Ok(()) if kind == 1 => p.server_status.push(took),
                    Ok(()) => p.health.push(took),
                    Err(e) => p.errors.push(e.message().to_string()),
                }
                drop(p);
                tokio::time::sleep(PROBE_GAP).await;
            }
        }));
    }
    (probes, tasks)
}

/// The figures of one window.
pub struct Window {
    pub name: String,
    pub secs: f64,
    pub cpu_percent: f64,
    pub rss_max: u64,
    pub crashes_per_s: f64,
    pub reports_per_s: Option<f64>,
    pub events_per_s: f64,
    pub event_rows_max: i64,
    pub node_list: Vec<Duration>,
    pub server_status: Vec<Duration>,
    pub health: Vec<Duration>,
    pub probe_errors: Vec<String>,
}

/// Measures the registry (`pid`) for `length`, probing the admin calls throughout
/// (`ServerStatus` of `server`, once there is one).
pub async fn window(
    name: &str,
    length: Duration,
    pid: u32,
    http_port: u16,
    db: &Db,
    channel: &Channel,
    server: Option<&str>,
) -> anyhow::Result<Window> {
    let before = db.counts(http_port).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let (probes, tasks) = start_probes(channel.clone(), server, stop.clone());
    let cpu0 = cpu_time(pid)?;
    let t0 = Instant::now();
    let mut rss_max = 0;
    let mut event_rows_max = before.event_rows;
    while t0.elapsed() < length {
        tokio::time::sleep(Duration::from_millis(500).min(length)).await;
        rss_max = rss_max.max(status_bytes(pid, "VmRSS")?);
        event_rows_max = event_rows_max.max(db.counts(http_port).await?.event_rows);
    }
    let cpu = cpu_time(pid)? - cpu0;
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let after = db.counts(http_port).await?;
    let mut p = std::mem::take(&mut *probes.lock().await);
    p.node_list.sort();
    p.server_status.sort();
    p.health.sort();
    Ok(Window {
        name: name.to_string(),
        secs,
        cpu_percent: cpu.as_secs_f64() / secs * 100.0,
        rss_max,
        crashes_per_s: (after.restarts - before.restarts) as f64 / secs,
        reports_per_s: after
            .reports
            .zip(before.reports)
            .map(|(a, b)| (a - b) / secs),
        events_per_s: (after.last_event - before.last_event) as f64 / secs,
        event_rows_max: event_rows_max.max(after.event_rows),
        node_list: p.node_list,
        server_status: p.server_status,
        health: p.health,
        probe_errors: p.errors,
    })
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `p50 / p99 ms (n)` of sorted latencies.
pub fn latency(sorted: &[Duration]) -> String {
    format!(
        "{:.1} / {:.1} ms ({})",
        ms(percentile(sorted, 50.0)),
        ms(percentile(sorted, 99.0)),
        sorted.len()
    )
}
