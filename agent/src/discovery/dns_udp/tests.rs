use super::*;

/// A query for `name` of type `qtype` (as dig sends it: RD set, with or without EDNS).
fn query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if let Some(size) = edns {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&size.to_be_bytes());
        // rcode/version/flags, then a COOKIE option (skipped).
        q.extend_from_slice(&[0, 0, 0, 0, 0, 12, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    }
    q
}

#[test]
fn plain_queries_are_read_and_others_left_to_the_full_handler() {
    let q = query(7, "Main.Api.demo.corral.", 1, None);
    let p = parse(&q).expect("a plain query");
    assert_eq!(p.labels, ["main", "api", "demo", "corral"]);
    assert_eq!(p.qtype, RecordType::A);
    assert_eq!(p.edns, None);
    assert_eq!(p.question, &q[12..]);
    let e = query(7, "main.api.demo.corral.", 33, Some(4096));
    let pe = parse(&e).expect("with EDNS");
    assert_eq!((pe.qtype, pe.edns), (RecordType::SRV, Some(4096)));
    assert_ne!(
        pe.key,
        parse(&query(7, "main.api.demo.corral.", 33, None))
            .expect("q")
            .key
    );

    let mut response = q.clone();
    response[2] |= 0x80;
    assert!(parse(&response).is_none(), "a response");
    let mut two = q.clone();
    two[5] = 2;
    assert!(parse(&two).is_none(), "two questions");
    let mut chaos = q.clone();
    let n = chaos.len();
    chaos[n - 1] = 3;
    assert!(parse(&chaos).is_none(), "class CH");
    assert!(parse(&q[..10]).is_none(), "short");
    let mut trailing = q.clone();
    trailing.push(0);
    assert!(parse(&trailing).is_none(), "bytes after the question");
}
