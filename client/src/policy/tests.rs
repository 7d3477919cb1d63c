use std::collections::HashMap;

use super::*;

fn ep(node: &str, port: u32, weight: u32) -> Endpoint {
    Endpoint {
        node: node.into(),
        host: "10.0.0.1".into(),
        port,
        weight,
        ..Endpoint::default()
    }
}

fn counts(p: &Picker, eps: &[Endpoint], n: usize) -> HashMap<u32, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        let e = p.pick(eps, None).expect("one");
        *out.entry(e.port).or_default() += 1;
    }
    out
}

#[test]
fn round_robin_takes_each_in_turn() {
    let eps = [ep("a", 1, 1), ep("b", 2, 1), ep("c", 3, 1)];
    let p = Picker::new(Policy::RoundRobin);
    let ports: Vec<u32> = (0..6)
        .map(|_| p.pick(&eps, None).expect("one").port)
        .collect();
    assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
    assert!(p.pick(&[], None).is_none());
}

#[test]
fn random_reaches_every_endpoint() {
    let eps = [ep("a", 1, 1), ep("b", 2, 1), ep("c", 3, 1)];
    let c = counts(&Picker::new(Policy::Random), &eps, 3000);
    assert!(c.values().all(|n| *n > 700), "{c:?}");
}

#[test]
fn weighted_follows_the_weights() {
    let eps = [ep("a", 1, 1), ep("b", 2, 3), ep("c", 3, 0)];
    let c = counts(&Picker::new(Policy::Weighted), &eps, 8000);
    assert_eq!(c.get(&3), None, "weight 0 is never chosen: {c:?}");
    let ratio = c[&2] as f64 / c[&1] as f64;
    assert!((2.4..3.6).contains(&ratio), "{c:?}");
    // All zero: chosen alike.
    let zero = [ep("a", 1, 0), ep("b", 2, 0)];
    assert_eq!(counts(&Picker::new(Policy::Weighted), &zero, 1000).len(), 2);
}

#[test]
fn consistent_hash_keeps_keys_where_they_were() {
    let p = Picker::new(Policy::ConsistentHash);
    let four: Vec<Endpoint> = (1..=4).map(|i| ep("n", i, 1)).collect();
    let where_ = |eps: &[Endpoint], k: usize| {
        p.pick(eps, Some(format!("user-{k}").as_bytes()))
            .expect("one")
            .port
    };
    let before: Vec<u32> = (0..1000).map(|k| where_(&four, k)).collect();
    let again: Vec<u32> = (0..1000).map(|k| where_(&four, k)).collect();
    assert_eq!(before, again, "the same key, the same endpoint");
    let spread = before.iter().filter(|p| **p == 1).count();
    assert!(
        (150..350).contains(&spread),
        "{spread} of 1000 on one of four"
    );
    // Endpoint 4 goes: only its keys move.
    let three = &four[..3];
    for (k, was) in before.iter().enumerate() {
        if *was != 4 {
            assert_eq!(where_(three, k), *was, "key {k} moved");
        }
    }
    // Fixed for good: clients of any version agree.
    assert_eq!(
        stable_hash(&[b"user-1", b"10.0.0.1:1"]),
        0xadec_604b_5663_f4ab
    );
}

#[test]
fn prefer_node_keeps_to_the_node_while_it_has_one() {
    let eps = [ep("a", 1, 1), ep("b", 2, 1), ep("b", 3, 1)];
    let p = Picker::new(Policy::PreferNode("b".into()));
    let c = counts(&p, &eps, 10);
    assert_eq!((c.get(&1), c[&2], c[&3]), (None, 5, 5));
    let p = Picker::new(Policy::PreferNode("z".into()));
    assert_eq!(
        counts(&p, &eps, 9).len(),
        3,
        "no endpoint on z: all of them"
    );
}
