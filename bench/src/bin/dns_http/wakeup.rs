//! Blocking-query wake-up: `clients` HTTP/1.1 connections each hold a blocking query on
//! one name; a change is made (timed right before it is sent) and every client's answer
//! is timed on arrival. Each client asks again with the new index once every answer of
//! the round is in (the next round's queries do not compete with this round's answers),
//! for every round.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// Reads one HTTP answer: its `x-corral-index`.
async fn read_answer(reader: &mut BufReader<TcpStream>) -> anyhow::Result<u64> {
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if !line.starts_with("HTTP/1.1 200") {
        bail!("answer: {line:?}");
    }
    let (mut length, mut index) = (0usize, 0u64);
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse()?,
                "x-corral-index" => index = v.trim().parse()?,
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    Ok(index)
}

async fn ask(
    stream: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<()> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.get_mut().write_all(req.as_bytes()).await?;
    Ok(())
}

/// The clients, started and each holding a blocking query.
pub struct Waiters {
    sent: Arc<AtomicUsize>,
    answers: mpsc::UnboundedReceiver<Instant>,
    clients: usize,
    /// Bumped when every answer of a round is in: the clients ask again.
    next_round: watch::Sender<usize>,
}

impl Waiters {
    pub async fn start(addr: SocketAddr, name: &str, clients: usize) -> anyhow::Result<Waiters> {
        let sent = Arc::new(AtomicUsize::new(0));
        let (tx, answers) = mpsc::unbounded_channel();
        let (next_round, rounds) = watch::channel(0usize);
        for _ in 0..clients {
            let stream = TcpStream::connect(addr).await.context("connect")?;
            stream.set_nodelay(true)?;
            let mut stream = BufReader::new(stream);
            ask(&mut stream, addr, &format!("/v1/endpoints/{name}")).await?;
            let mut index = read_answer(&mut stream).await?;
            let (sent, tx, name) = (sent.clone(), tx.clone(), name.to_string());
            let mut rounds = rounds.clone();
            tokio::spawn(async move {
                loop {
                    rounds.borrow_and_update();
                    let path = format!("/v1/endpoints/{name}?index={index}&wait=120s");
                    if ask(&mut stream, addr, &path).await.is_err() {
                        return;
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    match read_answer(&mut stream).await {
                        Ok(i) => {
                            index = i;
                            if tx.send(Instant::now()).is_err() || rounds.changed().await.is_err() {
                                return;
                            }
                        }
                        // The server went away (the end of the run); a failure
                        // mid-run shows as a round that times out.
                        Err(_) => return,
                    }
                }
            });
        }
        Ok(Waiters {
            sent,
            answers,
            clients,
            next_round,
        })
    }

    /// One round: waits until every client has asked, lets the queries arrive, makes the
    /// change with `change` (timed from right before it) and collects every answer.
    pub async fn round<F>(&mut self, round: usize, change: F) -> anyhow::Result<Vec<Duration>>
    where
        F: std::future::Future<Output = anyhow::Result<()>>,
    {
        let want = self.clients * (round + 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.sent.load(Ordering::SeqCst) < want {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {want} queries were sent",
                    self.sent.load(Ordering::SeqCst)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The requests are written; give them time to be read and parked by the server.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t0 = Instant::now();
        change.await?;
        let mut out = Vec::with_capacity(self.clients);
        for _ in 0..self.clients {
            let at = tokio::time::timeout(Duration::from_secs(10), self.answers.recv())
                .await
                .context("not every waiting client was woken within 10 s")?
                .context("the clients stopped")?;
            out.push(at.saturating_duration_since(t0));
        }
        self.next_round.send_modify(|n| *n += 1);
        Ok(out)
    }
}
