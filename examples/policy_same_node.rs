//! Prefer the same node: calls stay on this host's endpoints while it has one
//! (`$CORRAL_NODE`, which the agent sets for every service; or `--node` here), and go to
//! any endpoint otherwise. Tags narrow the choice too: `--tag v2`.
//!
//!     cargo run -p corral-client --example policy_same_node -- http://127.0.0.1:17890 demo.echo.Main
//!
//! `CORRAL_TOKEN` is sent when set (a registry without `--public-discovery` wants one).

use std::collections::BTreeMap;
use std::time::Duration;

use corral_client::{Policy, Resolver};

fn resolver(locator: &str, name: &str) -> anyhow::Result<Resolver> {
    let mut r = Resolver::new(locator, name)?;
    r.token = std::env::var("CORRAL_TOKEN").ok();
    Ok(r)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let locator = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:17890".into());
    let name = args.next().unwrap_or_else(|| "demo.echo.Main".into());
    // The caller's node: CORRAL_NODE inside a service, else the third argument.
    let policy = match std::env::args().nth(3) {
        Some(node) => Policy::PreferNode(node),
        None => Policy::same_node(),
    };
    println!("{policy:?}");
    let mut balancer = resolver(&locator, &name)?.balancer(policy);
    // The first list, once a registry has answered.
    tokio::time::timeout(Duration::from_secs(10), balancer.changed()).await??;
    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        match balancer.pick() {
            Some(e) => {
                *calls
                    .entry(format!(
                        "{}:{} ({}, weight {})",
                        e.host, e.port, e.node, e.weight
                    ))
                    .or_default() += 1
            }
            None => println!("no endpoint"),
        }
    }
    for (endpoint, n) in calls {
        println!("{n:>3} calls -> {endpoint}");
    }
    Ok(())
}
