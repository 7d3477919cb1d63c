//! A TCP proxy a test controls, to cut a registry off its MySQL server without touching
//! the server (other tests use it): [`Proxy::cut`] closes the listening socket (new
//! connections are refused, as by a server that is down) and drops every open
//! connection; [`Proxy::resume`] listens again on the same port. Threads, no runtime:
//! it works from any test. Dropping it stops everything.

use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::wait_until;

/// How often the accepting thread looks whether it should stop.
const POLL: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Open {
    /// Both ends of every connection made since the last cut.
    streams: Mutex<Vec<TcpStream>>,
}

impl Open {
    fn drop_all(&self) {
        let streams =
            std::mem::take(&mut *self.streams.lock().unwrap_or_else(PoisonError::into_inner));
        for s in streams {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    target: SocketAddr,
    open: Arc<Open>,
    accepting: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Proxy {
    /// A proxy to `target` on a free port of 127.0.0.1.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let mut proxy = Proxy {
            addr,
            target,
            open: Arc::default(),
            accepting: None,
        };
        proxy.accept_on(listener);
        proxy
    }

    fn accept_on(&mut self, listener: TcpListener) {
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let (target, open, stopped) = (self.target, self.open.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => forward(client, target, &open),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
                    Err(_) => std::thread::sleep(POLL),
                }
            }
            // The listener is dropped here: the port refuses connections from now on.
        });
        self.accepting = Some((stop, thread));
    }

    /// Refuses new connections and drops the open ones.
    pub fn cut(&mut self) {
        if let Some((stop, thread)) = self.accepting.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
        self.open.drop_all();
    }

    /// Accepts connections again, on the same port.
    pub fn resume(&mut self) {
        if self.accepting.is_some() {
            return;
        }
        let addr = self.addr;
        let listener = wait_until("the proxy's port again", Duration::from_secs(10), || {
            TcpListener::bind(addr).map_err(|e| e.to_string())
        });
        self.accept_on(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Connects `client` to `target` and copies both ways on two threads; a connection that
/// cannot be made is dropped (the client sees it closed).
fn forward(client: TcpStream, target: SocketAddr, open: &Open) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
        return;
    };
    let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    open.streams
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend([c3, s3]);
    std::thread::spawn(move || pump(client, server));
    std::thread::spawn(move || pump(s2, c2));
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// The parts of `mysql://USER[:PASS]@HOST[:PORT]/DB`: scheme, user info (with its `@`),
/// `HOST:PORT` and path.
fn url_parts(url: &str) -> (&str, String, String, &str) {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (userinfo, hostpath) = match rest.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), rest),
    };
    let (hostport, path) = hostpath.split_once('/').unwrap_or((hostpath, ""));
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:3306")
    };
    (scheme, userinfo, hostport, path)
}

/// The server a MySQL URL names, to point a proxy at.
pub fn mysql_target(url: &str) -> SocketAddr {
    let (_, _, hostport, _) = url_parts(url);
    std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("cannot resolve {hostport}"))
}

/// The MySQL URL `url` with its server replaced by `proxy`.
pub fn mysql_url_via(url: &str, proxy: SocketAddr) -> String {
    let (scheme, userinfo, _, path) = url_parts(url);
    format!("{scheme}://{userinfo}{proxy}/{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_go_through_the_proxy() {
        let proxy: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let url = "mysql://root@127.0.0.1:3306/corral_t_1";
        assert_eq!(
            mysql_url_via(url, proxy),
            "mysql://root@127.0.0.1:40000/corral_t_1"
        );
        assert_eq!(mysql_target(url).to_string(), "127.0.0.1:3306");
        let url = "mysql://u:p@127.0.0.1/db";
        assert_eq!(mysql_url_via(url, proxy), "mysql://u:p@127.0.0.1:40000/db");
        assert_eq!(mysql_target(url).to_string(), "127.0.0.1:3306");
    }

    #[test]
    fn a_cut_refuses_and_drops_then_resume_serves_again() {
        use std::io::{Read, Write};
        let echo = TcpListener::bind("127.0.0.1:0").expect("echo");
        let target = echo.local_addr().expect("addr");
        std::thread::spawn(move || {
            for s in echo.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut r = s.try_clone().expect("clone");
                    let mut w = s;
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
        });
        let mut proxy = Proxy::start(target);
        let roundtrip = |proxy: &Proxy| -> std::io::Result<Vec<u8>> {
            let mut s = TcpStream::connect(proxy.addr)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"ping")?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf)?;
            Ok(buf.to_vec())
        };
        assert_eq!(roundtrip(&proxy).expect("through"), b"ping");
        let mut open = TcpStream::connect(proxy.addr).expect("open");
        open.write_all(b"x").expect("write");
        let mut one = [0u8; 1];
        open.read_exact(&mut one).expect("echoed");

        proxy.cut();
        let refused = TcpStream::connect(proxy.addr).expect_err("refused");
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
        open.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        assert!(matches!(open.read(&mut one), Ok(0) | Err(_)), "dropped");

        proxy.resume();
        assert_eq!(roundtrip(&proxy).expect("through again"), b"ping");
    }
}
