//! Discovery, health checks, config templates and scale-out.

use std::path::Path;
use std::time::Duration;

use corral_tests::{Agent, Backend, Registry, TestDb, bin, wait_until};
use serde_json::Value;

const S: Duration = Duration::from_secs(1);

struct Fleet {
    registry: Registry,
    agents: Vec<Agent>,
    _db: TestDb,
    dir: tempfile::TempDir,
}

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// A registry and `n` agents, on addresses no other test uses at the same time.
fn fleet(n: usize) -> Fleet {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::new(Backend::Sqlite, dir.path()).expect("sqlite");
    let registry = Registry::start(dir.path(), &db.url, &[]);
    let ips = corral_tests::test_ips(n);
    let agents: Vec<Agent> = NODES[..n]
        .iter()
        .zip(&ips)
        .map(|(node, ip)| Agent::start(dir.path(), &registry.addr(), node, ip))
        .collect();
    for node in &NODES[..n] {
        registry.wait_node(node, "up", 20 * S, |v| v["state"] == "up");
    }
    Fleet {
        registry,
        agents,
        _db: db,
        dir,
    }
}

fn testsvc() -> String {
    bin("corral-testsvc").display().to_string()
}

/// `registry endpoints NAME -o json` as (node, host, port) triples.
fn endpoints(r: &Registry, name: &str) -> Result<Vec<(String, String, u64)>, String> {
    let out = r.cli(&["endpoints", name, "-o", "json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into());
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["node"].as_str().unwrap_or("").to_string(),
                        e["host"].as_str().unwrap_or("").to_string(),
                        e["port"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

fn wait_endpoints(
    r: &Registry,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&[(String, String, u64)]) -> bool,
) -> Vec<(String, String, u64)> {
    wait_until(&format!("{name}: {what}"), timeout, || {
        let eps = endpoints(r, name)?;
        if pred(&eps) {
            Ok(eps)
        } else {
            Err(format!("{eps:?}"))
        }
    })
}

fn nodes_of(eps: &[(String, String, u64)]) -> Vec<String> {
    eps.iter().map(|e| e.0.clone()).collect()
}

const HEALTH: &str = "[health]\nkind = \"http\"\nadapter = \"Main\"\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nstart_period = \"0s\"\nunhealthy_after = 2\n";

fn gateway_spec(nodes: &[&str]) -> String {
    let nodes: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
    format!(
        "app = \"chain0\"\nserver = \"gw\"\nnodes = [{}]\ncommand = [{:?}]\n[[adapters]]\nname = \"Main\"\nport = \"auto\"\n{HEALTH}\
         [[config]]\nname = \"peers.txt\"\ntemplate = \"{{% for e in endpoints('chain0.gw.Main') %}}{{{{ e }}}}\\n{{% endfor %}}\"\non_change = \"none\"\n",
        nodes.join(", "),
        testsvc()
    )
}

fn peers(agent: &Agent) -> Vec<String> {
    std::fs::read_to_string(agent.instance_dir("chain0.gw").join("conf/peers.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The scale-out flow: deploy on two nodes, preview an expansion, expand to the third,
/// every config lists three peers; a failing check takes an endpoint out and a passing
/// one brings it back; a killed agent's endpoints go within 3 s.
#[test]
fn scale_out_flow() {
    let mut f = fleet(3);
    f.registry.apply(&gateway_spec(&["node-a", "node-b"]));
    let eps = wait_endpoints(&f.registry, "chain0.gw.Main", "2 endpoints", 30 * S, |e| {
        e.len() == 2
    });
    assert_eq!(nodes_of(&eps), ["node-a", "node-b"]);
    assert_eq!(
        (eps[0].1.as_str(), eps[1].1.as_str()),
        (f.agents[0].ip.as_str(), f.agents[1].ip.as_str()),
        "hosts are the nodes' advertise IPs"
    );
    assert!(
        eps.iter().all(|e| (20000..=29999).contains(&e.2)),
        "auto ports come from the range: {eps:?}"
    );
    for a in &f.agents[..2] {
        wait_until("2 peers in the config", 20 * S, || {
            if peers(a).len() == 2 {
                Ok(())
            } else {
                Err(format!("{:?}", peers(a)))
            }
        });
    }

    let out = f.registry.cli(&[
        "server",
        "expand",
        "chain0.gw",
        "--to",
        "node-c",
        "--preview",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("node-c")
            && text.contains(&f.agents[2].ip)
            && text.contains("Main")
            && text.contains("nothing changed"),
        "{text}"
    );
    // A preview adds no instance (the check below); so nothing new can start and
    // enter discovery either.
    assert_eq!(
        endpoints(&f.registry, "chain0.gw.Main").expect("eps").len(),
        2,
        "a preview changes nothing"
    );
    assert_eq!(
        f.registry
            .json(&["server", "status", "chain0.gw"])
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    let out = f
        .registry
        .cli(&["server", "expand", "chain0.gw", "--to", "node-c"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_endpoints(&f.registry, "chain0.gw.Main", "3 endpoints", 30 * S, |e| {
        e.len() == 3
    });
    for a in &f.agents {
        wait_until(&format!("3 peers on {}", a.node), 20 * S, || {
            if peers(a).len() == 3 {
                Ok(())
            } else {
                Err(format!("{:?}", peers(a)))
            }
        });
    }

    let flag = f.agents[1].instance_dir("chain0.gw").join("unhealthy");
    std::fs::write(&flag, "").expect("flag");
    wait_endpoints(&f.registry, "chain0.gw.Main", "node-b out", 20 * S, |e| {
        nodes_of(e) == ["node-a", "node-c"]
    });
    let b = f.registry.instance("chain0.gw", "node-b").expect("b");
    assert_eq!(b["healthy"], false, "{b}");
    std::fs::remove_file(&flag).expect("unflag");
    wait_endpoints(&f.registry, "chain0.gw.Main", "node-b back", 20 * S, |e| {
        e.len() == 3
    });

    f.agents[2].kill();
    wait_endpoints(
        &f.registry,
        "chain0.gw.Main",
        "node-c out within 3s",
        3 * S,
        |e| nodes_of(e) == ["node-a", "node-b"],
    );
}

fn simple(name: &str, command: &[&str], extra: &str) -> String {
    let command: Vec<String> = command.iter().map(|c| format!("{c:?}")).collect();
    format!(
        "app = \"demo\"\nserver = \"{name}\"\nnodes = [\"node-a\"]\ncommand = [{}]\n{extra}",
        command.join(", ")
    )
}

fn health_of(f: &Fleet, server: &str, want: &str) -> Value {
    f.registry
        .wait_instance(server, "node-a", &format!("health {want}"), 20 * S, |i| {
            i["health"] == want
        })
}

/// tcp, http and exec checks turn healthy, and unhealthy when the service stops passing.
#[test]
fn each_check_kind() {
    let f = fleet(1);
    let checks = [
        (
            "tcp",
            "[health]\nkind = \"tcp\"\ninterval = \"100ms\"\nstart_period = \"0s\"\nunhealthy_after = 1\n",
        ),
        ("http", HEALTH),
        (
            "exec",
            "[health]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"test ! -e $CORRAL_INSTANCE_DIR/unhealthy\"]\ninterval = \"100ms\"\nstart_period = \"0s\"\nunhealthy_after = 1\n",
        ),
    ];
    for (kind, check) in checks {
        let extra = format!("[[adapters]]\nname = \"Main\"\nport = \"auto\"\n{check}");
        f.registry.apply(&simple(kind, &[&testsvc()], &extra));
    }
    for (kind, _) in checks {
        health_of(&f, &format!("demo.{kind}"), "healthy");
    }
    // http and exec read the flag file; tcp fails when the process is gone.
    for kind in ["http", "exec"] {
        std::fs::write(
            f.agents[0]
                .instance_dir(&format!("demo.{kind}"))
                .join("unhealthy"),
            "",
        )
        .expect("flag");
        health_of(&f, &format!("demo.{kind}"), "unhealthy");
    }
    let tcp = f.registry.instance("demo.tcp", "node-a").expect("tcp");
    let out = f.registry.cli(&["server", "stop", "demo.tcp"]);
    assert!(out.status.success());
    f.registry
        .wait_instance("demo.tcp", "node-a", "stopped", 20 * S, |i| {
            i["state"] == "stopped"
        });
    drop(tcp);
    wait_endpoints(
        &f.registry,
        "demo.tcp.Main",
        "no tcp endpoint",
        10 * S,
        |e| e.is_empty(),
    );
}

/// `restart_after` restarts an instance whose check keeps failing.
#[test]
fn restart_after_restarts_a_failing_instance() {
    let f = fleet(1);
    let check = "[health]\nkind = \"http\"\ninterval = \"100ms\"\nstart_period = \"0s\"\nunhealthy_after = 1\nrestart_after = 3\n";
    let extra = format!(
        "[[adapters]]\nname = \"Main\"\nport = \"auto\"\n{check}[restart]\nmin_uptime = \"0s\"\n"
    );
    // Unhealthy from the start: the flag is in its instance directory before it starts.
    let dir = f.agents[0].instance_dir("demo.sick");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("unhealthy"), "").expect("flag");
    f.registry.apply(&simple("sick", &[&testsvc()], &extra));
    let i = f.registry.wait_instance(
        "demo.sick",
        "node-a",
        "restarted by its check",
        30 * S,
        |i| i["restarts"].as_u64() >= Some(2),
    );
    assert_eq!(
        i["health"]
            .as_str()
            .map(|h| h == "unhealthy" || h == "unknown"),
        Some(true),
        "{i}"
    );
    let events = f.registry.events("demo.sick");
    assert!(
        events.iter().any(|e| e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("health check failed"))),
        "{events:?}"
    );
    std::fs::remove_file(dir.join("unhealthy")).expect("unflag");
    health_of(&f, "demo.sick", "healthy");
}

/// When a config's content changes: `restart` restarts, `signal:SIGHUP` signals,
/// `none` only rewrites the file.
#[test]
fn on_change_modes() {
    let f = fleet(2);
    // A peer list that changes when demo.peer is expanded to node-b.
    f.registry.apply(&format!(
        "app = \"demo\"\nserver = \"peer\"\nnodes = [\"node-a\"]\ncommand = [{:?}]\n[[adapters]]\nname = \"Main\"\nport = \"auto\"\n",
        testsvc()
    ));
    let template =
        "template = \"{% for e in endpoints('demo.peer.Main') %}{{ e }}\\n{% endfor %}\"\n";
    let hup = [
        "sh",
        "-c",
        "trap 'echo hup >> hups' HUP; while :; do sleep 0.05; done",
    ];
    for (name, mode, command) in [
        ("restarts", "restart", &["sleep", "1000"][..]),
        ("signalled", "signal:SIGHUP", &hup[..]),
        ("quiet", "none", &["sleep", "1000"][..]),
    ] {
        f.registry.apply(&simple(
            name,
            command,
            &format!("[[config]]\nname = \"peers.txt\"\n{template}on_change = \"{mode}\"\n"),
        ));
    }
    let read = |server: &str| {
        std::fs::read_to_string(f.agents[0].instance_dir(server).join("conf/peers.txt"))
            .unwrap_or_default()
    };
    for s in ["demo.restarts", "demo.signalled", "demo.quiet"] {
        wait_until(&format!("{s} has 1 peer"), 20 * S, || {
            if read(s).lines().count() == 1 {
                Ok(())
            } else {
                Err(read(s))
            }
        });
    }
    let before: Vec<Value> = ["demo.restarts", "demo.signalled", "demo.quiet"]
        .iter()
        .map(|s| {
            f.registry
                .wait_instance(s, "node-a", "running", 20 * S, |i| i["state"] == "running")
        })
        .collect();
    let out = f
        .registry
        .cli(&["server", "expand", "demo.peer", "--to", "node-b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in ["demo.restarts", "demo.signalled", "demo.quiet"] {
        wait_until(&format!("{s} has 2 peers"), 20 * S, || {
            if read(s).lines().count() == 2 {
                Ok(())
            } else {
                Err(read(s))
            }
        });
    }
    f.registry
        .wait_instance("demo.restarts", "node-a", "restarted", 20 * S, |i| {
            i["pid"] != before[0]["pid"] && i["state"] == "running"
        });
    let hups = f.agents[0].instance_dir("demo.signalled").join("hups");
    wait_until("SIGHUP received", 20 * S, || {
        std::fs::read_to_string(&hups).map_err(|e| e.to_string())
    });
    let signalled = f
        .registry
        .instance("demo.signalled", "node-a")
        .expect("signalled");
    let quiet = f.registry.instance("demo.quiet", "node-a").expect("quiet");
    assert_eq!(
        signalled["pid"], before[1]["pid"],
        "signalled, not restarted"
    );
    assert_eq!(quiet["pid"], before[2]["pid"], "none: not restarted");
}

/// A template error is reported at apply time with its line, and changes nothing.
#[test]
fn template_errors_are_refused_at_apply() {
    let f = fleet(1);
    let bad = simple(
        "tpl",
        &["sleep", "1000"],
        "[[config]]\nname = \"x.conf\"\ntemplate = \"ok\\n{% for e in %}\\n\"\n",
    );
    let out = f.registry.try_apply(&bad, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config[0].template: line 2"), "{err}");
    let undefined = simple(
        "tpl",
        &["sleep", "1000"],
        "[[config]]\nname = \"x.conf\"\ntemplate = \"{{ nodee }}\"\n",
    );
    let err = String::from_utf8_lossy(&f.registry.try_apply(&undefined, &[]).stderr).to_string();
    assert!(
        err.contains("config[0].template: line 1") && err.contains("undefined"),
        "{err}"
    );
    assert_eq!(f.registry.json(&["server", "list"]), serde_json::json!([]));
}

/// Auto ports never collide on a node; a fixed port held by another server is refused at
/// apply; a port something else already listens on fails the start, clearly.
#[test]
fn port_allocation_and_conflicts() {
    let f = fleet(1);
    for name in ["one", "two"] {
        f.registry.apply(&simple(
            name,
            &["sleep", "1000"],
            "[[adapters]]\nname = \"Main\"\nport = \"auto\"\n",
        ));
    }
    let p1 = endpoints_port(&f, "demo.one.Main");
    let p2 = endpoints_port(&f, "demo.two.Main");
    assert_ne!(p1, p2, "auto ports differ on one node");

    f.registry.apply(&simple(
        "fixed",
        &["sleep", "1000"],
        "[[adapters]]\nname = \"Main\"\nport = 25001\n",
    ));
    let out = f.registry.try_apply(
        &simple(
            "clash",
            &["sleep", "1000"],
            "[[adapters]]\nname = \"Main\"\nport = 25001\n",
        ),
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("port 25001 on node-a is held by demo.fixed"),
        "{err}"
    );

    let squatter = std::net::TcpListener::bind((f.agents[0].ip.as_str(), 0)).expect("bind");
    let port = squatter.local_addr().expect("addr").port();
    f.registry.apply(&simple(
        "blocked",
        &["sleep", "1000"],
        &format!("[[adapters]]\nname = \"Main\"\nport = {port}\n"),
    ));
    let i = f
        .registry
        .wait_instance("demo.blocked", "node-a", "failed", 20 * S, |i| {
            i["state"] == "failed"
        });
    let err = i["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains(&format!("port {port}")) && err.contains("not free"),
        "{err}"
    );
}

fn endpoints_port(f: &Fleet, name: &str) -> u64 {
    wait_endpoints(&f.registry, name, "an endpoint", 20 * S, |e| e.len() == 1)[0].2
}

/// A service the agent does not run, health-checked by the agent of its node and
/// discovered like any other.
#[test]
fn external_services() {
    let f = fleet(1);
    let port = corral_tests::free_port();
    let host = corral_tests::test_ips(1).remove(0);
    let mut external = ExternalSvc::start(&format!("{host}:{port}"), f.dir.path());
    let spec = format!(
        "app = \"fabric\"\nserver = \"chaincode\"\nkind = \"external\"\naddress = \"{host}:{port}\"\nnodes = [\"node-a\"]\n\
         [health]\nkind = \"tcp\"\ninterval = \"100ms\"\nstart_period = \"0s\"\nunhealthy_after = 1\n"
    );
    f.registry.apply(&spec);
    let eps = wait_endpoints(
        &f.registry,
        "fabric.chaincode.Main",
        "the external endpoint",
        20 * S,
        |e| e.len() == 1,
    );
    assert_eq!(
        (eps[0].1.as_str(), eps[0].2),
        (host.as_str(), u64::from(port))
    );
    external.stop();
    wait_endpoints(
        &f.registry,
        "fabric.chaincode.Main",
        "gone when it stops answering",
        20 * S,
        |e| e.is_empty(),
    );
    // Discovery has the report from memory at once; the instance row follows with the
    // writer's next round (rounds are batched, at least 200 ms apart).
    f.registry
        .wait_instance("fabric.chaincode", "node-a", "unhealthy", 20 * S, |i| {
            i["health"] == "unhealthy"
        });
}

/// A process the test runs itself, killed on drop.
struct ExternalSvc(Option<std::process::Child>);

impl ExternalSvc {
    fn start(addr: &str, dir: &Path) -> ExternalSvc {
        let child = std::process::Command::new(bin("corral-testsvc"))
            .args(["--listen", addr])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("external service");
        ExternalSvc(Some(child))
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ExternalSvc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The client resolver follows a name through a locator list whose first registry is
/// dead (it accepts connections and closes them at once), and keeps the last list when
/// the registry goes away.
#[test]
fn resolver_follows_and_survives_registry_loss() {
    let mut f = fleet(1);
    f.registry.apply(&simple(
        "svc",
        &[&testsvc()],
        "[[adapters]]\nname = \"Main\"\nport = \"auto\"\n",
    ));
    wait_endpoints(&f.registry, "demo.svc.Main", "an endpoint", 20 * S, |e| {
        e.len() == 1
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    // How many connections the dead registry has had: it closes each at once. (The
    // thread blocks in accept until the test process ends.)
    let tries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = tries.clone();
    std::thread::spawn(move || {
        for conn in dead.incoming() {
            drop(conn);
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let count_tries = || tries.load(std::sync::atomic::Ordering::SeqCst);
    let locator = format!("http://{dead_addr},{}", f.registry.addr());
    let resolver = corral_client::Resolver::new(&locator, "demo.svc.Main").expect("resolver");
    let rx = rt.block_on(async { resolver.watch() });
    let seen = wait_until("the resolver's list", 20 * S, || {
        let list = rx.borrow().clone();
        if list.len() == 1 {
            Ok(list)
        } else {
            Err(format!("{list:?}"))
        }
    });
    assert_eq!(seen[0].host, f.agents[0].ip);
    let before = count_tries();
    f.registry.kill();
    // Once the resolver tries the dead registry again, it has seen the live one go.
    wait_until("the resolver to try the other registry", 20 * S, || {
        let now = count_tries();
        if now > before {
            Ok(())
        } else {
            Err(format!("{now} tries"))
        }
    });
    assert_eq!(
        rx.borrow().len(),
        1,
        "the last known list is kept while no registry answers"
    );
    drop(rt);
}
