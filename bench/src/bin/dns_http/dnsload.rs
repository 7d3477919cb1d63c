//! A DNS load generator: `clients` tasks, each with a UDP socket of its own and one query
//! in flight, asking one name's A records as fast as answers come, for a while.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::UdpSocket;

/// A query for `name`'s A records (class IN, recursion desired), with `id`.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Checks an answer: its id, the response bit, NOERROR and `answers` records.
pub fn check(answer: &[u8], id: u16, answers: u16) -> anyhow::Result<()> {
    if answer.len() < 12 {
        bail!("an answer of {} bytes", answer.len());
    }
    let got_id = u16::from_be_bytes([answer[0], answer[1]]);
    let rcode = answer[3] & 0x0f;
    let count = u16::from_be_bytes([answer[6], answer[7]]);
    if got_id != id || answer[2] & 0x80 == 0 || rcode != 0 || count != answers {
        bail!("answer id {got_id} (asked {id}), rcode {rcode}, {count} records (want {answers})");
    }
    Ok(())
}

/// What a run measured.
pub struct Load {
    pub answers: u64,
    pub lost: u64,
    pub elapsed: Duration,
    /// Latencies, sorted.
    pub latencies: Vec<Duration>,
}

/// Asks `server` for `name` from `clients` sockets for `duration` (after `warmup`).
pub async fn run(
    server: SocketAddr,
    name: &str,
    expect: u16,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Load> {
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let name = name.to_string();
        tasks.spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            socket.connect(server).await?;
            let mut buf = vec![0u8; 4096];
            let (mut answers, mut lost, mut lat) = (0u64, 0u64, Vec::new());
            let mut id = (c as u16).wrapping_mul(2048);
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                id = id.wrapping_add(1);
                socket.send(&query(id, &name)).await?;
                let got = tokio::time::timeout(Duration::from_secs(1), async {
                    loop {
                        let n = socket.recv(&mut buf).await?;
                        // A late answer to an earlier, timed-out query: skip it.
                        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                            return Ok::<usize, std::io::Error>(n);
                        }
                    }
                })
                .await;
                let counted = now >= start;
                match got {
                    Ok(Ok(n)) => {
                        check(&buf[..n], id, expect).context("a wrong answer")?;
                        if counted {
                            answers += 1;
                            lat.push(now.elapsed());
                        }
                    }
                    // Nothing listens (yet): the ICMP error comes back as this.
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        lost += u64::from(counted);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok(Err(e)) => return Err(anyhow::Error::from(e)),
                    Err(_) => lost += u64::from(counted),
                }
            }
            Ok::<_, anyhow::Error>((answers, lost, lat))
        });
    }
    let mut load = Load {
        answers: 0,
        lost: 0,
        elapsed: duration,
        latencies: Vec::new(),
    };
    while let Some(done) = tasks.join_next().await {
        let (a, l, lat) = done??;
        load.answers += a;
        load.lost += l;
        load.latencies.extend(lat);
    }
    load.latencies.sort();
    Ok(load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_a_dns_question() {
        let q = query(0x1234, "main.dns.bench.corral.");
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(q[12], 4);
        assert_eq!(&q[13..17], b"main");
        assert_eq!(&q[q.len() - 5..], &[0, 0, 1, 0, 1]);
    }
}
