//! The scale-out flows of `../shared/seeds/`, end to end: what operators do by hand today
//! with Tars, FISCO BCOS, WuKongIM, Fabric and rpcx, as a Corral command or two. Each
//! test is named after its flow, and checks that the flow converges (nothing keeps
//! restarting) as well as that it works.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use corral_tests::fleet::{Fleet, instances, lines, testsvc};
use corral_tests::secrets::{mode, put_ok};
use corral_tests::wait_until;
use serde_json::Value;

const S: Duration = Duration::from_secs(1);

const HEALTH: &str = "[health]\nkind = \"http\"\nadapter = \"Main\"\npath = \"/health\"\n\
                      interval = \"100ms\"\ntimeout = \"500ms\"\nstart_period = \"2s\"\nunhealthy_after = 2\n";

/// A FISCO BCOS style gateway: auto ports, an http check, and a `peers.txt` listing
/// every gateway, built with `function` (`instances` or `endpoints`).
fn gateway(server: &str, nodes: &[&str], function: &str, on_change: &str) -> String {
    let nodes: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
    let item = if function == "instances" {
        "{{ p.host }}:{{ p.port }}"
    } else {
        "{{ p }}"
    };
    format!(
        "app = \"chain0\"\nserver = \"{server}\"\nnodes = [{}]\ncommand = [{:?}]\n\
         [[adapters]]\nname = \"Main\"\nport = \"auto\"\n{HEALTH}\
         [[config]]\nname = \"peers.txt\"\n\
         template = \"{{% for p in {function}('chain0.{server}.Main') %}}{item}\\n{{% endfor %}}\"\n{on_change}",
        nodes.join(", "),
        testsvc()
    )
}

/// Restart counts of a server's instances, by node.
fn restarts(f: &Fleet, server: &str) -> BTreeMap<String, u64> {
    instances(&f.registry, server)
        .unwrap_or_default()
        .iter()
        .map(|i| {
            (
                i["node"].as_str().unwrap_or("").to_string(),
                i["restarts"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Waits until every listed node's `file` of `server` has `n` lines.
fn wait_lines(f: &Fleet, server: &str, nodes: &[&str], file: &str, n: usize, timeout: Duration) {
    for node in nodes {
        let path = f.instance_file(node, server, &format!("conf/{file}"));
        wait_until(&format!("{n} lines in {file} on {node}"), timeout, || {
            let l = lines(&path);
            if l.len() == n {
                Ok(())
            } else {
                Err(format!("{l:?}"))
            }
        });
    }
}

/// Waits until nothing about `server` changes for `window` — no restart, no config file
/// change on any node — and returns the restart counts then; panics after `timeout`
/// naming what kept changing.
fn settled(
    f: &Fleet,
    server: &str,
    nodes: &[&str],
    window: Duration,
    timeout: Duration,
) -> BTreeMap<String, u64> {
    let look = || {
        let files: Vec<Vec<String>> = nodes
            .iter()
            .map(|n| lines(&f.instance_file(n, server, "conf/peers.txt")))
            .collect();
        (restarts(f, server), files)
    };
    let start = Instant::now();
    let mut last = look();
    let mut since = Instant::now();
    let mut changes = Vec::new();
    while since.elapsed() < window {
        assert!(
            start.elapsed() < timeout,
            "{server} did not settle within {timeout:?}; it kept changing: {changes:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
        let now = look();
        if now != last {
            changes.push(format!("{:?}: {:?}", start.elapsed(), now));
            last = now;
            since = Instant::now();
        }
    }
    last.0
}

fn healthy_everywhere(f: &Fleet, server: &str, n: usize) {
    wait_until(&format!("{server}: {n} healthy instances"), 30 * S, || {
        let all = instances(&f.registry, server)?;
        let healthy = all.iter().filter(|i| i["health"] == "healthy").count();
        if healthy == n {
            Ok(())
        } else {
            Err(Value::Array(all).to_string())
        }
    });
}

/// Seed 000 (FISCO BCOS on Tars): gateways whose config lists every gateway, expanded
/// to a new node. With `instances()` the list is stable: the new node's gateway starts
/// with all four peers, every config lists four peers within 10 s, and each old gateway
/// restarts exactly once for it, one at a time.
#[test]
fn fisco_gateway_scale_out_lists_every_peer() {
    let f = Fleet::start(4);
    let old = ["node-a", "node-b", "node-c"];
    f.registry.apply(&gateway("gw", &old, "instances", ""));
    // instances() lists every assigned gateway from the start: no restart to converge.
    wait_lines(&f, "chain0.gw", &old, "peers.txt", 3, 30 * S);
    healthy_everywhere(&f, "chain0.gw", 3);
    let before = restarts(&f, "chain0.gw");
    assert!(before.values().all(|n| *n == 0), "{before:?}");

    let out = f
        .registry
        .cli(&["server", "expand", "chain0.gw", "--to", "node-d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = ["node-a", "node-b", "node-c", "node-d"];
    wait_lines(&f, "chain0.gw", &all, "peers.txt", 4, 10 * S);
    let d = lines(&f.instance_file("node-d", "chain0.gw", "conf/peers.txt"));
    for node in &all {
        let ip = &f.agent(node).ip;
        assert!(
            d.iter().any(|p| p.starts_with(&format!("{ip}:"))),
            "{node} in {d:?}"
        );
    }

    let after = settled(&f, "chain0.gw", &all, 10 * S, 60 * S);
    for node in old {
        assert_eq!(
            after[node], 1,
            "{node} restarts once for its new peers: {after:?}"
        );
    }
    assert_eq!(
        after["node-d"], 0,
        "the new gateway started with its peers: {after:?}"
    );
    healthy_everywhere(&f, "chain0.gw", 4);
}

/// Seed 000's certificates: FISCO BCOS gives every gateway node its own CA, certificate
/// and key (`generated/gateway/chain0/IP/ssl/`), added to Tars per node by hand. Here each
/// node's set (real ones, from `registry tls init`) is put as secrets for that node, and
/// `[[files]]` writes them into its gateway's `conf/` (the key 0600) beside a peers list
/// built on `instances()`. Expanding to a new node is refused until that node has its own
/// certificate, and then gives it that one, and every gateway lists four peers.
#[test]
fn fisco_gateway_nodes_get_their_own_certificates() {
    let f = Fleet::start(4);
    let dir = f.dir.path();
    let files = "[[files]]\nname = \"ca.crt\"\nmode = \"0644\"\n\
                 [[files]]\nname = \"ssl.crt\"\nmode = \"0644\"\n\
                 [[files]]\nname = \"ssl.key\"\n";
    // One node's certificate set, put for that node: what it should find in conf/.
    let certify = |node: &str| -> BTreeMap<&'static str, String> {
        let certs = dir.join(format!("certs-{node}"));
        let out = std::process::Command::new(corral_tests::bin("registry"))
            .args(["tls", "init", certs.to_str().expect("utf8"), "--host", node])
            .output()
            .expect("registry tls init");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let set = BTreeMap::from([
            ("ca.crt", "ca.pem"),
            ("ssl.crt", "registry.pem"),
            ("ssl.key", "registry.key"),
        ]);
        set.into_iter()
            .map(|(name, from)| {
                let value = std::fs::read_to_string(certs.join(from)).expect("read cert");
                put_ok(
                    &f.registry,
                    dir,
                    "chain0.gw",
                    name,
                    &["--node", node],
                    &value,
                );
                (name, value)
            })
            .collect()
    };
    let check = |node: &str, set: &BTreeMap<&'static str, String>| {
        for (name, value) in set {
            let path = f.instance_file(node, "chain0.gw", &format!("conf/{name}"));
            wait_until(&format!("{node}'s own {name}"), 30 * S, || {
                if std::fs::read_to_string(&path).unwrap_or_default() == *value {
                    Ok(())
                } else {
                    Err(path.display().to_string())
                }
            });
            let want = if *name == "ssl.key" { 0o600 } else { 0o644 };
            assert_eq!(mode(&path), want, "{}", path.display());
        }
    };
    let old = ["node-a", "node-b", "node-c"];
    let sets: BTreeMap<&str, _> = old.iter().map(|n| (*n, certify(n))).collect();
    f.registry
        .apply(&format!("{}{files}", gateway("gw", &old, "instances", "")));
    wait_lines(&f, "chain0.gw", &old, "peers.txt", 3, 30 * S);
    for (node, set) in &sets {
        check(node, set);
    }
    let keys: Vec<&String> = sets.values().map(|s| &s["ssl.key"]).collect();
    assert!(
        keys[0] != keys[1] && keys[1] != keys[2],
        "every node has a key of its own"
    );
    healthy_everywhere(&f, "chain0.gw", 3);

    // node-d has no certificate yet: expand is refused, naming it, and adds nothing.
    let out = f
        .registry
        .cli(&["server", "expand", "chain0.gw", "--to", "node-d"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("node-d") && err.contains("is not set"),
        "{err}"
    );
    assert_eq!(instances(&f.registry, "chain0.gw").map(|i| i.len()), Ok(3));

    let d = certify("node-d");
    let out = f
        .registry
        .cli(&["server", "expand", "chain0.gw", "--to", "node-d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = ["node-a", "node-b", "node-c", "node-d"];
    wait_lines(&f, "chain0.gw", &all, "peers.txt", 4, 20 * S);
    check("node-d", &d);
    let on_d = corral_tests::secrets::files_under(&f.agent("node-d").data_dir);
    for key in keys {
        for p in &on_d {
            let text = std::fs::read(p).unwrap_or_default();
            assert!(
                !text.windows(key.len()).any(|w| w == key.as_bytes()),
                "another node's key is on node-d, in {}",
                p.display()
            );
        }
    }
    settled(&f, "chain0.gw", &all, 5 * S, 60 * S);
    healthy_everywhere(&f, "chain0.gw", 4);
}

/// The same gateway built on `endpoints()` (healthy instances only) with the default
/// `on_change = "restart"`: each restart takes an instance out of the list, which used
/// to restart every other gateway, forever. It settles: no restart at all for 30 s after
/// the last config change.
#[test]
fn fisco_gateway_on_endpoints_settles_after_expand() {
    let f = Fleet::start(4);
    let old = ["node-a", "node-b", "node-c"];
    f.registry.apply(&gateway("gwe", &old, "endpoints", ""));
    wait_lines(&f, "chain0.gwe", &old, "peers.txt", 3, 60 * S);
    let out = f
        .registry
        .cli(&["server", "expand", "chain0.gwe", "--to", "node-d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = ["node-a", "node-b", "node-c", "node-d"];
    wait_lines(&f, "chain0.gwe", &all, "peers.txt", 4, 60 * S);
    let after = settled(&f, "chain0.gwe", &all, 30 * S, 180 * S);
    healthy_everywhere(&f, "chain0.gwe", 4);
    assert!(
        after.values().all(|n| *n <= 3),
        "few restarts in all: {after:?}"
    );
}

/// A load balancer that reloads on SIGHUP, as nginx does: it prints its upstream file
/// when it starts and at every reload, so the test sees what it loaded.
const LB_SCRIPT: &str = "#!/bin/sh\nload() { echo reload; cat conf/upstream.conf; echo end; }\n\
                         load\ntrap load HUP\nwhile true; do sleep 0.1; done\n";

fn web(nodes: &[&str]) -> String {
    let nodes: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
    format!(
        "app = \"wk\"\nserver = \"web\"\nnodes = [{}]\ncommand = [{:?}]\n\
         [[adapters]]\nname = \"Main\"\nport = \"auto\"\n{HEALTH}",
        nodes.join(", "),
        testsvc()
    )
}

/// The upstream servers the load balancer loaded last, and how many reloads it did.
fn lb_loaded(f: &Fleet) -> (Vec<String>, usize) {
    let log = std::fs::read_to_string(f.instance_file("node-c", "wk.lb", "logs/stdout.log"))
        .unwrap_or_default();
    let reloads = log.matches("reload\n").count();
    let last = log
        .rsplit_once("reload\n")
        .map(|(_, tail)| tail.split("end\n").next().unwrap_or("").to_string())
        .unwrap_or_default();
    (lines_of(&last), reloads)
}

fn lines_of(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn upstreams(f: &Fleet, nodes: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = nodes
        .iter()
        .map(|n| {
            let port = f
                .registry
                .json(&["endpoints", "wk.web.Main"])
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|e| e["node"] == *n)
                        .map(|e| e["port"].clone())
                })
                .unwrap_or(Value::Null);
            format!("server {}:{port};", f.agent(n).ip)
        })
        .collect();
    out.sort();
    out
}

/// Seed 001 (WuKongIM behind nginx): a cluster behind a load balancer whose upstream
/// file lists the healthy instances and is reloaded by signal. It follows instances
/// joining (expand), failing their check and leaving (stop), and the load balancer is
/// reloaded, never restarted.
#[test]
fn wukongim_cluster_behind_a_load_balancer() {
    let f = Fleet::start(3);
    let script = f.dir.path().join("lb.sh");
    std::fs::write(&script, LB_SCRIPT).expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    f.registry.apply(&web(&["node-a", "node-b"]));
    healthy_everywhere(&f, "wk.web", 2);
    f.registry.apply(&format!(
        "app = \"wk\"\nserver = \"lb\"\nnodes = [\"node-c\"]\ncommand = [{script:?}]\n\
         [[config]]\nname = \"upstream.conf\"\n\
         template = \"{{% for e in endpoints('wk.web.Main') %}}server {{{{ e }}}};\\n{{% endfor %}}\"\n\
         on_change = \"signal:SIGHUP\"\nrender_wait = {{ min = \"100ms\", max = \"1s\" }}\n"
    ));
    let lb = f
        .registry
        .wait_instance("wk.lb", "node-c", "running", 30 * S, |i| {
            i["state"] == "running"
        });
    let lb_pid = lb["pid"].clone();
    let upstream = f.instance_file("node-c", "wk.lb", "conf/upstream.conf");
    let follows = |what: &str, nodes: &[&str]| {
        // The upstreams discovery lists, once it lists those nodes (a node that just
        // turned healthy has its port in the list only then).
        let want = wait_until(&format!("upstream: {what}"), 30 * S, || {
            let want = upstreams(&f, nodes);
            let file = lines(&upstream);
            if file == want {
                Ok(want)
            } else {
                Err(format!("{file:?}, want {want:?}"))
            }
        });
        wait_until(
            &format!("the load balancer reloads: {what}"),
            30 * S,
            || {
                let (loaded, reloads) = lb_loaded(&f);
                if loaded == want {
                    Ok(reloads)
                } else {
                    Err(format!("{loaded:?} after {reloads} reloads"))
                }
            },
        )
    };
    follows("two web servers", &["node-a", "node-b"]);

    let out = f
        .registry
        .cli(&["server", "expand", "wk.web", "--to", "node-c"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    healthy_everywhere(&f, "wk.web", 3);
    follows("node-c joined", &["node-a", "node-b", "node-c"]);

    std::fs::write(f.instance_file("node-b", "wk.web", "unhealthy"), "").expect("flag");
    follows("node-b failing its check", &["node-a", "node-c"]);

    let out = f
        .registry
        .cli(&["server", "stop", "wk.web", "--node", "node-a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    follows("node-a stopped", &["node-c"]);

    std::fs::remove_file(f.instance_file("node-b", "wk.web", "unhealthy")).expect("unflag");
    follows("node-b healthy again", &["node-b", "node-c"]);

    let lb = f.registry.instance("wk.lb", "node-c").expect("lb");
    assert_eq!(
        lb["pid"], lb_pid,
        "reloaded by signal, never restarted: {lb}"
    );
    assert_eq!(lb["restarts"], 0, "{lb}");
}

/// Seed 002 (Tars): a new host joins with nothing but the registry's address, gets the
/// core service (package and all) by `expand`; its agent, killed, is revived by `agent
/// check` from cron without restarting the service; the core service is then updated
/// on every host by a rolling `patch`.
#[test]
fn tars_new_host_joins_is_revived_and_patched() {
    use corral_tests::packages::release;
    let mut f = Fleet::start(2);
    let pkg = |version: &str| {
        f.registry
            .must_upload("tars.core", version, &release(version, false))
    };
    pkg("1.0.0");
    f.registry.apply(
        "app = \"tars\"\nserver = \"core\"\nnodes = [\"node-a\", \"node-b\"]\ncommand = [\"bin/server\"]\n\
         package = \"1.0.0\"\n[restart]\nmin_uptime = \"1s\"\n[stop]\ntimeout = \"2s\"\n",
    );
    // The new host: an agent started with the locator, nothing installed beside it.
    let ip = corral_tests::test_ips(1).remove(0);
    let newcomer = corral_tests::Agent::start(f.dir.path(), &f.registry.addr(), "node-c", &ip);
    f.registry
        .wait_node("node-c", "up", 20 * S, |v| v["state"] == "up");
    let out = f
        .registry
        .cli(&["server", "expand", "tars.core", "--to", "node-c"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let on = |node: &str, version: &str| {
        f.registry.wait_instance(
            "tars.core",
            node,
            &format!("running {version}"),
            60 * S,
            |i| i["state"] == "running" && i["version"] == version,
        )
    };
    for node in ["node-a", "node-b", "node-c"] {
        on(node, "1.0.0");
    }
    let service_pid = on("node-c", "1.0.0")["pid"].clone();

    // The agent dies; cron's `agent check` brings it back; the service never stopped.
    let _respawned = corral_tests::RespawnedAgent {
        data_dir: newcomer.data_dir.clone(),
    };
    let mut newcomer = newcomer;
    newcomer.kill();
    f.registry
        .wait_node("node-c", "down", 20 * S, |v| v["state"] == "down");
    let check = std::process::Command::new(corral_tests::bin("agent"))
        .args(["check", "--data-dir"])
        .arg(&newcomer.data_dir)
        .output()
        .expect("agent check");
    assert_eq!(
        check.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    f.registry
        .wait_node("node-c", "up again", 20 * S, |v| v["state"] == "up");
    let c = on("node-c", "1.0.0");
    assert_eq!(c["pid"], service_pid, "the service outlived its agent: {c}");

    // The core service is updated everywhere, one host at a time.
    pkg("2.0.0");
    let out = f.registry.cli(&[
        "patch",
        "tars.core",
        "--version",
        "2.0.0",
        "--batch",
        "1",
        "--min-healthy",
        "1s",
        "--deadline",
        "60s",
    ]);
    assert!(
        out.status.success(),
        "patch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in ["node-a", "node-b", "node-c"] {
        on(node, "2.0.0");
    }
    f.agents.push(newcomer);
}

/// Seed 003 (Fabric chaincode as an external service): a service Corral does not run is
/// checked from the nodes named in its spec and listed once (not once per checking
/// node); a peer's `connection.json` rendered from discovery follows it going away and
/// coming back.
#[test]
fn fabric_external_chaincode_is_discovered_once() {
    let f = Fleet::start(3);
    let ip = corral_tests::test_ips(1).remove(0);
    let bind = || std::net::TcpListener::bind((ip.as_str(), 0)).expect("bind chaincode");
    let listener = bind();
    let addr = listener.local_addr().expect("addr");
    f.registry.apply(&format!(
        "app = \"fabric\"\nserver = \"cc\"\nkind = \"external\"\naddress = \"{addr}\"\n\
         nodes = [\"node-a\", \"node-b\"]\n[health]\nkind = \"tcp\"\ninterval = \"100ms\"\n\
         timeout = \"500ms\"\nstart_period = \"0s\"\nunhealthy_after = 1\n"
    ));
    f.registry.apply(&format!(
        "app = \"fabric\"\nserver = \"peer\"\nnodes = [\"node-c\"]\ncommand = [{:?}, \"--listen\", \"{}:0\"]\n\
         [[config]]\nname = \"connection.json\"\n\
         template = \"{{{{ {{'chaincodes': endpoints('fabric.cc.Main')}} | tojson }}}}\"\non_change = \"none\"\n\
         render_wait = {{ min = \"100ms\", max = \"1s\" }}\n",
        testsvc(),
        f.agent("node-c").ip
    ));
    let eps =
        corral_tests::fleet::wait_endpoints(&f.registry, "fabric.cc.Main", "listed", 30 * S, |e| {
            !e.is_empty()
        });
    assert_eq!(eps.len(), 1, "one address, listed once: {eps:?}");
    assert_eq!(
        (eps[0].1.as_str(), eps[0].2),
        (ip.as_str(), u64::from(addr.port()))
    );
    assert!(
        instances(&f.registry, "fabric.cc").expect("status").len() == 2,
        "checked from node-a and node-b only"
    );
    let connection = f.instance_file("node-c", "fabric.peer", "conf/connection.json");
    let json = |want: usize| {
        wait_until(
            &format!("connection.json with {want} chaincode"),
            30 * S,
            || {
                let text = std::fs::read_to_string(&connection).map_err(|e| e.to_string())?;
                let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
                let list = v["chaincodes"].as_array().cloned().unwrap_or_default();
                if list.len() == want {
                    Ok(list)
                } else {
                    Err(text)
                }
            },
        )
    };
    assert_eq!(json(1)[0], format!("{addr}"));
    drop(listener);
    corral_tests::fleet::wait_endpoints(&f.registry, "fabric.cc.Main", "gone", 30 * S, |e| {
        e.is_empty()
    });
    json(0);
    let _back = std::net::TcpListener::bind(addr).expect("rebind the chaincode's address");
    corral_tests::fleet::wait_endpoints(&f.registry, "fabric.cc.Main", "back", 30 * S, |e| {
        e.len() == 1
    });
    json(1);
}

/// Seed 004 (rpcx with a registry plugin): a client resolver follows a service as
/// instances join, fail their check, stop and start.
#[test]
fn rpcx_resolver_follows_changes() {
    let f = Fleet::start(2);
    f.registry.apply(&format!(
        "app = \"rpcx\"\nserver = \"arith\"\nnodes = [\"node-a\"]\ncommand = [{:?}]\n\
         [[adapters]]\nname = \"Main\"\nport = \"auto\"\n{HEALTH}",
        testsvc()
    ));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let resolver =
        corral_client::Resolver::new(&f.registry.addr(), "rpcx.arith.Main").expect("resolver");
    let rx = rt.block_on(async { resolver.watch() });
    let sees = |what: &str, nodes: &[&str]| {
        let want: Vec<String> = nodes.iter().map(|n| f.agent(n).ip.clone()).collect();
        wait_until(&format!("the resolver: {what}"), 30 * S, || {
            let mut hosts: Vec<String> = rx.borrow().iter().map(|e| e.host.clone()).collect();
            hosts.sort();
            if hosts == want {
                Ok(())
            } else {
                Err(format!("{hosts:?}"))
            }
        });
    };
    sees("one server", &["node-a"]);
    let out = f
        .registry
        .cli(&["server", "expand", "rpcx.arith", "--to", "node-b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sees("node-b joined", &["node-a", "node-b"]);
    std::fs::write(f.instance_file("node-a", "rpcx.arith", "unhealthy"), "").expect("flag");
    sees("node-a failing", &["node-b"]);
    let out = f
        .registry
        .cli(&["server", "stop", "rpcx.arith", "--node", "node-b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sees("none left", &[]);
    std::fs::remove_file(f.instance_file("node-a", "rpcx.arith", "unhealthy")).expect("unflag");
    let out = f
        .registry
        .cli(&["server", "start", "rpcx.arith", "--node", "node-b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sees("both back", &["node-a", "node-b"]);
    drop(rt);
}
