//! One cgroup per instance, on this host's real cgroup file systems: memory limits and
//! OOM kills named `oom`, a stop that leaves no double-forked daemon (also after an agent
//! restart), a pids limit that holds a fork bomb, a CPU limit that throttles, usage in
//! `server status` and `/metrics`, and `[resources]` refused for a node without cgroups.
//!
//! On a hybrid host (v1 controllers, a cgroup2 mount without them) the limits go through
//! v1 and the kill through the cgroup2 `cgroup.kill`; on pure v2 all of it through v2.
//! Each test skips, saying so, on a host whose cgroups the tests cannot write.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use corral_tests::lookup::agent_http;
use corral_tests::{Agent, Backend, Registry, TestDb, alive, cgroups, http_get, wait_until};
use serde_json::Value;

const S: Duration = Duration::from_secs(1);

struct One {
    registry: Registry,
    agent: Agent,
    _db: TestDb,
    dir: tempfile::TempDir,
}

fn one(agent_args: &[&str]) -> One {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let registry = Registry::start(dir.path(), &db.url, &[]);
    let ip = corral_tests::test_ips(1).remove(0);
    let data = dir.path().join("agent-node-a");
    let agent = Agent::start_with_args(&registry.addr(), "node-a", &ip, &data, agent_args);
    registry.wait_node("node-a", "node-a up", 20 * S, |n| n["state"] == "up");
    One {
        registry,
        agent,
        _db: db,
        dir,
    }
}

/// False (and says why) when this host's cgroups cannot be written by the tests.
fn cgroups_here() -> bool {
    let ok = cgroups::usable();
    if !ok {
        eprintln!("SKIPPED: this host's cgroup file systems are not writable by the tests");
    }
    ok
}

fn spec(name: &str, script: &str, extra: &str) -> String {
    format!(
        "app = \"demo\"\nserver = \"{name}\"\nnodes = [\"node-a\"]\n\
         command = [\"/bin/bash\", \"-c\", {script:?}]\n{extra}"
    )
}

fn pid_of(i: &Value) -> u32 {
    i["pid"].as_u64().unwrap_or(0) as u32
}

fn read_pid(path: &Path) -> Result<u32, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .trim()
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn metric(text: &str, name: &str, server: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.starts_with(&format!("{name}{{")) && l.contains(&format!("server=\"{server}\""))
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn memory_past_the_limit_is_oom_killed_reported_and_restarted() {
    if !cgroups_here() {
        return;
    }
    let f = one(&[]);
    // bash keeps what the pipe gives it: 200 MB, past a 32 MiB limit.
    let script = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}";
    f.registry.apply(&spec(
        "hog",
        script,
        "[resources]\nmemory = \"32MiB\"\n[restart]\ninitial_delay = \"200ms\"\nmax_delay = \"2s\"\n",
    ));
    let i = f
        .registry
        .wait_instance("demo.hog", "node-a", "OOM-killed twice", 60 * S, |i| {
            i["restarts"].as_u64().unwrap_or(0) >= 2
                && i["last_error"].as_str().unwrap_or("").starts_with("oom")
        });
    let error = i["last_error"].as_str().unwrap_or("");
    assert!(error.contains("memory limit 32.0 MiB"), "{i}");
    assert!(error.contains("signal SIGKILL"), "{i}");
    // The policy applied as to any quick failure: backoff between tries.
    wait_until("an oom exit and a backoff in the events", 30 * S, || {
        let events = f.registry.events("demo.hog");
        let oom = events.iter().any(|e| {
            e["reason"]
                .as_str()
                .unwrap_or("")
                .contains("oom: killed by the kernel's OOM killer")
        });
        let backoff = events.iter().any(|e| e["to"] == "backoff");
        if oom && backoff {
            Ok(())
        } else {
            Err(format!("{events:?}"))
        }
    });
    let http = agent_http(&f.agent);
    wait_until("the OOM kills in /metrics", 20 * S, || {
        let text = http_get(http, "/metrics")?;
        match metric(&text, "corral_agent_instance_oom_kills", "hog") {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(format!("{other:?} in {text}")),
        }
    });
}

#[test]
fn stop_leaves_no_double_forked_daemon_also_after_an_agent_restart() {
    if !cgroups_here() {
        return;
    }
    let mut f = one(&[]);
    // The daemon leaves the service's session and group, and ignores SIGTERM: only the
    // cgroup still holds it, and only a kill after the grace period ends it.
    let script = "(setsid bash -c 'trap \"\" TERM; echo $$ > data/daemon.pid; exec sleep 100000' &); exec sleep 100000";
    let toml = spec("forker", script, "[stop]\ntimeout = \"500ms\"\n");
    f.registry.apply(&toml);
    let pid_file = f.agent.instance_dir("demo.forker").join("data/daemon.pid");
    let mut daemon = 0;
    for round in ["a plain stop", "a stop after an agent restart"] {
        let _ = std::fs::remove_file(&pid_file);
        if daemon != 0 {
            f.registry.cli(&["server", "start", "demo.forker"]);
        }
        f.registry
            .wait_instance("demo.forker", "node-a", "running", 30 * S, |i| {
                i["state"] == "running"
            });
        daemon = wait_until("the daemon's pid", 20 * S, || read_pid(&pid_file));
        assert!(alive(daemon), "{round}: daemon {daemon} runs");
        let sid =
            nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(daemon as i32))).expect("sid");
        assert_eq!(
            sid.as_raw() as u32,
            daemon,
            "{round}: the daemon leads a session of its own"
        );
        if round.contains("restart") {
            let before = pid_of(
                &f.registry
                    .instance("demo.forker", "node-a")
                    .expect("instance"),
            );
            f.agent.restart();
            f.registry
                .wait_node("node-a", "back up", 20 * S, |n| n["state"] == "up");
            let i = f
                .registry
                .wait_instance("demo.forker", "node-a", "adopted", 20 * S, |i| {
                    i["state"] == "running" && pid_of(i) == before
                });
            assert_eq!(pid_of(&i), before, "{round}: adopted, not restarted");
        }
        let t0 = Instant::now();
        let out = f.registry.cli(&["server", "stop", "demo.forker"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        f.registry
            .wait_instance("demo.forker", "node-a", "stopped", 30 * S, |i| {
                i["state"] == "stopped"
            });
        assert!(
            !alive(daemon),
            "{round}: daemon {daemon} is gone once stopped"
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(500),
            "{round}: after the grace period"
        );
        let dir = cgroups::instance_dir(&f.agent.data_dir, "node-a", "demo.forker", "v2")
            .or_else(|| {
                cgroups::instance_dir(&f.agent.data_dir, "node-a", "demo.forker", "freezer")
            })
            .expect("a membership hierarchy");
        wait_until("the stopped instance's cgroup removed", 10 * S, || {
            if dir.exists() {
                Err(format!("{} still exists", dir.display()))
            } else {
                Ok(())
            }
        });
    }
}

#[test]
fn a_fork_bomb_stays_within_pids_and_the_rest_stays_healthy() {
    if !cgroups_here() {
        return;
    }
    let f = one(&[]);
    f.registry.apply(&spec("calm", "exec sleep 100000", ""));
    let calm = f
        .registry
        .wait_instance("demo.calm", "node-a", "running", 30 * S, |i| {
            i["state"] == "running"
        });
    // Forks without end; bash retries a fork that fails.
    f.registry.apply(&spec(
        "bomb",
        "while true; do sleep 1000 & done",
        "[resources]\npids = 32\ncpu = 0.3\n[stop]\ntimeout = \"200ms\"\n",
    ));
    f.registry
        .wait_instance("demo.bomb", "node-a", "running", 30 * S, |i| {
            i["state"] == "running"
        });
    let dir = cgroups::instance_dir(&f.agent.data_dir, "node-a", "demo.bomb", "pids")
        .expect("pids cgroup");
    wait_until("the bomb at its pids limit", 30 * S, || {
        let events = std::fs::read_to_string(dir.join("pids.events")).unwrap_or_default();
        if events
            .lines()
            .any(|l| l.starts_with("max ") && l != "max 0")
        {
            Ok(())
        } else {
            Err(events)
        }
    });
    let http = agent_http(&f.agent);
    for _ in 0..10 {
        let n = cgroups::pids_under(&dir).len();
        assert!(n <= 32, "{n} processes in the bomb's cgroup");
        let current: u64 = std::fs::read_to_string(dir.join("pids.current"))
            .expect("pids.current")
            .trim()
            .parse()
            .expect("a number");
        assert!(current <= 32, "pids.current {current}");
        http_get(http, "/health").expect("the agent answers");
        std::thread::sleep(Duration::from_millis(100));
    }
    let i = f.registry.instance("demo.calm", "node-a").expect("calm");
    assert_eq!(
        (i["state"].as_str(), pid_of(&i)),
        (Some("running"), pid_of(&calm)),
        "{i}"
    );
    f.registry.cli(&["server", "stop", "demo.bomb"]);
    f.registry
        .wait_instance("demo.bomb", "node-a", "stopped", 30 * S, |i| {
            i["state"] == "stopped"
        });
    assert!(
        !dir.exists() || cgroups::pids_under(&dir).is_empty(),
        "the bomb is gone"
    );
}

#[test]
fn a_cpu_limit_throttles_and_usage_shows_in_status_and_metrics() {
    if !cgroups_here() {
        return;
    }
    let f = one(&[]);
    f.registry.apply(&spec(
        "burner",
        "while :; do :; done",
        "[resources]\ncpu = 0.5\nmemory = \"64MiB\"\ncpu_weight = 50\npids = 64\n",
    ));
    f.registry
        .wait_instance("demo.burner", "node-a", "running", 30 * S, |i| {
            i["state"] == "running"
        });
    let http = agent_http(&f.agent);
    let sample = || -> Result<(f64, f64), String> {
        let text = http_get(http, "/metrics")?;
        let cpu = metric(&text, "corral_agent_instance_cpu_seconds", "burner");
        let throttled = metric(
            &text,
            "corral_agent_instance_cpu_throttled_seconds",
            "burner",
        );
        cpu.zip(throttled)
            .ok_or_else(|| format!("no usage in {text}"))
    };
    let (cpu0, thr0) = wait_until("usage in /metrics", 20 * S, sample);
    let t0 = Instant::now();
    let (cpu1, thr1) = wait_until("throttled time growing", 30 * S, || {
        let (cpu, thr) = sample()?;
        if thr > thr0 && t0.elapsed() >= 2 * S {
            Ok((cpu, thr))
        } else {
            Err(format!("throttled {thr0} -> {thr}"))
        }
    });
    let share = (cpu1 - cpu0) / t0.elapsed().as_secs_f64();
    assert!(share < 0.65, "a 0.5-core limit let it use {share:.2} cores");
    assert!(thr1 > thr0, "throttled {thr0} -> {thr1}");
    let text = http_get(http, "/metrics").expect("metrics");
    assert!(
        text.contains("node=\"node-a\",instance=\"demo.burner@node-a\""),
        "labels: {text}"
    );
    // The registry shows the same figures, from the agent's heartbeats.
    let i = f
        .registry
        .wait_instance("demo.burner", "node-a", "usage", 20 * S, |i| {
            i["usage"]["cpu_seconds"].as_f64().unwrap_or(0.0) > 0.0
                && i["usage"]["memory_bytes"].as_u64().unwrap_or(0) > 0
                && i["usage"]["pids"].as_u64().unwrap_or(0) >= 1
        });
    assert!(
        i["usage"]["memory_peak_bytes"].as_u64().unwrap_or(0)
            >= i["usage"]["memory_bytes"].as_u64().unwrap_or(0),
        "{i}"
    );
    let out = f.registry.cli(&["server", "status", "demo.burner"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("CPU") && table.contains("MEMORY") && table.contains("PIDS"),
        "{table}"
    );
    assert!(table.contains(" (peak "), "{table}");
    let node = f.registry.json(&["node", "show", "node-a"]);
    assert_eq!(node["cgroups"], true, "{node}");
    let listed = corral_tests::find(&node["instances"], "server", "demo.burner").expect("instance");
    assert!(listed["usage"]["pids"].as_u64().unwrap_or(0) >= 1, "{node}");
    // And the registry's /metrics, labelled by app, server, node and instance.
    let registry_http = SocketAddr::from(([127, 0, 0, 1], f.registry.http_port));
    let text = wait_until("usage in the registry's /metrics", 20 * S, || {
        let text = http_get(registry_http, "/metrics")?;
        let memory = metric(&text, "corral_registry_instance_memory_bytes", "burner");
        let cpu = metric(&text, "corral_registry_instance_cpu_seconds", "burner");
        match (memory, cpu) {
            (Some(m), Some(c)) if m > 0.0 && c > 0.0 => Ok(text),
            _ => Err(text),
        }
    });
    assert!(
        text.contains(
            "corral_registry_instance_pids{app=\"demo\",server=\"burner\",node=\"node-a\",instance=\"demo.burner@node-a\"}"
        ),
        "{text}"
    );
    // The limits are the ones written.
    let cpu_dir =
        cgroups::instance_dir(&f.agent.data_dir, "node-a", "demo.burner", "cpu").expect("cpu");
    let (quota, max) = (
        std::fs::read_to_string(cpu_dir.join("cpu.cfs_quota_us")).unwrap_or_default(),
        std::fs::read_to_string(cpu_dir.join("cpu.max")).unwrap_or_default(),
    );
    assert!(
        quota.trim() == "50000" || max.starts_with("50000 100000"),
        "quota {quota:?} max {max:?}"
    );
}

#[test]
fn a_node_without_cgroups_refuses_resources_at_apply() {
    let f = one(&["--cgroup", "off"]);
    let node = f.registry.json(&["node", "show", "node-a"]);
    assert_eq!(node["cgroups"], false, "{node}");
    assert!(
        node["cgroups_note"]
            .as_str()
            .unwrap_or("")
            .contains("--cgroup off"),
        "{node}"
    );
    let out = f.registry.try_apply(
        &spec(
            "limited",
            "exec sleep 1000",
            "[resources]\nmemory = \"64MiB\"\n",
        ),
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("resources: node node-a cannot apply [resources]: cgroups are turned off on this node (--cgroup off)"),
        "{err}"
    );
    assert!(
        f.registry
            .json(&["server", "list"])
            .as_array()
            .is_none_or(|a| a.is_empty())
    );
    // Without [resources] it runs as before.
    f.registry.apply(&spec("plain", "exec sleep 1000", ""));
    let i = f
        .registry
        .wait_instance("demo.plain", "node-a", "running", 30 * S, |i| {
            i["state"] == "running"
        });
    assert!(i["usage"].is_null(), "{i}");
    let _ = &f.dir;
}

#[test]
fn limits_beyond_the_node_are_refused_naming_it() {
    let f = one(&[]);
    let node = f.registry.json(&["node", "show", "node-a"]);
    let cores = node["cpu_cores"].as_u64().expect("cores");
    let toml = spec(
        "big",
        "exec sleep 1000",
        &format!("[resources]\nmemory = \"64TiB\"\ncpu = {}\n", cores + 1),
    );
    let out = f.registry.try_apply(&toml, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    if node["cgroups"] == true {
        assert!(
            err.contains("resources.memory: 64.0 TiB is more than node node-a has"),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "resources.cpu: {} cores is more than node node-a has ({cores})",
                cores + 1
            )),
            "{err}"
        );
    } else {
        assert!(err.contains("cannot apply [resources]"), "{err}");
    }
}

#[test]
fn a_restarted_agent_kills_what_a_dead_main_process_left_and_removes_stray_cgroups() {
    if !cgroups_here() {
        return;
    }
    let mut f = one(&[]);
    let script = "(setsid bash -c 'trap \"\" TERM; echo $$ > data/daemon.pid; exec sleep 100000' &); exec sleep 100000";
    f.registry
        .apply(&spec("forker", script, "[restart]\nmin_uptime = \"1s\"\n"));
    let i = f
        .registry
        .wait_instance("demo.forker", "node-a", "running", 30 * S, |i| {
            i["state"] == "running"
        });
    let main = pid_of(&i);
    let pid_file = f.agent.instance_dir("demo.forker").join("data/daemon.pid");
    let daemon = wait_until("the daemon's pid", 20 * S, || read_pid(&pid_file));
    // The agent dies, then the main process, while no agent watches: the daemon stays.
    f.agent.kill();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(main as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill main");
    wait_until("the main process gone", 10 * S, || {
        if alive(main) {
            Err("alive".into())
        } else {
            Ok(())
        }
    });
    assert!(alive(daemon), "the daemon outlives its main process");
    // A cgroup of an instance this node no longer has, empty, as a crash leaves it.
    let stray = cgroups::instance_dir(&f.agent.data_dir, "node-a", "demo.ghost", "v2")
        .or_else(|| cgroups::instance_dir(&f.agent.data_dir, "node-a", "demo.ghost", "freezer"))
        .expect("a membership hierarchy");
    std::fs::create_dir_all(&stray).expect("stray cgroup");
    f.agent.restart();
    f.registry
        .wait_node("node-a", "back up", 20 * S, |n| n["state"] == "up");
    let i = f
        .registry
        .wait_instance("demo.forker", "node-a", "restarted", 30 * S, |i| {
            i["state"] == "running" && pid_of(i) != main && pid_of(i) != 0
        });
    wait_until("the old daemon killed", 10 * S, || {
        if alive(daemon) {
            Err(format!("daemon {daemon} alive; {i}"))
        } else {
            Ok(())
        }
    });
    wait_until("the stray cgroup removed", 10 * S, || {
        if stray.exists() {
            Err(format!("{} exists", stray.display()))
        } else {
            Ok(())
        }
    });
}

#[test]
fn an_instance_without_resources_is_created_in_its_own_v2_cgroup_and_stop_leaves_nothing() {
    if !cgroups_here() {
        return;
    }
    let f = one(&[]);
    let Some(v2) = cgroups::instance_dir(&f.agent.data_dir, "node-a", "demo.plain", "v2") else {
        eprintln!("SKIPPED: no cgroup2 hierarchy on this host");
        return;
    };
    // The main process and a child that left its session: both in the instance's cgroup.
    let script = "(setsid sleep 100000 &); exec sleep 100000";
    f.registry.apply(&spec("plain", script, ""));
    let i = f
        .registry
        .wait_instance("demo.plain", "node-a", "running", 30 * S, |i| {
            i["state"] == "running"
        });
    let main = pid_of(&i);
    let procs = wait_until(
        "the main process and its child in the v2 cgroup",
        10 * S,
        || {
            let pids = cgroups::pids_under(&v2);
            if pids.contains(&(main as i32)) && pids.len() >= 2 {
                Ok(pids)
            } else {
                Err(format!("{} holds {pids:?}, main is {main}", v2.display()))
            }
        },
    );
    let own = std::fs::read_to_string(format!("/proc/{main}/cgroup")).unwrap_or_default();
    assert!(
        own.lines()
            .any(|l| l.starts_with("0::") && l.ends_with("/demo.plain/0")),
        "{own}"
    );
    // On a hybrid host it is moved into no v1 hierarchy: memory and pids are then not
    // measured (absent, not zero); CPU time comes from the cgroup2 cpu.stat.
    let v1_memory = cgroups::instance_dir(&f.agent.data_dir, "node-a", "demo.plain", "memory");
    if let Some(dir) = &v1_memory {
        assert!(!dir.exists(), "{} exists", dir.display());
    }
    let i = f
        .registry
        .wait_instance("demo.plain", "node-a", "usage", 20 * S, |i| {
            i["usage"]["cpu_seconds"].is_f64()
        });
    if v1_memory.is_some() {
        assert!(i["usage"]["memory_bytes"].is_null(), "{i}");
        assert!(i["usage"]["pids"].is_null(), "{i}");
    } else {
        assert!(i["usage"]["pids"].as_u64().unwrap_or(0) >= 1, "{i}");
    }
    let out = f.registry.cli(&["server", "stop", "demo.plain"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.registry
        .wait_instance("demo.plain", "node-a", "stopped", 30 * S, |i| {
            i["state"] == "stopped"
        });
    wait_until("every process gone and the cgroup removed", 10 * S, || {
        let left: Vec<i32> = procs.iter().copied().filter(|p| alive(*p as u32)).collect();
        if left.is_empty() && !v2.exists() {
            Ok(())
        } else {
            Err(format!(
                "alive {left:?}, {} exists: {}",
                v2.display(),
                v2.exists()
            ))
        }
    });
}
