//! Follow a Corral service by name and call it through a balanced channel.
//!
//!     cargo run -p corral-client --example resolver -- http://127.0.0.1:17890 demo.echo.Main
//!
//! Prints the endpoint list every time it changes. A real client would make its own
//! gRPC client from `channel` (e.g. `GreeterClient::new(channel)`); requests then go to
//! whichever endpoints are live and healthy right now.

use corral_client::Resolver;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let locator = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:17890".into());
    let name = args.next().unwrap_or_else(|| "demo.echo.Main".into());
    let resolver = Resolver::new(&locator, &name)?;
    let (_channel, mut endpoints) = resolver.balance_channel(16);
    println!("watching {name} through {locator} (Ctrl-C to stop)");
    loop {
        let list: Vec<String> = endpoints
            .borrow_and_update()
            .iter()
            .map(|e| format!("{}:{} ({})", e.host, e.port, e.node))
            .collect();
        println!("{name}: {} endpoint(s) {list:?}", list.len());
        tokio::select! {
            changed = endpoints.changed() => changed?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
