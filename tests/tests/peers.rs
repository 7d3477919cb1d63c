//! Peer-assisted distribution: nodes get a package from each other, as the registry says;
//! a corrupt peer is caught and skipped, a peer that dies mid-transfer is replaced, a node
//! that joins during a rollout gets the release from the nodes that have it.
//!
//! The registry sends packages at 2 MiB/s here (`--download-rate`), so transfers last
//! long enough to act during them, and the registry serves 2 nodes per package
//! (`corral_registry::swarm::REGISTRY_FANOUT`): a third node gets a peer.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use corral_tests::lookup::agent_http;
use corral_tests::packages::{Entry, sha256, tar_gz};
use corral_tests::{Agent, Backend, Registry, TestDb, http_get, wait_until};

const S: Duration = Duration::from_secs(1);

struct Fleet {
    registry: Registry,
    agents: Vec<Agent>,
    ips: Vec<String>,
    _db: TestDb,
    dir: tempfile::TempDir,
}

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

impl Fleet {
    /// A registry sending 2 MiB/s per download and agents node-a… (the first `n`).
    fn start(n: usize) -> Fleet {
        Fleet::start_at(n, "2 MiB")
    }

    /// The same, sending `rate` per download.
    fn start_at(n: usize, rate: &str) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
        let registry = Registry::start(dir.path(), &db.url, &["--download-rate", rate]);
        let ips = corral_tests::test_ips(NODES.len());
        let mut f = Fleet {
            registry,
            agents: Vec::new(),
            ips,
            _db: db,
            dir,
        };
        for _ in 0..n {
            f.add_agent();
        }
        f
    }

    /// Starts the next agent and waits until its node is up.
    fn add_agent(&mut self) {
        let i = self.agents.len();
        let agent = Agent::start(
            self.dir.path(),
            &self.registry.addr(),
            NODES[i],
            &self.ips[i],
        );
        self.registry
            .wait_node(NODES[i], "up", 20 * S, |v| v["state"] == "up");
        self.agents.push(agent);
    }

    fn agent(&self, node: &str) -> &Agent {
        self.agents.iter().find(|a| a.node == node).expect("agent")
    }

    fn upload(&self, version: &str, bytes: &[u8]) {
        self.registry.must_upload("demo.app", version, bytes);
    }

    fn deploy(&self, nodes: &[&str], version: &str) {
        let nodes: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
        self.registry.apply(&format!(
            "app = \"demo\"\nserver = \"app\"\nnodes = [{}]\ncommand = [\"bin/server\"]\n\
             package = \"{version}\"\n[stop]\ntimeout = \"2s\"\n",
            nodes.join(", ")
        ));
    }

    /// Waits until `node` runs `version`, and checks its release holds `data`.
    fn wait_release(&self, node: &str, version: &str, data: &[u8]) {
        self.registry.wait_instance(
            "demo.app",
            node,
            &format!("running {version}"),
            60 * S,
            |i| i["state"] == "running" && i["version"] == version,
        );
        let dir = self.agent(node).instance_dir("demo.app");
        assert_eq!(
            std::fs::read(dir.join("releases").join(version).join("data.bin")).expect("data"),
            data,
            "{node} holds the release"
        );
        assert!(
            !dir.join("releases")
                .join(format!("{version}.partial"))
                .exists()
        );
    }

    fn partial(&self, node: &str, pkg: &[u8]) -> std::path::PathBuf {
        self.agent(node)
            .data_dir
            .join("cache")
            .join(format!("{}.partial", sha256(pkg)))
    }

    fn wait_partial(&self, node: &str, pkg: &[u8], past: u64) {
        let partial = self.partial(node, pkg);
        wait_until(
            &format!("{node} downloading past {past} bytes"),
            60 * S,
            || match std::fs::metadata(&partial) {
                Ok(m) if m.len() > past => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
}

/// A package of `mib` MiB of random bytes (incompressible), in `data.bin`.
fn big_release(mib: usize) -> (Vec<u8>, Vec<u8>) {
    let mut noise = vec![0u8; mib << 20];
    rand::fill(&mut noise[..]);
    let script = b"#!/bin/sh\nexec sleep 1000\n";
    let pkg = tar_gz(&[
        Entry::Dir("bin"),
        Entry::File("bin/server", script, 0o755),
        Entry::File("data.bin", &noise, 0o644),
    ]);
    (pkg, noise)
}

/// A counter's value in Prometheus text (0 when absent).
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn agent_metrics(a: &Agent) -> String {
    http_get(agent_http(a), "/metrics").expect("agent metrics")
}

fn registry_metrics(r: &Registry) -> String {
    let addr = format!("127.0.0.1:{}", r.http_port).parse().expect("addr");
    http_get(addr, "/metrics").expect("registry metrics")
}

/// Overwrites bytes of a file in place.
fn corrupt(path: &Path, at: u64) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(b"corrupted by the test").expect("write");
}

/// node-a and node-b get the package from the registry; node-a's cache file is then
/// corrupted on disk. node-c is sent to node-a first: it catches the bad chunk, reports
/// and counts it, and finishes from node-b, with the right release.
#[test]
fn a_corrupt_peer_is_detected_and_skipped() {
    let f = Fleet::start(3);
    let (pkg, data) = big_release(3);
    f.upload("1.0.0", &pkg);
    // node-a first: the first member of the package's swarm, the first peer given.
    f.deploy(&["node-a"], "1.0.0");
    f.wait_release("node-a", "1.0.0", &data);
    f.deploy(&["node-a", "node-b"], "1.0.0");
    f.wait_release("node-b", "1.0.0", &data);
    corrupt(
        &f.agent("node-a").data_dir.join("cache").join(sha256(&pkg)),
        (1 << 20) + 4096,
    );

    f.deploy(&["node-a", "node-b", "node-c"], "1.0.0");
    f.wait_release("node-c", "1.0.0", &data);
    let c = f.agent("node-c");
    let log = c.log_text();
    assert!(
        log.contains("a peer sent corrupt bytes"),
        "node-c logs the corrupt peer:\n{log}"
    );
    assert!(log.contains("node-a"), "and names it:\n{log}");
    let metrics = agent_metrics(c);
    assert_eq!(
        counter(&metrics, "corral_agent_peer_corrupt_total"),
        1,
        "{metrics}"
    );
    assert!(
        counter(&metrics, "corral_agent_peer_bytes_received_total") >= pkg.len() as u64 - (1 << 20),
        "node-c got the package from peers:\n{metrics}"
    );
    let served = counter(
        &agent_metrics(f.agent("node-b")),
        "corral_agent_peer_bytes_served_total",
    );
    assert!(served > 0, "node-b served it");
    let registry = registry_metrics(&f.registry);
    assert_eq!(
        counter(
            &registry,
            "corral_registry_package_sources_total{kind=\"corrupt\"}"
        ),
        1,
        "{registry}"
    );
    assert!(f.registry.log_text().contains("a peer sent corrupt bytes"));
}

/// node-c relays the package from a node that is still receiving it from the registry
/// (at 512 KiB/s: 20 s for the package); that node's agent is killed (its whole process
/// group) mid-transfer. node-c gets the rest from the other node, resuming where it was,
/// with the right release.
#[test]
fn a_peer_that_dies_mid_transfer_is_replaced() {
    let mut f = Fleet::start_at(3, "512 KiB");
    let (pkg, data) = big_release(10);
    f.upload("1.0.0", &pkg);
    f.deploy(&["node-a", "node-b"], "1.0.0");
    f.wait_partial("node-a", &pkg, 1 << 20);
    f.wait_partial("node-b", &pkg, 1 << 20);
    f.deploy(&["node-a", "node-b", "node-c"], "1.0.0");
    let parent = wait_until("node-c downloading from a peer", 30 * S, || {
        let log = f.agent("node-c").log_text();
        let line = log
            .lines()
            .find(|l| l.contains("downloading from a peer"))
            .ok_or("not yet")?;
        ["node-a", "node-b"]
            .into_iter()
            .find(|n| line.contains(n))
            .ok_or_else(|| format!("no peer named in {line}"))
    });
    f.wait_partial("node-c", &pkg, 1 << 20);
    let got = std::fs::metadata(f.partial("node-c", &pkg))
        .expect("mid-transfer")
        .len();
    assert!(got < pkg.len() as u64, "mid-transfer ({got} bytes)");
    let i = f
        .agents
        .iter()
        .position(|a| a.node == parent)
        .expect("parent");
    f.agents[i].kill();

    f.wait_release("node-c", "1.0.0", &data);
    let c = f.agent("node-c");
    let log = c.log_text();
    assert!(
        log.contains("a peer failed"),
        "node-c moved on from {parent}:\n{log}"
    );
    let metrics = agent_metrics(c);
    assert!(
        counter(&metrics, "corral_agent_peer_failed_total") >= 1,
        "{metrics}"
    );
    assert!(
        counter(&metrics, "corral_agent_peer_bytes_received_total") > 0,
        "{metrics}"
    );
}

/// A node that joins while two others are installing a release gets it from them, and
/// the registry sends the package about twice, not three times.
#[test]
fn a_node_that_joins_during_a_rollout_gets_the_release() {
    let mut f = Fleet::start(2);
    let (pkg, data) = big_release(6);
    f.upload("1.0.0", &pkg);
    f.deploy(&["node-a", "node-b"], "1.0.0");
    f.wait_partial("node-a", &pkg, 1 << 20);
    f.add_agent();
    f.deploy(&["node-a", "node-b", "node-c"], "1.0.0");
    for node in NODES {
        f.wait_release(node, "1.0.0", &data);
    }
    let c = agent_metrics(f.agent("node-c"));
    assert_eq!(
        counter(&c, "corral_agent_peer_bytes_received_total"),
        pkg.len() as u64,
        "node-c got it all from peers:\n{c}"
    );
    let sent = counter(
        &registry_metrics(&f.registry),
        "corral_registry_package_bytes_sent_total",
    );
    assert!(
        sent <= 2 * pkg.len() as u64 + (2 << 20),
        "the registry sent {sent} bytes of a {}-byte package to 3 nodes",
        pkg.len()
    );
}
