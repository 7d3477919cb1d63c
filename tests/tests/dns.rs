//! The agent's DNS for the `corral.` zone, asked with a real resolver client (`dig`).

use std::collections::BTreeSet;
use std::time::Duration;

use corral_tests::fleet::{Fleet, endpoints, wait_endpoints};
use corral_tests::lookup::{agent_dns, dig, records, status_and_flags};
use corral_tests::sim::SimNodes;
use corral_tests::{test_ips, wait_until};

const S: Duration = Duration::from_secs(1);

const SPEC: &str = r#"
app = "demo"
server = "api"
nodes = ["node-a", "node-b"]
command = ["sleep", "1000"]
[[adapters]]
name = "Main"
port = "auto"
weight = 10
[[adapters.override]]
ordinal = 0
weight = 5
"#;

/// A known server with no endpoint: it is stopped.
const IDLE: &str = "app = \"demo\"\nserver = \"idle\"\nnodes = [\"node-a\"]\n\
    command = [\"sleep\", \"1000\"]\nstate = \"stopped\"\n[[adapters]]\nname = \"Main\"\nport = \"auto\"\n";

/// The answer records of `name`'s `rtype`, once there are `n` of them.
fn wait_answers(dns: std::net::SocketAddr, name: &str, rtype: &str, n: usize) -> Vec<Vec<String>> {
    wait_until(&format!("{n} {rtype} records of {name}"), 20 * S, || {
        let text = dig(dns, &["+noall", "+answer", name, rtype]);
        let r = records(&text);
        if r.len() == n { Ok(r) } else { Err(text) }
    })
}

/// A and SRV answers (rotated, with weights, ports and the targets' addresses), names in
/// any case, NXDOMAIN for a name no server has, an empty NOERROR for one with no
/// endpoint, REFUSED outside the zone.
#[test]
fn dns_answers_from_the_agent() {
    let f = Fleet::start(2);
    f.registry.apply(SPEC);
    f.registry.apply(IDLE);
    let eps = wait_endpoints(&f.registry, "demo.api.Main", "both", 20 * S, |e| {
        e.len() == 2
    });
    let dns = agent_dns(f.agent("node-a"));

    let a = wait_answers(dns, "main.api.demo.corral.", "A", 2);
    let ips: BTreeSet<String> = a.iter().map(|r| r[4].clone()).collect();
    let want: BTreeSet<String> = eps.iter().map(|e| e.1.clone()).collect();
    assert_eq!(ips, want);
    assert!(
        a.iter().all(|r| r[1] == "5" && r[3] == "A"),
        "TTL 5 s: {a:?}"
    );
    // The order rotates from one answer to the next.
    let firsts: BTreeSet<String> = (0..4)
        .map(|_| dig(dns, &["+short", "main.api.demo.corral", "A"]))
        .filter_map(|t| t.lines().next().map(str::to_string))
        .collect();
    assert_eq!(firsts.len(), 2, "rotated: {firsts:?}");
    // Names are case-insensitive.
    let upper = wait_answers(dns, "MAIN.Api.DEMO.Corral.", "A", 2);
    assert_eq!(upper.len(), 2);

    // SRV: a record per endpoint, with its weight and port, and the target's address.
    let text = dig(
        dns,
        &[
            "+noall",
            "+answer",
            "+additional",
            "_main._tcp.api.demo.corral.",
            "SRV",
        ],
    );
    let all = records(&text);
    let srv: Vec<&Vec<String>> = all.iter().filter(|r| r[3] == "SRV").collect();
    assert_eq!(srv.len(), 2, "{text}");
    for (node, _, port) in &eps {
        let target = format!("{node}.main.api.demo.corral.");
        let r = srv
            .iter()
            .find(|r| r[7] == target)
            .unwrap_or_else(|| panic!("no SRV for {target}: {text}"));
        let weight = if node == "node-a" { "5" } else { "10" };
        assert_eq!(
            (r[5].as_str(), r[6].as_str()),
            (weight, port.to_string().as_str()),
            "{text}"
        );
        let ip = &f.agent(node).ip;
        assert!(
            all.iter()
                .any(|a| a[0] == target && a[3] == "A" && &a[4] == ip),
            "the additional A record of {target}: {text}"
        );
    }

    let (status, _) = status_and_flags(&dig(dns, &["nope.api.demo.corral.", "A"]));
    assert_eq!(status, "NXDOMAIN");
    let (status, _) = status_and_flags(&dig(dns, &["_main._tcp.nope.demo.corral.", "SRV"]));
    assert_eq!(status, "NXDOMAIN");
    let empty = dig(dns, &["main.idle.demo.corral.", "A"]);
    let (status, _) = status_and_flags(&empty);
    assert_eq!(status, "NOERROR", "{empty}");
    assert!(empty.contains("ANSWER: 0,"), "{empty}");
    let (status, _) = status_and_flags(&dig(dns, &["example.com.", "A"]));
    assert_eq!(status, "REFUSED");

    a_burst_gets_every_answer(dns);
}

/// A question in wire form: `id`, RD set, one question of type A, class IN.
fn question(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).expect("a short label"));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// 100 questions sent at once, before any answer is read, are read by the agent several
/// per system call and answered together: each gets its own answer (its id, its name's
/// code and records), none is lost or answered twice.
fn a_burst_gets_every_answer(dns: std::net::SocketAddr) {
    // (name, response code, answer records)
    let names = [
        ("main.api.demo.corral.", 0u8, 2u16),
        ("nope.api.demo.corral.", 3, 0),
        ("example.com.", 5, 0),
    ];
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(20 * S)).expect("timeout");
    let ids: Vec<u16> = (1..=100).collect();
    for &id in &ids {
        let (name, _, _) = names[usize::from(id) % 3];
        socket.send_to(&question(id, name), dns).expect("send");
    }
    let mut seen = BTreeSet::new();
    let mut buf = [0u8; 1500];
    while seen.len() < ids.len() {
        let (n, _) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("answers to {} of 100 questions: {e}", seen.len()));
        assert!(n >= 12, "a short answer: {:?}", &buf[..n]);
        let id = u16::from_be_bytes([buf[0], buf[1]]);
        let (name, code, count) = names[usize::from(id) % 3];
        assert!(seen.insert(id), "question {id} answered twice");
        assert_eq!(buf[3] & 0x0f, code, "the code of {name} (question {id})");
        assert_eq!(
            u16::from_be_bytes([buf[6], buf[7]]),
            count,
            "the answer records of {name} (question {id})"
        );
    }
}

/// 40 endpoints do not fit in 512 bytes: over UDP the answer is cut with the TC bit set,
/// and dig, asking again over TCP (as resolvers do), gets all of them.
#[test]
fn dns_truncates_over_udp_then_answers_over_tcp() {
    let f = Fleet::start(1);
    let sims: Vec<(String, String)> = test_ips(40)
        .into_iter()
        .enumerate()
        .map(|(i, ip)| (format!("sim-{i:02}"), ip))
        .collect();
    let nodes: Vec<String> = sims.iter().map(|(n, _)| format!("{n:?}")).collect();
    f.registry.apply(&format!(
        "app = \"demo\"\nserver = \"big\"\nnodes = [{}]\ncommand = [\"sleep\", \"1000\"]\n\
         [[adapters]]\nname = \"Main\"\nport = \"auto\"\n",
        nodes.join(", ")
    ));
    let sim = SimNodes::join(&f.registry.addr(), &sims);
    sim.report("demo", "big", "running");
    wait_until("40 endpoints", 20 * S, || {
        let eps = endpoints(&f.registry, "demo.big.Main")?;
        if eps.len() == 40 {
            Ok(())
        } else {
            Err(format!("{}", eps.len()))
        }
    });
    let dns = agent_dns(f.agent("node-a"));
    wait_answers(dns, "main.big.demo.corral.", "A", 40);

    let udp = dig(dns, &["+noedns", "+ignore", "main.big.demo.corral.", "A"]);
    let (status, flags) = status_and_flags(&udp);
    assert_eq!(status, "NOERROR", "{udp}");
    assert!(flags.split_whitespace().any(|f| f == "tc"), "TC set: {udp}");
    let cut = udp
        .split("ANSWER: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(99);
    assert!(cut < 40, "{udp}");

    // dig retries over TCP on TC, as a resolver does; and +tcp asks over TCP at once.
    for args in [&["+noedns"][..], &["+tcp"][..]] {
        let full = dig(
            dns,
            &[args, &["+noall", "+answer", "main.big.demo.corral.", "A"]].concat(),
        );
        assert_eq!(records(&full).len(), 40, "{args:?}: {full}");
    }
    drop(sim);
}
