//! A tiny HTTP service for the end-to-end tests. It listens on `$CORRAL_NODE_IP` and
//! `$CORRAL_PORT_MAIN` (or `--listen ADDR`) and answers:
//!
//! * `GET /health`: 200, or 503 while a file `unhealthy` exists in its working directory
//!   (tests flip health by creating and removing that file);
//! * anything else: 200 with its node name.
//!
//! It prints its config files' names and contents at start, so tests can see them.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = match (args.next().as_deref(), args.next()) {
        (Some("--listen"), Some(addr)) => addr,
        _ => {
            let ip = std::env::var("CORRAL_NODE_IP").unwrap_or_else(|_| "127.0.0.1".into());
            let port = std::env::var("CORRAL_PORT_MAIN").unwrap_or_else(|_| "0".into());
            format!("{ip}:{port}")
        }
    };
    let node = std::env::var("CORRAL_NODE").unwrap_or_default();
    let listener = TcpListener::bind(&listen)?;
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        // Read the headers too: closing with unread input would reset the connection.
        let mut header = String::new();
        while reader.read_line(&mut header).is_ok_and(|n| n > 0) && header.trim_end() != "" {
            header.clear();
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = if path == "/health" {
            if std::path::Path::new("unhealthy").exists() {
                ("503 Service Unavailable", "unhealthy")
            } else {
                ("200 OK", "ok")
            }
        } else {
            ("200 OK", node.as_str())
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(())
}
