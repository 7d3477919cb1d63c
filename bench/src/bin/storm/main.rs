//! Crash storm: a real `registry serve` and N real agents on one host (each a node of its
//! own on 127.0.0.x), running servers whose every instance exits with code 1 shortly
//! after it starts (`storm_child`), under the default restart policy. It measures the
//! registry while the fleet crash-loops: CPU (of one core, from /proc utime+stime), RSS,
//! reports received, events written, the events table's size against its retention, and
//! the p50/p99 latency of `ListNodes` and `ServerStatus` (what `registry node list` and
//! `registry server status APP.SERVER` call), probed every 100 ms each.
//!
//! Windows: `idle` (the agents joined, nothing deployed), then `ramp` (from the apply:
//! every instance runs through its quick failures and backoffs) and `steady` (the fleet
//! crash-looping: one retry per instance every `max_delay`). With `--baseline DIR`, the
//! same storm runs first with the binaries in DIR (e.g. main's), side by side.
//!
//!     cargo build --release -p corral-registry -p corral-agent -p corral-bench --bins
//!     target/release/storm                      # 10 nodes, 1,000 instances, 30 s windows
//!     target/release/storm --smoke              # 1 node, 20 instances, a few seconds (CI)

mod measure;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use corral_bench::procs::{become_subreaper, kill_groups_on_signal, run_checked, wait_for_port};
use corral_bench::supervisors::{Harness, Setup};
use corral_bench::{free_port, mib, raise_nofile};
use corral_proto::v1::admin_client::AdminClient;
use corral_proto::v1::{ApplyRequest, ListNodesRequest, NodeState};
use measure::{Db, Window, latency};
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    /// The directory of the `registry`, `agent` and `storm_child` binaries under test
    /// [default: this binary's directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Another build's directory (registry and agent), run first with the same storm.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Nodes, each a real agent on 127.0.0.(2+i).
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Instances in all: `instances / nodes` servers, each on every node.
    #[arg(long, default_value_t = 1000)]
    instances: usize,
    /// How long each window lasts.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long each instance runs before it exits with code 1.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    crash_after: Duration,
    /// The registry's `event_retention` (rows kept in the events table).
    #[arg(long, default_value_t = 20_000)]
    retention: u64,
    /// A MySQL server (mysql://USER[:PASS]@HOST[:PORT]): the registry uses a fresh
    /// database there, dropped after [default: a SQLite file].
    #[arg(long)]
    mysql: Option<String>,
    /// Where the temp dirs go [default: $TMPDIR or /tmp].
    #[arg(long)]
    tmp: Option<PathBuf>,
    /// The CI variant: 1 node, 20 instances, 3 s windows, no steady window; fails unless
    /// reports arrive, events are written and the admin CLI answers.
    #[arg(long)]
    smoke: bool,
}

/// One storm against one build.
struct Run {
    label: String,
    windows: Vec<Window>,
    /// Applies the registry refused as unavailable (busy) and that were made again.
    apply_retries: usize,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.nodes = 1;
        args.instances = 20;
        args.duration = Duration::from_secs(3);
    }
    if args.nodes == 0 || args.nodes > 250 || args.instances % args.nodes != 0 {
        bail!(
            "--nodes must be 1..=250 and divide --instances (got {} nodes, {} instances)",
            args.nodes,
            args.instances
        );
    }
    kill_groups_on_signal()?;
    become_subreaper()?;
    raise_nofile()?;
    let own_dir = std::env::current_exe()?
        .parent()
        .context("this binary has no directory")?
        .to_path_buf();
    let bin_dir = args.bin_dir.clone().unwrap_or(own_dir.clone());
    let child = own_dir.join("storm_child");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    if let Some(base) = &args.baseline {
        runs.push(rt.block_on(storm(&args, base, &child, "baseline"))?);
    }
    runs.push(rt.block_on(storm(&args, &bin_dir, &child, "this build"))?);
    print_tables(&args, &runs);
    if args.smoke {
        smoke_checks(&runs[runs.len() - 1])?;
    }
    Ok(())
}

/// Starts the fleet from `bins`, deploys the storm, measures each window.
async fn storm(args: &Args, bins: &Path, child: &Path, label: &str) -> anyhow::Result<Run> {
    let setup = Setup {
        registry: bins.join("registry"),
        agent: bins.join("agent"),
        child: child.to_path_buf(),
        tmp: args.tmp.clone().unwrap_or_else(std::env::temp_dir),
    };
    for exe in [&setup.registry, &setup.agent, &setup.child] {
        if !exe.is_file() {
            bail!("{} not found: build the binaries first", exe.display());
        }
    }
    let mut h = Harness::new(&format!("storm-{}", label.replace(' ', "-")), &setup)?;
    let dir = h.dir().to_path_buf();
    let mysql = match &args.mysql {
        Some(server) => Some(MySqlDb::create(server).await?),
        None => None,
    };
    let db_url = match &mysql {
        Some(m) => m.url.clone(),
        None => format!("sqlite://{}", dir.join("registry.db").display()),
    };
    let config = dir.join("registry.toml");
    std::fs::write(&config, format!("event_retention = {}\n", args.retention))?;
    let (grpc, http) = (free_port()?, free_port()?);
    let addr = format!("http://127.0.0.1:{grpc}");
    let registry_pid = h.spawn(
        Command::new(&setup.registry)
            .args(["serve", "--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--db", &db_url])
            .arg("--config")
            .arg(&config),
        "registry",
    )?;
    wait_for_port(grpc, Duration::from_secs(30))?;
    let nodes: Vec<String> = (0..args.nodes).map(|i| format!("storm-{i:03}")).collect();
    for (i, node) in nodes.iter().enumerate() {
        let ip = format!("127.0.0.{}", i + 2);
        h.spawn(
            Command::new(&setup.agent)
                .args(["run", "--locator", &addr, "--node", node])
                .args(["--advertise-ip", &ip])
                .args(["--http", &format!("{ip}:0"), "--dns", &format!("{ip}:0")])
                .args(["--allow-root", "--cgroup", "off", "--data-dir"])
                .arg(dir.join(node)),
            node,
        )?;
    }
    let channel = Channel::from_shared(addr.clone())?.connect().await?;
    let mut admin = AdminClient::new(channel.clone());
    wait_nodes_up(&mut admin, &mut h, args.nodes).await?;
    let db = Db::open(&db_url).await?;
    let first = "storm.s000".to_string();
    let mut windows = vec![
        measure::window(
            "idle",
            args.duration.min(Duration::from_secs(10)),
            registry_pid,
            http,
            &db,
            &channel,
            None,
        )
        .await?,
    ];
    let servers = args.instances / args.nodes;
    let node_list = nodes
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut apply_retries = 0;
    for s in 0..servers {
        let spec = format!(
            "app = \"storm\"\nserver = \"s{s:03}\"\nnodes = [{node_list}]\ncommand = [{child:?}, \"{ms}\"]\n",
            child = child.display().to_string(),
            ms = args.crash_after.as_millis(),
        );
        let request = ApplyRequest {
            spec_toml: spec,
            source: format!("s{s:03}.toml"),
            ..Default::default()
        };
        // Applies made while the storm already runs: a registry too busy to answer
        // (Unavailable) is retried and counted, not fatal.
        loop {
            match admin.apply(request.clone()).await {
                Ok(_) => break,
                Err(e) if e.code() == tonic::Code::Unavailable && apply_retries < 100 => {
                    apply_retries += 1;
                    eprintln!(
                        "{label}: apply storm.s{s:03} refused ({}); retrying",
                        e.message()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("apply storm.s{s:03}")),
            }
        }
    }
    let phases: &[&str] = if args.smoke {
        &["ramp"]
    } else {
        &["ramp", "steady"]
    };
    for phase in phases {
        windows.push(
            measure::window(
                phase,
                args.duration,
                registry_pid,
                http,
                &db,
                &channel,
                Some(&first),
            )
            .await?,
        );
        h.check_alive()?;
    }
    if args.smoke {
        // The real CLI, once each, as an operator would run it.
        for cli in [vec!["node", "list"], vec!["server", "status", "storm.s000"]] {
            run_checked(
                Command::new(&setup.registry)
                    .args(&cli)
                    .args(["--addr", &addr]),
            )
            .with_context(|| format!("registry {}", cli.join(" ")))?;
        }
    }
    drop(h);
    if let Some(m) = mysql {
        m.drop_db().await;
    }
    Ok(Run {
        label: label.to_string(),
        windows,
        apply_retries,
    })
}

async fn wait_nodes_up(
    admin: &mut AdminClient<Channel>,
    h: &mut Harness,
    n: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = admin
            .list_nodes(ListNodesRequest {})
            .await?
            .into_inner()
            .nodes;
        let up = nodes
            .iter()
            .filter(|n| n.state == i32::from(NodeState::Up))
            .count();
        if up == n {
            return Ok(());
        }
        h.check_alive()?;
        if Instant::now() > deadline {
            bail!("{up} of {n} nodes up after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fresh MySQL database for one run.
struct MySqlDb {
    server: String,
    name: String,
    url: String,
}

impl MySqlDb {
    async fn create(server: &str) -> anyhow::Result<MySqlDb> {
        use sqlx::{Connection, Executor};
        let server = server.trim_end_matches('/').to_string();
        let name = format!("corral_storm_{}", std::process::id());
        let mut conn = sqlx::MySqlConnection::connect(&server)
            .await
            .with_context(|| format!("connect to {server}"))?;
        conn.execute(format!("CREATE DATABASE `{name}`").as_str())
            .await?;
        Ok(MySqlDb {
            url: format!("{server}/{name}"),
            server,
            name,
        })
    }

    async fn drop_db(self) {
        use sqlx::{Connection, Executor};
        if let Ok(mut conn) = sqlx::MySqlConnection::connect(&self.server).await {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS `{}`", self.name).as_str())
                .await;
        }
    }
}

fn print_tables(args: &Args, runs: &[Run]) {
    println!(
        "\n{} nodes, {} instances ({} servers), each exits 1 after {:?}; default restart policy; windows of {:?}; event_retention {}; {}\n",
        args.nodes,
        args.instances,
        args.instances / args.nodes,
        args.crash_after,
        args.duration,
        args.retention,
        if args.mysql.is_some() {
            "MySQL"
        } else {
            "SQLite"
        },
    );
    println!(
        "| build | window | registry CPU (one core) | RSS max | crashes/s | reports/s received | events/s written | events rows (max) | node list p50 / p99 (n) | server status p50 / p99 (n) | health check p50 / p99 (n) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for run in runs {
        for w in &run.windows {
            println!(
                "| {} | {} ({:.0} s) | {:.1} % | {:.1} MiB | {:.1} | {} | {:.1} | {} | {} | {} | {} |",
                run.label,
                w.name,
                w.secs,
                w.cpu_percent,
                mib(w.rss_max),
                w.crashes_per_s,
                w.reports_per_s
                    .map_or("n/a".to_string(), |r| format!("{r:.1}")),
                w.events_per_s,
                w.event_rows_max,
                latency(&w.node_list),
                latency(&w.server_status),
                latency(&w.health),
            );
        }
    }
    if let [base, this] = runs {
        println!("\n| window | registry CPU, this build / baseline |");
        println!("| --- | --- |");
        for (b, t) in base.windows.iter().zip(&this.windows) {
            println!(
                "| {} | {:.2} |",
                t.name,
                t.cpu_percent / b.cpu_percent.max(0.01)
            );
        }
    }
    for run in runs {
        if run.apply_retries > 0 {
            println!(
                "\n{}: {} applies refused as unavailable during the storm, made again",
                run.label, run.apply_retries
            );
        }
        for w in &run.windows {
            if !w.probe_errors.is_empty() {
                println!(
                    "\n{} {}: {} admin calls failed, e.g. {}",
                    run.label,
                    w.name,
                    w.probe_errors.len(),
                    w.probe_errors[0]
                );
            }
        }
    }
}

/// What the CI smoke run insists on.
fn smoke_checks(run: &Run) -> anyhow::Result<()> {
    let ramp = run
        .windows
        .iter()
        .find(|w| w.name == "ramp")
        .context("no ramp window")?;
    if ramp.crashes_per_s <= 0.0 || ramp.events_per_s <= 0.0 {
        bail!("smoke: the storm produced no reports (no restarts or events recorded)");
    }
    if ramp.reports_per_s.is_some_and(|r| r <= 0.0) {
        bail!("smoke: the registry received no reports");
    }
    if let Some(w) = run.windows.iter().find(|w| !w.probe_errors.is_empty()) {
        bail!(
            "smoke: admin calls failed in {}: {}",
            w.name,
            w.probe_errors[0]
        );
    }
    if ramp.node_list.is_empty() || ramp.server_status.is_empty() {
        bail!("smoke: no admin call answered during the storm");
    }
    println!("smoke: ok");
    Ok(())
}
