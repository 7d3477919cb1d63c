//! Consistent hash: the same key (a user, a session, a shard) always goes to the same
//! endpoint while the list stays; when an endpoint comes or goes only its keys move.
//!
//!     cargo run -p corral-client --example policy_consistent_hash -- http://127.0.0.1:17890 demo.echo.Main
//!
//! `CORRAL_TOKEN` is sent when set (a registry without `--public-discovery` wants one).

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
    let mut balancer = resolver(&locator, &name)?.balancer(Policy::ConsistentHash);
    // The first list, once a registry has answered.
    tokio::time::timeout(Duration::from_secs(10), balancer.changed()).await??;
    for user in ["alice", "bob", "carol", "alice", "bob", "carol"] {
        match balancer.pick_for(user.as_bytes()) {
            Some(e) => println!("{user} -> {}:{} ({})", e.host, e.port, e.node),
            None => println!("{user}: no endpoint"),
        }
    }
    Ok(())
}
