//! The log streams open through the agent sessions of this replica: which session each
//! stream rides on, and where its lines go.
//!
//! A session hands every log message to [`Routes::deliver`], which never waits: when the
//! caller reading a stream is slower than the agent sends, lines are dropped and counted,
//! and the next batch that fits says how many ("… N lines skipped"). A slow `registry
//! logs` therefore never holds up a session, its heartbeats or its status reports.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use corral_proto::v1::registry_message::Body;
use corral_proto::v1::{LogBatch, LogCancel, LogOpen, RegistryMessage};
use tokio::sync::mpsc;
use tonic::Status;

/// Batches waiting for a slow caller, per stream; past that, lines are skipped.
const QUEUE: usize = 64;

pub type ToAgent = mpsc::Sender<Result<RegistryMessage, Status>>;

/// What a log stream receives.
#[derive(Debug)]
pub enum Routed {
    Batch(LogBatch),
    /// The stream ended; the text is the error, empty when it ended normally.
    End(String),
}

struct Stream {
    node: String,
    tx: mpsc::Sender<Routed>,
    /// Lines dropped for this stream that no batch has reported yet.
    skipped: u64,
}

#[derive(Default)]
struct Table {
    /// The open session of each node on this replica: its id and its outbound queue.
    sessions: HashMap<String, (i64, ToAgent)>,
    streams: HashMap<u64, Stream>,
}

#[derive(Default)]
pub struct Routes {
    table: Mutex<Table>,
    next_id: AtomicU64,
}

/// An open stream; dropping it cancels the stream on the agent.
pub struct Opened {
    pub id: u64,
    pub rx: mpsc::Receiver<Routed>,
    routes: std::sync::Arc<Routes>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.routes.cancel(self.id);
    }
}

impl Routes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every critical section is a few map operations: a panic cannot leave it torn.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A session of `node` opened on this replica.
    pub fn attach(&self, node: &str, session_id: i64, to_agent: ToAgent) {
        self.lock()
            .sessions
            .insert(node.to_string(), (session_id, to_agent));
    }

    /// The session ended: its streams end with an error.
    pub fn detach(&self, node: &str, session_id: i64) {
        let mut table = self.lock();
        if table
            .sessions
            .get(node)
            .is_some_and(|(id, _)| *id == session_id)
        {
            table.sessions.remove(node);
            table.streams.retain(|_, s| {
                if s.node != node {
                    return true;
                }
                let _ = s.tx.try_send(Routed::End(format!(
                    "the session of node {node} ended (the agent went away or reconnected)"
                )));
                false
            });
        }
    }

    /// Whether `node` has a session open on this replica.
    pub fn has(&self, node: &str) -> bool {
        self.lock().sessions.contains_key(node)
    }

    /// Log streams open now.
    pub fn open_streams(&self) -> usize {
        self.lock().streams.len()
    }

    /// Opens a log stream on `node`'s agent (`open.id` is set here); None when the node
    /// has no session on this replica.
    pub async fn open(
        self: &std::sync::Arc<Self>,
        node: &str,
        mut open: LogOpen,
    ) -> Option<Opened> {
        open.id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(QUEUE);
        let to_agent = {
            let mut table = self.lock();
            let (_, to_agent) = table.sessions.get(node)?.clone();
            table.streams.insert(
                open.id,
                Stream {
                    node: node.to_string(),
                    tx,
                    skipped: 0,
                },
            );
            to_agent
        };
        let opened = Opened {
            id: open.id,
            rx,
            routes: self.clone(),
        };
        let msg = RegistryMessage {
            body: Some(Body::LogOpen(open)),
        };
        if to_agent.send(Ok(msg)).await.is_err() {
            return None;
        }
        Some(opened)
    }

    /// A message of a log stream from `node`'s agent; never waits.
    pub fn deliver(&self, node: &str, id: u64, routed: Routed) {
        let mut table = self.lock();
        let Some(stream) = table.streams.get_mut(&id).filter(|s| s.node == node) else {
            return;
        };
        match routed {
            Routed::Batch(mut batch) => {
                batch.skipped += stream.skipped;
                let lines = batch.lines.len() as u64;
                let skipped = batch.skipped;
                match stream.tx.try_send(Routed::Batch(batch)) {
                    Ok(()) => stream.skipped = 0,
                    Err(mpsc::error::TrySendError::Full(_)) => stream.skipped = skipped + lines,
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
            Routed::End(error) => {
                let stream = table.streams.remove(&id);
                if let Some(s) = stream {
                    // Full: the reader is far behind; it learns of the end when the
                    // channel closes (the sender is dropped here).
                    let _ = s.tx.try_send(Routed::End(error));
                }
            }
        }
    }

    /// The caller went away: forget the stream and tell the agent to stop it.
    fn cancel(&self, id: u64) {
        let mut table = self.lock();
        let Some(stream) = table.streams.remove(&id) else {
            return;
        };
        if let Some((_, to_agent)) = table.sessions.get(&stream.node) {
            let msg = RegistryMessage {
                body: Some(Body::LogCancel(LogCancel { id })),
            };
            if let Err(mpsc::error::TrySendError::Full(msg)) = to_agent.try_send(Ok(msg)) {
                let to_agent = to_agent.clone();
                tokio::spawn(async move {
                    let _ = to_agent.send(msg).await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn batch(id: u64, lines: usize) -> Routed {
        Routed::Batch(LogBatch {
            id,
            lines: vec!["x".to_string(); lines],
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn a_slow_reader_gets_a_count_of_what_it_missed() {
        let routes = Arc::new(Routes::default());
        let (to_agent, mut agent) = mpsc::channel(4);
        routes.attach("node-a", 1, to_agent);
        let mut opened = routes
            .open("node-a", LogOpen::default())
            .await
            .expect("open");
        let Some(Ok(RegistryMessage {
            body: Some(Body::LogOpen(open)),
        })) = agent.recv().await
        else {
            panic!("no LogOpen");
        };
        assert_eq!(open.id, opened.id);
        // Never waits: past the queue, batches are counted.
        for _ in 0..QUEUE + 3 {
            routes.deliver("node-a", opened.id, batch(opened.id, 2));
        }
        for _ in 0..QUEUE {
            opened.rx.recv().await.expect("batch");
        }
        routes.deliver("node-a", opened.id, batch(opened.id, 1));
        let Some(Routed::Batch(b)) = opened.rx.recv().await else {
            panic!("no batch");
        };
        assert_eq!((b.skipped, b.lines.len()), (6, 1));
        // Another node cannot feed this stream.
        routes.deliver("node-b", opened.id, batch(opened.id, 1));
        assert!(opened.rx.try_recv().is_err());
        // The reader goes away: the agent is told to stop.
        let id = opened.id;
        drop(opened);
        let Some(Ok(RegistryMessage {
            body: Some(Body::LogCancel(c)),
        })) = agent.recv().await
        else {
            panic!("no LogCancel");
        };
        assert_eq!(c.id, id);
        assert_eq!(routes.open_streams(), 0);
    }

    #[tokio::test]
    async fn a_session_that_ends_ends_its_streams() {
        let routes = Arc::new(Routes::default());
        let (to_agent, _agent) = mpsc::channel(4);
        routes.attach("node-a", 1, to_agent);
        let mut opened = routes
            .open("node-a", LogOpen::default())
            .await
            .expect("open");
        routes.detach("node-a", 2); // not the current session: nothing
        assert!(routes.has("node-a"));
        routes.detach("node-a", 1);
        let Some(Routed::End(why)) = opened.rx.recv().await else {
            panic!("no end");
        };
        assert!(why.contains("session of node node-a ended"), "{why}");
        assert!(routes.open("node-a", LogOpen::default()).await.is_none());
    }
}
