//! Blocking-query wake-up: `clients` HTTP/1.1 connections each hold a blocking query on
//! one name; a change is made (timed right before it is sent) and every client's answer
//! is timed on arrival. Each client asks again with the new index once every answer of
//! the round is in (the next round's queries do not compete with this round's answers),
//! for every round.
//!
//! The clients share the machine with the server under test, so they do as little as a
//! client can: one buffer per connection, read into and parsed in place (no line
//! strings, no allocation per answer), and the time of each answer stored in its own
//! slot; only the round's last answer wakes the task that collects them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

/// One connection and the bytes read from it that no answer has used yet.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// The value of header `name` (lower case) in an answer's head, compared without case.
fn header<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name)
            .then(|| line[colon + 1..].trim_ascii())
    })
}

fn number(value: Option<&[u8]>, what: &str) -> anyhow::Result<u64> {
    let text = std::str::from_utf8(value.with_context(|| format!("no {what}"))?)?;
    text.parse().with_context(|| format!("{what}: {text:?}"))
}

impl Conn {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await.context("connect")?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    async fn ask(&mut self, addr: SocketAddr, path: &str) -> anyhow::Result<()> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        self.stream.write_all(req.as_bytes()).await?;
        Ok(())
    }

    /// Reads more of the stream into the buffer; an error at its end.
    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(4096);
        }
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            bail!("the server closed the connection");
        }
        Ok(())
    }

    /// Reads one whole answer (head and `content-length` bytes of body): its
    /// `x-corral-index`.
    async fn answer(&mut self) -> anyhow::Result<u64> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = &self.buf[..head_end];
        if !head.starts_with(b"HTTP/1.1 200") {
            let first = head.split(|&b| b == b'\r').next().unwrap_or_default();
            bail!("answer: {:?}", String::from_utf8_lossy(first));
        }
        let length = usize::try_from(number(header(head, b"content-length"), "content-length")?)?;
        let index = number(header(head, b"x-corral-index"), "x-corral-index")?;
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        self.buf.drain(..head_end + length);
        Ok(index)
    }
}

/// What the clients share with the round that collects their answers.
struct Board {
    /// Queries sent, over all rounds.
    sent: AtomicUsize,
    /// Answers read in the current round; the one that makes it `clients` wakes `all_in`.
    answered: AtomicUsize,
    all_in: Notify,
    /// When each client read its answer, in nanoseconds after `epoch`.
    at: Vec<AtomicU64>,
    epoch: Instant,
    /// The first failure of a client, shown by the round that misses its answer.
    failed: Mutex<Option<String>>,
}

/// The clients, started and each holding a blocking query.
pub struct Waiters {
    board: Arc<Board>,
    /// Bumped when every answer of a round is in: the clients ask again.
    next_round: watch::Sender<usize>,
}

/// The name of the clients' thread (for its CPU time).
pub const THREAD_NAME: &str = "wake-client";

/// A round's answers and what it cost.
pub struct Round {
    /// From the change to each client's answer read whole.
    pub latencies: Vec<Duration>,
    /// CPU time from right before the change to the last answer: the server's, and the
    /// clients' thread's.
    pub server_cpu: Duration,
    pub client_cpu: Duration,
}

impl Waiters {
    /// Connects `clients` clients and has each hold a blocking query on `name`. They all
    /// run on one thread of their own, on a single-threaded runtime (as the DNS load
    /// does): what they cost is then one thread's CPU time, and none of it is spent
    /// handing tasks between threads.
    pub async fn start(addr: SocketAddr, name: &str, clients: usize) -> anyhow::Result<Waiters> {
        let board = Arc::new(Board {
            sent: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
            all_in: Notify::new(),
            at: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            failed: Mutex::new(None),
        });
        let (next_round, rounds) = watch::channel(0usize);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let (name, shared) = (name.to_string(), board.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut rounds = rounds;
                    let started = connect_all(addr, &name, clients, &shared, &rounds).await;
                    let ok = started.is_ok();
                    let _ = ready_tx.send(started);
                    // The clients run until the rounds end (the sender is dropped).
                    while ok && rounds.changed().await.is_ok() {}
                });
            })?;
        ready.await.context("the clients' thread ended")??;
        Ok(Waiters { board, next_round })
    }

    /// One round: waits until every client has asked, lets the queries arrive, makes the
    /// change with `change` (timed from right before it) and collects every answer;
    /// `server_cpu` reads the server's CPU time so far.
    pub async fn round<F>(
        &mut self,
        round: usize,
        change: F,
        server_cpu: &dyn Fn() -> anyhow::Result<Duration>,
    ) -> anyhow::Result<Round>
    where
        F: std::future::Future<Output = anyhow::Result<()>>,
    {
        let client_cpu = || corral_bench::threads_cpu(std::process::id(), Some(THREAD_NAME));
        let board = &self.board;
        let clients = board.at.len();
        let want = clients * (round + 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while board.sent.load(Ordering::SeqCst) < want {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {want} queries were sent{}",
                    board.sent.load(Ordering::SeqCst),
                    self.failure()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The requests are written; give them time to be read and parked by the server.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cpu0 = (server_cpu()?, client_cpu()?);
        let t0 = board.epoch.elapsed();
        change.await?;
        // The last answer's `notify_one` leaves a permit if this does not wait yet.
        if tokio::time::timeout(Duration::from_secs(10), board.all_in.notified())
            .await
            .is_err()
        {
            bail!(
                "{} of {} waiting clients were woken within 10 s{}",
                board.answered.load(Ordering::SeqCst),
                clients,
                self.failure()
            );
        }
        let cpu1 = (server_cpu()?, client_cpu()?);
        let latencies = board
            .at
            .iter()
            .map(|at| Duration::from_nanos(at.load(Ordering::SeqCst)).saturating_sub(t0))
            .collect();
        board.answered.store(0, Ordering::SeqCst);
        self.next_round.send_modify(|n| *n += 1);
        Ok(Round {
            latencies,
            server_cpu: cpu1.0.saturating_sub(cpu0.0),
            client_cpu: cpu1.1.saturating_sub(cpu0.1),
        })
    }

    fn failure(&self) -> String {
        let failed = self
            .board
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        failed
            .as_ref()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default()
    }
}

/// Connects every client, reads the list once on each, then leaves each waiting on its
/// own task with a blocking query.
async fn connect_all(
    addr: SocketAddr,
    name: &str,
    clients: usize,
    board: &Arc<Board>,
    rounds: &watch::Receiver<usize>,
) -> anyhow::Result<()> {
    for me in 0..clients {
        let mut conn = Conn::connect(addr).await?;
        conn.ask(addr, &format!("/v1/endpoints/{name}")).await?;
        let index = conn.answer().await?;
        let (board, name, rounds) = (board.clone(), name.to_string(), rounds.clone());
        tokio::spawn(async move {
            let result = client(conn, addr, &name, index, me, &board, rounds).await;
            if let Err(e) = result {
                // A failure mid-run shows as a round that misses an answer.
                let mut failed = board.failed.lock().unwrap_or_else(PoisonError::into_inner);
                failed.get_or_insert_with(|| format!("client {me}: {e:#}"));
            }
        });
    }
    Ok(())
}

/// One client: asks with the index it has, waits for the answer, notes the time, and
/// asks again when the round is over, until the server goes away (the end of the run).
async fn client(
    mut conn: Conn,
    addr: SocketAddr,
    name: &str,
    mut index: u64,
    me: usize,
    board: &Board,
    mut rounds: watch::Receiver<usize>,
) -> anyhow::Result<()> {
    loop {
        rounds.borrow_and_update();
        conn.ask(
            addr,
            &format!("/v1/endpoints/{name}?index={index}&wait=120s"),
        )
        .await?;
        board.sent.fetch_add(1, Ordering::SeqCst);
        let next = conn.answer().await?;
        let at = u64::try_from(board.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        board.at[me].store(at, Ordering::SeqCst);
        if next == index {
            bail!("answered with the index it waited on ({index})");
        }
        index = next;
        if board.answered.fetch_add(1, Ordering::SeqCst) + 1 == board.at.len() {
            board.all_in.notify_one();
        }
        if rounds.changed().await.is_err() {
            return Ok(());
        }
    }
}
