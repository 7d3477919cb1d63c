//! A GET of an agent's (or the registry's) `/health` over plain HTTP/1, with a
//! timeout and a cap on the body: for `agent check`, and for waiting until a daemon
//! serves.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use tokio::net::TcpStream;

use super::{HEALTH_TIMEOUT, POLL};

/// The largest `/health` body read.
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("GET http://{addr}/health: {reason}")]
pub struct HealthError {
    pub addr: SocketAddr,
    pub reason: String,
}

/// GETs `/health` at `addr` (an unspecified IP means this host); its JSON body (null if
/// the body is not JSON) when the status is 2xx.
pub async fn get_health(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<serde_json::Value, HealthError> {
    let addr = dial_addr(addr);
    let reason = match tokio::time::timeout(timeout, fetch_health(addr)).await {
        Ok(Ok(body)) => return Ok(body),
        Ok(Err(reason)) => reason,
        Err(_) => format!("no answer within {timeout:?}"),
    };
    Err(HealthError { addr, reason })
}

/// Polls `/health` at `addr` until it answers 2xx: for a daemon that is ready only once
/// it serves (the registry, after opening its database).
pub async fn wait_healthy(addr: SocketAddr) {
    while get_health(addr, HEALTH_TIMEOUT).await.is_err() {
        tokio::time::sleep(POLL).await;
    }
}

fn dial_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

async fn fetch_health(addr: SocketAddr) -> Result<serde_json::Value, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let result = async {
        let request = http::Request::get("/health")
            .header(http::header::HOST, addr.to_string())
            .header(http::header::USER_AGENT, "corral agent check")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_address_is_dialed_on_loopback() {
        let any: SocketAddr = "0.0.0.0:17892".parse().expect("addr");
        assert_eq!(dial_addr(any).to_string(), "127.0.0.1:17892");
        let any6: SocketAddr = "[::]:17892".parse().expect("addr");
        assert_eq!(dial_addr(any6).to_string(), "[::1]:17892");
    }
}
