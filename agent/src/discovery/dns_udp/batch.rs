//! The UDP socket's system calls in batches: one `recvmmsg` reads every question waiting
//! (up to [`BATCH`]) and one `sendmmsg` sends their answers, where a loop of `recvfrom`
//! and `sendto` (dnsmasq's way) pays two system calls per question. Under load that is
//! most of what a question costs; with one question at a time it is the same two calls.

use std::io::{ErrorKind, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::debug;

/// Questions read, and answers sent, per system call at most.
pub const BATCH: usize = 32;
/// Bytes of a datagram read at most, as hickory's own UDP loop reads (questions are far
/// smaller); the rest of a longer one is dropped by the kernel, as it was before batching.
const DATAGRAM_MAX: usize = 4096;

/// The buffers of one loop, made once. (The message headers are made per call: they
/// hold raw pointers, which a task that may move between threads cannot keep.)
pub struct Batch {
    bufs: Vec<Vec<u8>>,
    /// Length and sender of each datagram of the last read.
    got: Vec<(usize, Option<SockaddrStorage>)>,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            bufs: vec![vec![0u8; DATAGRAM_MAX]; BATCH],
            got: Vec::with_capacity(BATCH),
        }
    }
}

/// A sender's address as the standard library's (None for a family UDP has not).
pub fn std_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

impl Batch {
    /// Waits for questions, then reads every one waiting (up to [`BATCH`]): how many.
    pub async fn receive(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        loop {
            socket.readable().await?;
            let (bufs, got) = (&mut self.bufs, &mut self.got);
            let read = socket.try_io(Interest::READABLE, || {
                let mut heads = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
                let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                    .iter_mut()
                    .map(|b| [IoSliceMut::new(b.as_mut_slice())])
                    .collect();
                let results = recvmmsg(
                    socket.as_raw_fd(),
                    &mut heads,
                    iovs.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                )?;
                got.clear();
                got.extend(results.map(|m| (m.bytes, m.address)));
                Ok(got.len())
            });
            match read {
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// The `i`-th datagram of the last read and its sender.
    pub fn question(&self, i: usize) -> Option<(&[u8], SockaddrStorage)> {
        let (len, from) = self.got.get(i)?;
        Some((&self.bufs[i][..(*len).min(DATAGRAM_MAX)], (*from)?))
    }
}

/// Sends `answers`, as many per system call as the socket takes; one it does not take
/// at once (a full send buffer, an error for its address) goes on its own, when the
/// socket can take it, so that the others still go.
pub async fn send(socket: &UdpSocket, answers: &[(Vec<u8>, SockaddrStorage)]) {
    let mut done = 0;
    while done < answers.len() {
        let rest = &answers[done..answers.len().min(done + BATCH)];
        let sent = socket.try_io(Interest::WRITABLE, || {
            let mut heads = MultiHeaders::<SockaddrStorage>::preallocate(rest.len(), None);
            let iovs: Vec<[IoSlice<'_>; 1]> = rest.iter().map(|(a, _)| [IoSlice::new(a)]).collect();
            let to: Vec<Option<SockaddrStorage>> = rest.iter().map(|(_, t)| Some(*t)).collect();
            let no_control: [ControlMessage<'_>; 0] = [];
            let results = sendmmsg(
                socket.as_raw_fd(),
                &mut heads,
                &iovs,
                &to,
                no_control,
                MsgFlags::empty(),
            )?;
            Ok(results.count())
        });
        match sent {
            Ok(n) if n > 0 => done += n,
            _ => {
                let (answer, to) = &answers[done];
                done += 1;
                let Some(addr) = std_addr(to) else { continue };
                if let Err(e) = socket.send_to(answer, addr).await {
                    debug!(cause = %e, to = %addr, "DNS: UDP send failed");
                }
            }
        }
    }
}
