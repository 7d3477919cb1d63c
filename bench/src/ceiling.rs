//! What any server could do on this machine: the smallest push servers, for the rows
//! that show the ceiling beside Corral's watch and blocking-query figures. Each runs on a
//! runtime of its own (two worker threads, as the registry and the agent have on 2
//! cores) and does per client only what no design can skip: one task woken and one
//! `write` per connection, with a fixed answer made once per change.
//!
//! - [`RawFanout`]: a 64-byte frame to every connection (no HTTP/2, no protobuf): the
//!   floor under `Query.Watch` with a connection per watcher. A client reads 64 bytes.
//! - [`HttpBlocking`]: HTTP/1.1 blocking queries (`?index=I` waits for a change) answered
//!   with a fixed JSON list and `X-Corral-Index`: the floor under `GET /v1/endpoints`
//!   with 1,000 waiting clients, read by the very clients that read Corral's.
//! - [`HyperBlocking`]: the same answers from hyper's HTTP/1.1 server with nothing around
//!   it (no router, no extractors; the answer's parts made once per change): the floor
//!   for any server built on hyper, as the registry's and the agent's HTTP sides are.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The name of every thread of the ceiling servers' runtimes (for their CPU time).
pub const THREAD_NAME: &str = "ceiling";

/// Runs `serve(listener)` on a two-worker runtime of its own, on its own thread, for the
/// rest of the process; the listener's address.
fn spawn<F, Fut>(serve: F) -> anyhow::Result<SocketAddr>
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(THREAD_NAME)
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            rt.block_on(async move {
                if let Ok(listener) = TcpListener::from_std(std_listener) {
                    serve(listener).await;
                }
            });
        })?;
    Ok(addr)
}

/// Accepts connections for ever, each handled by `handle` with a receiver of `changes`.
async fn accept<H, Fut>(listener: TcpListener, changes: watch::Receiver<Arc<Vec<u8>>>, handle: H)
where
    H: Fn(TcpStream, watch::Receiver<Arc<Vec<u8>>>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    while let Ok((stream, _)) = listener.accept().await {
        if stream.set_nodelay(true).is_err() {
            continue;
        }
        tokio::spawn(handle(stream, changes.clone()));
    }
}

/// A 64-byte frame to every connection on every change; byte 0 is the state.
pub struct RawFanout {
    pub addr: SocketAddr,
    changes: watch::Sender<Arc<Vec<u8>>>,
}

impl RawFanout {
    pub fn start() -> anyhow::Result<RawFanout> {
        let (changes, rx) = watch::channel(Arc::new(vec![1u8; 64]));
        let addr = spawn(move |listener| {
            accept(listener, rx, |mut stream, mut rx| async move {
                loop {
                    let frame = rx.borrow_and_update().clone();
                    stream.write_all(&frame).await?;
                    rx.changed().await?;
                }
            })
        })?;
        Ok(RawFanout { addr, changes })
    }

    /// Sends `state` (0 to 255) to every connection.
    pub fn change(&self, state: u8) {
        let mut frame = vec![0u8; 64];
        frame[0] = state;
        self.changes.send_replace(Arc::new(frame));
    }
}

/// A watcher of a [`RawFanout`]: the state of every frame, through `seen`.
pub async fn raw_watch(addr: SocketAddr, mut seen: impl FnMut(u8)) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut frame = [0u8; 64];
    loop {
        stream.read_exact(&mut frame).await?;
        seen(frame[0]);
    }
}

/// HTTP/1.1 blocking queries: a request with `index=` answers once the index moves, any
/// other at once, with the current answer (made once per change).
pub struct HttpBlocking {
    pub addr: SocketAddr,
    changes: watch::Sender<Arc<Vec<u8>>>,
    index: std::sync::atomic::AtomicU64,
}

/// The list every floor answers with.
const BODY: &str =
    r#"[{"node":"sim-0","host":"127.0.0.2","port":20000,"weight":1,"tags":[],"meta":{}}]"#;

fn http_answer(index: u64) -> Arc<Vec<u8>> {
    Arc::new(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-corral-index: {index}\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        )
        .into_bytes(),
    )
}

impl HttpBlocking {
    pub fn start() -> anyhow::Result<HttpBlocking> {
        let (changes, rx) = watch::channel(http_answer(1));
        let addr = spawn(move |listener| {
            accept(listener, rx, |mut stream, mut rx| async move {
                let mut buf = Vec::with_capacity(1024);
                loop {
                    // One request head (the clients send no body).
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 1024];
                        let n = stream.read(&mut chunk).await?;
                        anyhow::ensure!(n > 0, "closed");
                        buf.extend_from_slice(&chunk[..n]);
                    };
                    let blocking = buf[..end].windows(6).any(|w| w == b"index=");
                    buf.drain(..end);
                    if blocking {
                        rx.borrow_and_update();
                        rx.changed().await?;
                    }
                    let answer = rx.borrow_and_update().clone();
                    stream.write_all(&answer).await?;
                }
            })
        })?;
        Ok(HttpBlocking {
            addr,
            changes,
            index: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Moves the index: every waiting query is answered.
    pub fn change(&self) {
        let index = self.index.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        self.changes.send_replace(http_answer(index));
    }
}

/// The same blocking queries served by hyper's HTTP/1.1 server alone (no router, no
/// extractors): what hyper's own request and answer paths cost beside [`HttpBlocking`].
pub struct HyperBlocking {
    pub addr: SocketAddr,
    changes: watch::Sender<HyperAnswer>,
    index: std::sync::atomic::AtomicU64,
}

/// An answer's parts, made once per change: the index header and the body.
type HyperAnswer = (hyper::header::HeaderValue, bytes::Bytes);

fn hyper_answer(index: u64) -> HyperAnswer {
    (index.into(), bytes::Bytes::from_static(BODY.as_bytes()))
}

impl HyperBlocking {
    pub fn start() -> anyhow::Result<HyperBlocking> {
        use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
        let (changes, rx) = watch::channel(hyper_answer(1));
        let addr = spawn(move |listener| async move {
            while let Ok((stream, _)) = listener.accept().await {
                if stream.set_nodelay(true).is_err() {
                    continue;
                }
                let rx = rx.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let blocking = req.uri().query().is_some_and(|q| q.contains("index="));
                        drop(req);
                        let mut rx = rx.clone();
                        async move {
                            if blocking {
                                rx.borrow_and_update();
                                let _ = rx.changed().await;
                            }
                            let (index, body) = rx.borrow_and_update().clone();
                            let mut answer = hyper::Response::new(http_body_util::Full::new(body));
                            let headers = answer.headers_mut();
                            headers
                                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                            headers.insert(HeaderName::from_static("x-corral-index"), index);
                            Ok::<_, std::convert::Infallible>(answer)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        })?;
        Ok(HyperBlocking {
            addr,
            changes,
            index: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Moves the index: every waiting query is answered.
    pub fn change(&self) {
        let index = self.index.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        self.changes.send_replace(hyper_answer(index));
    }
}
