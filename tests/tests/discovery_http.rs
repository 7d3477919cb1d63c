//! Discovery over HTTP, on the registry and on an agent: lists with metadata, blocking
//! queries, server-sent events, errors, and Prometheus' `http_sd` targets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use corral_client::{Policy, Resolver};
use corral_tests::fleet::{Fleet, wait_endpoints};
use corral_tests::lookup::{Events, agent_http, get, send};
use corral_tests::sim::SimNodes;
use corral_tests::wait_until;
use serde_json::Value;

const S: Duration = Duration::from_secs(1);
const TOKEN: &str = "discovery-test-token";
const AUTH: (&str, &str) = ("Authorization", "Bearer discovery-test-token");
const NAME: &str = "demo.api.Main";

/// demo.api on node-a (ordinal 0) and node-b (ordinal 1): weight 10 but 5 for ordinal 0,
/// tag v2, zone a but b on node-b; its metrics adapter is `Metrics` at /prom.
pub const SPEC: &str = r#"
app = "demo"
server = "api"
nodes = ["node-a", "node-b"]
command = ["sleep", "1000"]
[[adapters]]
name = "Main"
port = "auto"
weight = 10
tags = ["v2"]
meta = { zone = "a" }
[[adapters.override]]
ordinal = 0
weight = 5
[[adapters.override]]
node = "node-b"
meta = { zone = "b" }
[[adapters]]
name = "Metrics"
port = "auto"
[metrics]
adapter = "Metrics"
path = "/prom"
[[config]]
name = "upstream.txt"
on_change = "none"
template = "{% for e in endpoints('demo.api.Main', tag='v2') %}{{ e }}\n{% endfor %}{% for i in instances('demo.api.Main') %}{{ i.node }} {{ i.weight }} {{ i.tags | join(',') }} {{ i.meta.zone }}\n{% endfor %}"
"#;

fn fleet() -> Fleet {
    let f = Fleet::start_with(2, &["--admin-token", TOKEN]);
    f.registry.apply(SPEC);
    wait_endpoints(&f.registry, NAME, "both listed", 20 * S, |e| e.len() == 2);
    f
}

fn registry_http(f: &Fleet) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], f.registry.http_port))
}

/// node -> (weight, tags, zone) of a JSON list.
fn metadata(list: &Value) -> Vec<(String, u64, String, String)> {
    let mut out: Vec<_> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| {
            (
                e["node"].as_str().unwrap_or_default().to_string(),
                e["weight"].as_u64().unwrap_or(0),
                e["tags"].to_string(),
                e["meta"]["zone"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn expected() -> Vec<(String, u64, String, String)> {
    vec![
        ("node-a".into(), 5, r#"["v2"]"#.into(), "a".into()),
        ("node-b".into(), 10, r#"["v2"]"#.into(), "b".into()),
    ]
}

fn wait_list(addr: SocketAddr, auth: &[(&str, &str)], n: usize) -> corral_tests::lookup::Answer {
    wait_until(&format!("{n} endpoints at {addr}"), 20 * S, || {
        let a = get(addr, &format!("/v1/endpoints/{NAME}"), auth)?;
        let len = a.json().as_array().map_or(0, Vec::len);
        if a.status == 200 && len == n {
            Ok(a)
        } else {
            Err(format!("{} {}", a.status, a.body))
        }
    })
}

/// The weights, tags and meta of the spec (with the instances' overrides) reach the CLI,
/// the registry's and the agent's HTTP, templates and Prometheus' targets.
#[test]
fn metadata_reaches_every_interface() {
    let f = fleet();
    let cli = f.registry.json(&["endpoints", NAME]);
    assert_eq!(metadata(&cli), expected(), "{cli}");
    let reg = wait_list(registry_http(&f), &[AUTH], 2);
    assert_eq!(metadata(&reg.json()), expected(), "{}", reg.body);
    let agent = wait_list(agent_http(f.agent("node-a")), &[], 2);
    assert_eq!(metadata(&agent.json()), expected(), "{}", agent.body);

    // The Rust resolver: its balancer sees the weights and tags, and follows them.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut r = Resolver::new(&f.registry.addr(), NAME).expect("resolver");
        r.token = Some(TOKEN.into());
        let mut b = r.balancer(Policy::Weighted).with_tag("v2");
        while b.endpoints().len() < 2 {
            tokio::time::timeout(20 * S, b.changed())
                .await
                .expect("the list within 20 s")
                .expect("the resolver runs");
        }
        let mut weights: Vec<(String, u32)> = b
            .endpoints()
            .into_iter()
            .map(|e| (e.node, e.weight))
            .collect();
        weights.sort();
        assert_eq!(weights, [("node-a".into(), 5), ("node-b".into(), 10)]);
        let to_b = (0..3000)
            .filter(|_| b.pick().is_some_and(|e| e.node == "node-b"))
            .count();
        assert!(
            (1700..2300).contains(&to_b),
            "{to_b} of 3000 to weight 10 of 15"
        );
        let none = Resolver::new(&f.registry.addr(), NAME).expect("resolver");
        assert!(
            none.balancer(Policy::RoundRobin)
                .with_tag("v3")
                .pick()
                .is_none()
        );
    });

    // Templates: endpoints(name, tag=...) and the entries of instances(...).
    let file = f.instance_file("node-b", "demo.api", "conf/upstream.txt");
    let text = wait_until("the rendered upstream file", 20 * S, || {
        let t = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        if t.lines().count() == 4 {
            Ok(t)
        } else {
            Err(t)
        }
    });
    assert!(text.contains("node-a 5 v2 a\nnode-b 10 v2 b\n"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains(':')).count(),
        2,
        "{text}"
    );

    // Prometheus: one target per instance, valid http_sd.
    let targets = get(registry_http(&f), "/v1/prometheus/targets", &[AUTH]).expect("targets");
    assert_eq!(targets.status, 200, "{}", targets.body);
    let doc = targets.json();
    check_http_sd(&doc);
    let groups = doc.as_array().expect("list");
    assert_eq!(groups.len(), 2, "{doc}");
    let status = f.registry.json(&["server", "status", "demo.api"]);
    for g in groups {
        let labels = &g["labels"];
        assert_eq!(labels["app"], "demo");
        assert_eq!(labels["server"], "api");
        assert_eq!(labels["__metrics_path__"], "/prom");
        let node = labels["node"].as_str().expect("node");
        let instance = corral_tests::find(&status, "node", node).expect("instance");
        assert_eq!(labels["ordinal"], instance["ordinal"].to_string());
        let ip = &f.agent(node).ip;
        let target = g["targets"][0].as_str().expect("target");
        assert!(target.starts_with(&format!("{ip}:")), "{target} on {ip}");
    }
    let denied = get(registry_http(&f), "/v1/prometheus/targets", &[]).expect("no token");
    assert_eq!(denied.status, 401, "{}", denied.body);
}

/// Prometheus' `http_sd` format: a list of `{"targets": [...], "labels": {...}}`, targets
/// `host:port`, label names `[a-zA-Z_][a-zA-Z0-9_]*`, values strings.
fn check_http_sd(doc: &Value) {
    let groups = doc
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {doc}"));
    for g in groups {
        let obj = g
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {g}"));
        for key in obj.keys() {
            assert!(
                ["targets", "labels"].contains(&key.as_str()),
                "{key} in {g}"
            );
        }
        let targets = g["targets"].as_array().unwrap_or_else(|| panic!("{g}"));
        assert!(!targets.is_empty(), "{g}");
        for t in targets {
            let t = t.as_str().unwrap_or_else(|| panic!("{t} is not a string"));
            let (host, port) = t.rsplit_once(':').unwrap_or_else(|| panic!("{t}"));
            assert!(!host.is_empty() && port.parse::<u16>().is_ok(), "{t}");
        }
        for (name, value) in g["labels"].as_object().unwrap_or_else(|| panic!("{g}")) {
            let mut chars = name.chars();
            let first_ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            assert!(
                first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "label name {name:?}"
            );
            assert!(value.is_string(), "label {name} = {value}");
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A blocking query with the current index waits, and returns soon after the list
/// changes, on the registry and on an agent; one whose index is old returns at once.
/// The change is a status report of a simulated node, timed right before it is sent.
#[test]
fn blocking_queries_return_soon_after_a_change() {
    let f = Fleet::start_with(1, &["--admin-token", TOKEN]);
    let sims: Vec<(String, String)> = corral_tests::test_ips(2)
        .into_iter()
        .enumerate()
        .map(|(i, ip)| (format!("sim-{i}"), ip))
        .collect();
    f.registry.apply(
        "app = \"demo\"\nserver = \"sim\"\nnodes = [\"sim-0\", \"sim-1\"]\n\
         command = [\"sleep\", \"1000\"]\n[[adapters]]\nname = \"Main\"\nport = \"auto\"\n",
    );
    let sim = SimNodes::join(&f.registry.addr(), &sims);
    sim.report("demo", "sim", "running");
    let name = "demo.sim.Main";
    let reg = registry_http(&f);
    let agent = agent_http(f.agent("node-a"));
    let list = |addr, auth: &[(&str, &str)]| {
        wait_until(&format!("2 endpoints at {addr}"), 20 * S, || {
            let a = get(addr, &format!("/v1/endpoints/{name}"), auth)?;
            let n = a.json().as_array().map_or(0, Vec::len);
            if a.status == 200 && n == 2 {
                Ok(a)
            } else {
                Err(a.body)
            }
        })
    };
    let index_reg = list(reg, &[AUTH]).index();
    let index_agent = list(agent, &[]).index();

    // Nothing changes: the query waits its `wait` out and keeps its index.
    let start = Instant::now();
    let path = |index: u64, wait: &str| format!("/v1/endpoints/{name}?index={index}&wait={wait}");
    let same = get(reg, &path(index_reg, "300ms"), &[AUTH]).expect("get");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(same.index(), index_reg);
    // An old index returns at once.
    let old = get(reg, &path(1, "30s"), &[AUTH]).expect("get");
    assert_eq!((old.status, old.index()), (200, index_reg));

    // Both queries are on their way (sent) before the change is.
    let blocked = |addr: SocketAddr, index: u64, auth: &[(&str, &str)]| {
        let pending = send(addr, &path(index, "30s"), auth).expect("send");
        std::thread::spawn(move || {
            let a = pending.answer().expect("blocking query");
            (a, now_ms())
        })
    };
    let on_registry = blocked(reg, index_reg, &[AUTH]);
    let on_agent = blocked(agent, index_agent, &[]);
    let changed_at = now_ms();
    sim.report_one(1, "demo", "sim", "stopped");
    let (a, reg_at) = on_registry.join().expect("thread");
    let (b, agent_at) = on_agent.join().expect("thread");
    for (what, answer, at) in [("registry", &a, reg_at), ("agent", &b, agent_at)] {
        assert_eq!(answer.status, 200, "{what}: {}", answer.body);
        let list = answer.json();
        let nodes: Vec<&str> = list
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|e| e["node"].as_str())
            .collect();
        assert_eq!(nodes, ["sim-0"], "{what}");
        let after = at - changed_at;
        eprintln!("blocking query on the {what} returned {after} ms after the change was sent");
        assert!(after < 2000, "{what}: returned {after} ms after the change");
    }
    assert!(a.index() > index_reg && b.index() > index_agent);
}

/// `/v1/watch/NAME` streams the list now and then every change; a client that comes
/// back with `Last-Event-ID` gets no repeat of what it has.
#[test]
fn watch_streams_every_change() {
    let f = fleet();
    for (addr, auth) in [
        (registry_http(&f), vec![AUTH]),
        (agent_http(f.agent("node-a")), vec![]),
    ] {
        wait_list(addr, &auth, 2);
        let path = format!("/v1/watch/{NAME}");
        let mut events = Events::open(addr, &path, &auth).expect("open");
        assert_eq!(events.status, 200);
        let first = events.next(10 * S).expect("the list now");
        assert_eq!(first.event, "endpoints");
        assert_eq!(
            serde_json::from_str::<Value>(&first.data)
                .expect("json")
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        let out = f
            .registry
            .cli(&["server", "stop", "demo.api", "--node", "node-b"]);
        assert!(out.status.success());
        let next = events.next(20 * S).expect("the change");
        let list: Value = serde_json::from_str(&next.data).expect("json");
        assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
        assert!(next.id.parse::<u64>().expect("id") > first.id.parse::<u64>().expect("id"));

        // Back with the id it has: nothing until the next change.
        let auth_again: Vec<(&str, &str)> = auth
            .iter()
            .copied()
            .chain([("Last-Event-ID", next.id.as_str())])
            .collect();
        let mut again = Events::open(addr, &path, &auth_again).expect("reopen");
        assert!(again.next(Duration::from_millis(500)).is_err(), "no repeat");
        let out = f
            .registry
            .cli(&["server", "start", "demo.api", "--node", "node-b"]);
        assert!(out.status.success());
        let back = again.next(20 * S).expect("node-b back");
        let list: Value = serde_json::from_str(&back.data).expect("json");
        assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    }
}

/// Errors are JSON naming what is wrong; the agent keeps answering with the last list
/// while no registry does.
#[test]
fn errors_name_the_problem_and_the_agent_outlives_the_registry() {
    let mut f = fleet();
    let reg = registry_http(&f);
    let agent = agent_http(f.agent("node-a"));
    for (addr, auth) in [(reg, vec![AUTH]), (agent, vec![])] {
        for (path, status, needle) in [
            (
                "/v1/endpoints/demo.api.Nope",
                404,
                "no service \"demo.api.Nope\"",
            ),
            ("/v1/endpoints/demo.api", 400, "APP.SERVER.ADAPTER"),
            ("/v1/endpoints/demo.api.Main?index=x", 400, "index: \"x\""),
            (
                "/v1/endpoints/demo.api.Main?wait=soon",
                400,
                "wait: \"soon\"",
            ),
            (
                "/v1/endpoints/demo.api.Main?colour=red",
                400,
                "unknown parameter \"colour\"",
            ),
            ("/v1/watch/demo.api.Nope", 404, "no service"),
        ] {
            let a = get(addr, path, &auth).expect("get");
            assert_eq!(a.status, status, "{addr}{path}: {}", a.body);
            let message = a.json()["error"].as_str().unwrap_or_default().to_string();
            assert!(message.contains(needle), "{addr}{path}: {message}");
        }
    }
    for auth in [vec![], vec![("Authorization", "Bearer wrong")]] {
        let a = get(reg, &format!("/v1/endpoints/{NAME}"), &auth).expect("get");
        assert_eq!(a.status, 401, "{}", a.body);
        assert!(
            a.json()["error"]
                .as_str()
                .is_some_and(|m| m.contains("token"))
        );
    }

    let before = wait_list(agent, &[], 2);
    f.registry.kill();
    let after = get(agent, &format!("/v1/endpoints/{NAME}"), &[]).expect("get");
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(after.json(), before.json());
    assert_eq!(after.index(), before.index());
}

/// The agent answers gRPC `Query.Find` and `Query.Watch` on its HTTP port from its watch
/// cache, without a token (it serves its host); the Rust resolver works pointed at it;
/// any other path there is still plain HTTP.
#[test]
fn the_agent_answers_grpc_queries_from_its_cache() {
    use corral_proto::v1::FindRequest;
    use corral_proto::v1::query_client::QueryClient;
    let f = fleet();
    let agent = agent_http(f.agent("node-a"));
    let url = format!("http://{agent}");
    let nodes = |list: &corral_proto::v1::Endpoints| -> Vec<(String, u32)> {
        let mut n: Vec<(String, u32)> = list
            .endpoints
            .iter()
            .map(|e| (e.node.clone(), e.weight))
            .collect();
        n.sort();
        n
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut q = QueryClient::connect(url.clone()).await.expect("connect");
        let find = |name: &str, ignore_case| FindRequest {
            name: name.into(),
            ignore_case,
        };
        let list = q.find(find(NAME, false)).await.expect("find").into_inner();
        assert!(list.known);
        assert_eq!(
            nodes(&list),
            [("node-a".into(), 5), ("node-b".into(), 10)],
            "{list:?}"
        );
        for (name, ignore_case, code) in [
            ("demo.none.Main", false, tonic::Code::NotFound),
            ("not-a-name", false, tonic::Code::InvalidArgument),
            (NAME, true, tonic::Code::InvalidArgument),
        ] {
            let err = q.find(find(name, ignore_case)).await.expect_err(name);
            assert_eq!(err.code(), code, "{name}: {err:?}");
            assert!(!err.message().is_empty(), "{name}");
        }

        // Watch: the list now, then node-b's instance stopping.
        let mut stream = q
            .watch(find(NAME, false))
            .await
            .expect("watch")
            .into_inner();
        let first = tokio::time::timeout(20 * S, stream.message())
            .await
            .expect("the first list within 20 s")
            .expect("stream")
            .expect("a list");
        assert_eq!(nodes(&first).len(), 2, "{first:?}");
        let out = f
            .registry
            .cli(&["server", "stop", "demo.api", "--node", "node-b"]);
        assert!(out.status.success(), "{out:?}");
        let after = tokio::time::timeout(20 * S, async {
            loop {
                let list = stream.message().await.expect("stream").expect("a list");
                if list.endpoints.len() == 1 {
                    return list;
                }
            }
        })
        .await
        .expect("the stop seen within 20 s");
        assert_eq!(nodes(&after), [("node-a".into(), 5)]);

        // The resolver, pointed at the agent instead of a registry, needs no token.
        let r = Resolver::new(&url, NAME).expect("resolver");
        let mut b = r.balancer(Policy::RoundRobin);
        while b.endpoints().len() != 1 {
            tokio::time::timeout(20 * S, b.changed())
                .await
                .expect("the list within 20 s")
                .expect("the resolver runs");
        }
        assert_eq!(b.pick().map(|e| e.node).as_deref(), Some("node-a"));
    });
    let other = get(agent, "/v1/nothing-here", &[]).expect("get");
    assert_eq!(other.status, 404, "{}", other.body);
    let grpc_path = get(agent, "/corral.v1.Admin/ListNodes", &[]).expect("get");
    assert_eq!(grpc_path.status, 404, "{}", grpc_path.body);
}
