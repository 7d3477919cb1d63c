use super::*;

fn ep(node: &str, host: &str, port: u32, weight: u32) -> Endpoint {
    Endpoint {
        node: node.into(),
        host: host.into(),
        port,
        weight,
        ..Endpoint::default()
    }
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

fn rdatas(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| r.data.to_string()).collect()
}

#[test]
fn questions_are_read_by_their_labels() {
    assert_eq!(
        question(&["main", "echo", "demo", "corral"]),
        Question::Service("demo.echo.main".into())
    );
    assert_eq!(
        question(&["_main", "_tcp", "echo", "demo", "corral"]),
        Question::Srv("demo.echo.main".into())
    );
    assert_eq!(
        question(&["node-a", "main", "echo", "demo", "corral"]),
        Question::Instance {
            node: "node-a".into(),
            service: "demo.echo.main".into()
        }
    );
    assert_eq!(question(&["corral"]), Question::Apex);
    assert_eq!(
        question(&["_main", "_udp", "echo", "demo", "corral"]),
        Question::NoSuchName
    );
    assert_eq!(question(&["echo", "demo", "corral"]), Question::NoSuchName);
    assert_eq!(question(&["example", "com"]), Question::NotOurs);
    assert_eq!(question(&[]), Question::NotOurs);
}

#[test]
fn addresses_rotate_and_keep_to_their_type() {
    let eps = [
        ep("a", "10.0.0.1", 1, 1),
        ep("b", "10.0.0.2", 1, 1),
        ep("c", "::1", 1, 1),
        ep("d", "db.example", 1, 1),
    ];
    let q = Question::Service("demo.echo.main".into());
    let n = name("main.echo.demo.corral.");
    let first = answer(&q, &n, Some(&eps), RecordType::A, 5, 0);
    assert_eq!(rdatas(&first.answers), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(first.answers[0].ttl, 5);
    let next = answer(&q, &n, Some(&eps), RecordType::A, 5, 1);
    assert_eq!(rdatas(&next.answers), ["10.0.0.2", "10.0.0.1"]);
    let v6 = answer(&q, &n, Some(&eps), RecordType::AAAA, 5, 7);
    assert_eq!(rdatas(&v6.answers), ["::1"]);
    let txt = answer(&q, &n, Some(&eps), RecordType::TXT, 5, 0);
    assert_eq!((txt.code, txt.answers.len()), (ResponseCode::NoError, 0));
    assert_eq!(txt.authority.len(), 1, "the SOA");
}

#[test]
fn unknown_is_nxdomain_and_empty_is_nodata() {
    let q = Question::Service("demo.echo.main".into());
    let n = name("main.echo.demo.corral.");
    let unknown = answer(&q, &n, None, RecordType::A, 5, 0);
    assert_eq!(unknown.code, ResponseCode::NXDomain);
    let empty = answer(&q, &n, Some(&[]), RecordType::A, 5, 0);
    assert_eq!(
        (empty.code, empty.answers.len(), empty.authority.len()),
        (ResponseCode::NoError, 0, 1)
    );
    let other = answer(&Question::NotOurs, &n, Some(&[]), RecordType::A, 5, 0);
    assert_eq!(other.code, ResponseCode::Refused);
}

#[test]
fn srv_records_carry_ports_weights_and_targets() {
    let eps = [
        ep("node-a", "10.0.0.1", 20001, 10),
        ep("node-b", "10.0.0.2", 20002, 5),
    ];
    let q = Question::Srv("demo.echo.main".into());
    let n = name("_Main._tcp.echo.demo.corral.");
    let a = answer(&q, &n, Some(&eps), RecordType::SRV, 5, 0);
    assert_eq!(
        rdatas(&a.answers),
        [
            "1 10 20001 node-a.main.echo.demo.corral.",
            "1 5 20002 node-b.main.echo.demo.corral."
        ]
    );
    assert_eq!(rdatas(&a.additionals), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(
        a.additionals[0].name.to_ascii(),
        "node-a.main.echo.demo.corral."
    );
    // The target answers for itself.
    let i = Question::Instance {
        node: "node-b".into(),
        service: "demo.echo.main".into(),
    };
    let t = name("node-b.main.echo.demo.corral.");
    assert_eq!(
        rdatas(&answer(&i, &t, Some(&eps), RecordType::A, 5, 0).answers),
        ["10.0.0.2"]
    );
    // Node names may have capitals; DNS asks in any case.
    let upper = [ep("Node-C", "10.0.0.3", 20003, 1)];
    let c = Question::Instance {
        node: "node-c".into(),
        service: "demo.echo.main".into(),
    };
    assert_eq!(
        rdatas(&answer(&c, &t, Some(&upper), RecordType::A, 5, 0).answers),
        ["10.0.0.3"]
    );
    let gone = Question::Instance {
        node: "node-z".into(),
        service: "demo.echo.main".into(),
    };
    assert_eq!(
        answer(&gone, &t, Some(&eps), RecordType::A, 5, 0).code,
        ResponseCode::NXDomain
    );
}
