//! A tiny HTTP service to package and run with Corral (the README's walk-through):
//! it listens on `$CORRAL_NODE_IP:$CORRAL_PORT_MAIN`, answers `GET /health` with 200, and
//! anything else with who it is and the peers in its `conf/peers.txt`.
//!
//! `cargo build --release -p corral-client --example hello`

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

fn main() -> std::io::Result<()> {
    let ip = std::env::var("CORRAL_NODE_IP").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("CORRAL_PORT_MAIN").unwrap_or_else(|_| "8080".into());
    let node = std::env::var("CORRAL_NODE").unwrap_or_default();
    let ordinal = std::env::var("CORRAL_ORDINAL").unwrap_or_default();
    let dir = std::env::var("CORRAL_INSTANCE_DIR").unwrap_or_else(|_| ".".into());
    let listener = TcpListener::bind(format!("{ip}:{port}"))?;
    println!("hello listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut reader = BufReader::new(&stream);
        let mut request = String::new();
        if reader.read_line(&mut request).is_err() {
            continue;
        }
        let mut header = String::new();
        while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
            header.clear();
        }
        let body = if request.starts_with("GET /health ") {
            "ok\n".to_string()
        } else {
            let peers =
                std::fs::read_to_string(format!("{dir}/conf/peers.txt")).unwrap_or_default();
            format!("hello from {node} (ordinal {ordinal})\npeers:\n{peers}")
        };
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(())
}
