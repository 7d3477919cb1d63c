//! Corral's side: a fresh registry (SQLite) and agents on 127.0.0.2…, the package
//! uploaded with `registry package upload`, then a spec applied that names the release;
//! timed from the `Apply` call until every node holds the verified, unpacked release
//! (`releases/1.0.0.sha256` is written after the release is renamed into place and
//! synced), polled every 20 ms.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use corral_bench::cpu_time;

use crate::fleet::{Fleet, apply, log_tail, status};
use crate::package::Package;

pub struct Measured {
    pub wall: Duration,
    /// Every agent's CPU over the distribution, summed.
    pub agents_cpu: Duration,
    pub registry_cpu: Duration,
    /// Package bytes the registry sent.
    pub egress: u64,
    /// Bytes nodes got from each other.
    pub peer_bytes: u64,
}

/// GET `path` over HTTP/1.0 on 127.0.0.1:`port`; the body.
fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut conn = std::net::TcpStream::connect(addr)?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn agent_http(data_dir: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(data_dir.join("agent.run.json"))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    Ok(v["http"]
        .as_str()
        .context("no http in the run record")?
        .to_string())
}

pub async fn run(
    registry: &Path,
    agent: &Path,
    pkg: &Package,
    nodes: usize,
    timeout: Duration,
    dir: &Path,
) -> anyhow::Result<Measured> {
    std::fs::create_dir_all(dir)?;
    let mut fleet = Fleet::start(registry, agent, dir)?;
    for i in 0..nodes {
        fleet.add_agent(&format!("n{:02}", i + 1), &format!("127.0.0.{}", i + 2))?;
    }
    let mut admin = fleet.admin().await?;
    fleet
        .wait_nodes_up(&mut admin, Duration::from_secs(60))
        .await?;
    let out = Command::new(registry)
        .args(["package", "upload"])
        .arg(&pkg.path)
        .args(["--server", "bench.dist", "--version", "1.0.0"])
        .args(["--addr", &fleet.addr])
        .output()
        .context("run registry package upload")?;
    if !out.status.success() {
        bail!(
            "upload failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Let the joins settle (first desired state, first reports).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = format!("127.0.0.1:{}", fleet.http);
    let egress0 = counter(
        &http_get(&metrics, "/metrics")?,
        "corral_registry_package_bytes_sent_total",
    );
    let reg_pid = fleet.registry.pid();
    let pids: Vec<u32> = fleet.agents.iter().map(|a| a.proc.pid()).collect();
    let cpu0: Vec<Duration> = pids
        .iter()
        .map(|&p| cpu_time(p))
        .collect::<Result<_, _>>()?;
    let reg0 = cpu_time(reg_pid)?;
    let names: Vec<String> = fleet
        .agents
        .iter()
        .map(|a| format!("{:?}", a.node))
        .collect();
    let spec = format!(
        "app = \"bench\"\nserver = \"dist\"\nnodes = [{}]\npackage = \"1.0.0\"\ncommand = [\"bin/server\"]\n",
        names.join(", ")
    );
    nix::unistd::sync();
    let started = Instant::now();
    apply(&mut admin, &spec).await?;
    let marks: Vec<_> = fleet
        .agents
        .iter()
        .map(|a| {
            a.data_dir
                .join("instances/bench.dist/releases/1.0.0.sha256")
        })
        .collect();
    let wall = loop {
        if marks.iter().all(|m| m.exists()) {
            break started.elapsed();
        }
        if started.elapsed() > timeout {
            let ends: Vec<String> = fleet
                .agents
                .iter()
                .map(|a| format!("{}:\n{}", a.node, log_tail(&a.proc.log, 10)))
                .collect();
            bail!(
                "not every node held the release within {timeout:?}:\n{}",
                ends.join("\n")
            );
        }
        fleet.check_alive()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut agents_cpu = Duration::ZERO;
    for (&p, c0) in pids.iter().zip(&cpu0) {
        agents_cpu += cpu_time(p)? - *c0;
    }
    let registry_cpu = cpu_time(reg_pid)? - reg0;
    let egress = counter(
        &http_get(&metrics, "/metrics")?,
        "corral_registry_package_bytes_sent_total",
    ) - egress0;
    // Then every instance runs the release (not timed), and its process is noted so that
    // it is stopped with the fleet.
    loop {
        let instances = status(&mut admin, "bench.dist").await?;
        fleet.note_services(&instances);
        let running = instances
            .iter()
            .filter(|i| i.state == i32::from(corral_proto::v1::InstanceState::Running))
            .count();
        if running == nodes {
            break;
        }
        if started.elapsed() > timeout {
            bail!("{running} of {nodes} instances running within {timeout:?}");
        }
        fleet.check_alive()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut peer_bytes = 0;
    for a in &fleet.agents {
        let text = http_get(&agent_http(&a.data_dir)?, "/metrics")?;
        peer_bytes += counter(&text, "corral_agent_peer_bytes_received_total");
    }
    drop(admin);
    drop(fleet);
    std::fs::remove_dir_all(dir)?;
    Ok(Measured {
        wall,
        agents_cpu,
        registry_cpu,
        egress,
        peer_bytes,
    })
}
