//! `agent check` against a real agent, and `scripts/install.sh` into a temp dir.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use corral_tests::{Agent, Backend, Registry, RespawnedAgent, TestDb, alive, bin, wait_until};

const NODE: &str = "check-a";
const IP: &str = "127.0.0.2";

fn agent_check(data_dir: &Path) -> Output {
    Command::new(bin("agent"))
        .arg("check")
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("CORRAL_DATA_DIR")
        .output()
        .expect("run agent check")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn node_state(registry: &Registry) -> String {
    registry
        .node(NODE)
        .map(|n| n["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// A healthy agent passes; a SIGKILLed one fails the check, which brings it back: the
/// node is up again and `/health` answers (a second check passes).
#[test]
fn check_restarts_a_dead_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let registry = Registry::start(dir.path(), &db.url, &[]);
    let mut agent = Agent::start(dir.path(), &registry.addr(), NODE, IP);
    let _respawned = RespawnedAgent {
        data_dir: agent.data_dir.clone(),
    };
    wait_until(
        "the node to be up",
        Duration::from_secs(20),
        || match node_state(&registry).as_str() {
            "up" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(agent.data_dir.join("agent.run.json")).expect("agent.run.json"),
    )
    .expect("record is JSON");
    assert_eq!(record["pid"], agent.pid().expect("pid"), "{record}");
    assert_eq!(record["under_systemd"], false, "{record}");
    assert!(
        record["http"].as_str().is_some_and(|h| !h.ends_with(":0")),
        "{record}"
    );

    let out = agent_check(&agent.data_dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let old_pid = agent.pid().expect("pid");
    agent.kill();
    wait_until(
        "the node to be down",
        Duration::from_secs(10),
        || match node_state(&registry).as_str() {
            "down" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    let out = agent_check(&agent.data_dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("answers again"), "{}", text(&out));

    wait_until(
        "the node to be up again",
        Duration::from_secs(20),
        || match node_state(&registry).as_str() {
            "up" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    let out = agent_check(&agent.data_dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let pid: u32 = std::fs::read_to_string(agent.data_dir.join("agent.pid"))
        .expect("agent.pid")
        .trim()
        .parse()
        .expect("pid");
    assert_ne!(pid, old_pid);
    assert!(alive(pid));
}

/// Without a run record there is nothing to go by: exit 2, naming the file.
#[test]
fn check_without_a_record_is_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = agent_check(dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("agent.run.json"), "{}", text(&out));
}

fn install(prefix: &Path, bin_dir: &Path) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install.sh");
    Command::new("bash")
        .arg(script)
        .arg("--prefix")
        .arg(prefix)
        .arg("--bin-dir")
        .arg(bin_dir)
        .output()
        .expect("run install.sh")
}

/// `install.sh --prefix DIR --bin-dir DIR` puts everything under the prefix, twice over
/// without complaint, and its registry config template parses.
#[test]
fn install_into_a_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().join("root");
    let agent_bin = bin("agent");
    let bin_dir = agent_bin.parent().expect("bin dir");
    for round in 0..2 {
        let out = install(&prefix, bin_dir);
        assert!(out.status.success(), "round {round}: {}", text(&out));
    }
    for file in [
        "usr/local/bin/agent",
        "usr/local/bin/registry",
        "etc/systemd/system/corral-agent.service",
        "etc/systemd/system/corral-registry.service",
        "etc/corral/agent.toml.example",
        "etc/corral/registry.toml.example",
        "etc/cron.d/corral-agent-check",
    ] {
        assert!(prefix.join(file).is_file(), "{file} not installed");
    }
    let installed = std::fs::metadata(prefix.join("usr/local/bin/agent")).expect("agent");
    assert_eq!(
        installed.len(),
        std::fs::metadata(&agent_bin).expect("bin").len()
    );
    let cron = std::fs::read_to_string(prefix.join("etc/cron.d/corral-agent-check")).expect("cron");
    assert!(
        cron.contains(
            "* * * * * root /usr/local/bin/agent check --data-dir /var/lib/corral >/dev/null 2>&1"
        ),
        "{cron}"
    );
    let unit = std::fs::read_to_string(prefix.join("etc/systemd/system/corral-agent.service"))
        .expect("unit");
    assert!(
        unit.contains("KillMode=process")
            && unit.contains("Type=notify")
            && unit.contains("\nDelegate=yes\n"),
        "{unit}"
    );

    // The config templates must parse with every key uncommented (unknown keys are
    // errors).
    let path = uncommented(&prefix, dir.path(), "registry.toml");
    corral_registry::config::read_file::<corral_registry::config::FileConfig>(&path, true)
        .unwrap_or_else(|e| panic!("registry template: {e}"));
    let path = uncommented(&prefix, dir.path(), "agent.toml");
    let text = std::fs::read_to_string(&path).expect("agent.toml");
    assert!(text.contains("locator = "), "{text}");
    corral_agent::config::read_file(&path, true)
        .unwrap_or_else(|e| panic!("agent template: {e}\n{text}"));
}

/// `etc/corral/NAME.example` as installed under `prefix`, with every `# key = value`
/// line uncommented, written to `dir/NAME`.
fn uncommented(prefix: &Path, dir: &Path, name: &str) -> std::path::PathBuf {
    let template = std::fs::read_to_string(prefix.join(format!("etc/corral/{name}.example")))
        .expect("template");
    let text: String = template
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.contains(" = ") => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn install_help() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("--help")
        .output()
        .expect("run install.sh");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("--prefix"), "{}", text(&out));
}

/// Every file `docs/architecture.md` names exists (the page is where a newcomer looks
/// for things: a path that moved must be updated there).
#[test]
fn docs_name_files_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("docs/architecture.md")).expect("read page");
    let mut named = 0;
    for (i, part) in text.split('`').enumerate() {
        // Odd parts are inside backticks; paths have a slash and no spaces.
        if i % 2 == 0
            || part.contains(' ')
            || !part.contains('/')
            || part.starts_with('/')
            || part.starts_with("../")
        {
            continue;
        }
        named += 1;
        assert!(
            root.join(part).exists(),
            "docs/architecture.md names {part}, which does not exist"
        );
    }
    assert!(named > 40, "the page names files ({named})");
}
