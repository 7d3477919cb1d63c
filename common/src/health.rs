//! Asking a daemon's `/health` whether it serves: `agent check` asks the local agent, and
//! the registry waits for its own `/health` before it tells systemd it is ready.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use tokio::net::TcpStream;

/// A daemon that does not answer `/health` within this is not answering.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often [`wait_healthy`] asks again.
const POLL: Duration = Duration::from_millis(100);
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Answers every request with `response`, written as raw HTTP/1.1.
    async fn answering(response: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(response.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_2xx_answer_is_healthy_and_its_body_read() {
        let ok = answering("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{\"pid\":7}").await;
        let body = get_health(ok, HEALTH_TIMEOUT).await.expect("healthy");
        assert_eq!(body["pid"], 7);
        wait_healthy(ok).await;
    }

    #[tokio::test]
    async fn errors_name_the_address_and_the_status() {
        let sick = answering("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        let err = get_health(sick, HEALTH_TIMEOUT).await.expect_err("503");
        assert!(err.reason.contains("HTTP 503"), "{err}");
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind");
        let err = get_health(closed, HEALTH_TIMEOUT)
            .await
            .expect_err("closed");
        assert!(err.to_string().contains(&closed.to_string()), "{err}");
    }

    #[test]
    fn an_unspecified_address_is_dialed_on_loopback() {
        let any: SocketAddr = "0.0.0.0:17892".parse().expect("addr");
        assert_eq!(dial_addr(any).to_string(), "127.0.0.1:17892");
        let any6: SocketAddr = "[::]:17892".parse().expect("addr");
        assert_eq!(dial_addr(any6).to_string(), "[::1]:17892");
    }
}
