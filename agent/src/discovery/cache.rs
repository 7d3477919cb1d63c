//! The agent's watch cache: the lists its host's clients ask for, kept current by
//! following `Query.Watch` on the registry over the session's own connection, so those
//! clients never load the registry.
//!
//! A name is watched from the first time it is asked for (that first answer waits up to
//! [`FIRST_ANSWER`] for the registry) until nobody has asked for it for `idle` and no
//! blocking query or event stream holds it. When the session is lost the last list
//! stays and is served; the watch resumes on the next session. The agent proves who it
//! is with its node identity (the registry needs no token from it).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use corral_proto::v1::query_client::QueryClient;
use corral_proto::v1::{Endpoints, FindRequest};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, warn};

use super::{LookupError, Snapshot, Source, State, check_name};

/// How long the first request for a name waits for the registry's answer.
pub const FIRST_ANSWER: Duration = Duration::from_secs(3);
/// The most names watched at once: a client asking for endless made-up names must not
/// turn into endless watches on the registry.
pub const MAX_NAMES: usize = 10_000;
/// The metadata headers that carry the agent's node and identity on its watches.
pub const NODE_HEADER: &str = "x-corral-node";
pub const IDENTITY_HEADER: &str = "x-corral-identity";

/// The names watched: as asked (HTTP), and without regard to case (DNS).
#[derive(Default)]
struct Names {
    exact: HashMap<String, Entry>,
    nocase: HashMap<String, Entry>,
}

impl Names {
    fn map(&mut self, ignore_case: bool) -> &mut HashMap<String, Entry> {
        if ignore_case {
            &mut self.nocase
        } else {
            &mut self.exact
        }
    }

    fn len(&self) -> usize {
        self.exact.len() + self.nocase.len()
    }
}

struct Entry {
    tx: Arc<watch::Sender<Snapshot>>,
    last_asked: Instant,
    /// Ends the watch of this name.
    stop: CancellationToken,
}

pub struct Cache {
    names: Mutex<Option<Names>>,
    /// The open session's connection (None between sessions).
    channel: watch::Receiver<Option<Channel>>,
    node: String,
    data_dir: PathBuf,
    idle: Duration,
}

impl Cache {
    pub fn new(
        channel: watch::Receiver<Option<Channel>>,
        node: String,
        data_dir: PathBuf,
        idle: Duration,
    ) -> Cache {
        Cache {
            names: Mutex::new(Some(Names::default())),
            channel,
            node,
            data_dir,
            idle,
        }
    }

    /// The name's list now; waits for the registry only the first time it is asked for.
    /// With `ignore_case`, `name` matches without regard to ASCII case (DNS).
    pub async fn snapshot(&self, name: &str, ignore_case: bool) -> Result<Snapshot, LookupError> {
        {
            let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(e) = names
                .as_mut()
                .and_then(|n| n.map(ignore_case).get_mut(name))
            {
                e.last_asked = Instant::now();
                let now = e.tx.borrow().clone();
                if now.state != State::Pending {
                    return Ok(now);
                }
            }
        }
        let rx = self.watch(name, ignore_case).await?;
        let now = rx.borrow().clone();
        Ok(now)
    }

    /// The name's list now if the registry has answered for it (marking it asked for);
    /// None otherwise, without waiting or starting a watch.
    pub fn peek(&self, name: &str, ignore_case: bool) -> Option<Snapshot> {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let e = names.as_mut()?.map(ignore_case).get_mut(name)?;
        e.last_asked = Instant::now();
        let now = e.tx.borrow().clone();
        (now.state != State::Pending).then_some(now)
    }

    /// A receiver of the name's list, once the registry has answered for it.
    pub async fn watch(
        &self,
        name: &str,
        ignore_case: bool,
    ) -> Result<watch::Receiver<Snapshot>, LookupError> {
        check_name(name)?;
        let mut rx = self.entry(name, ignore_case)?;
        let answered =
            tokio::time::timeout(FIRST_ANSWER, rx.wait_for(|s| s.state != State::Pending))
                .await
                .map(|r| r.map(|_| ()));
        match answered {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(LookupError::Unavailable(
                    "the agent is shutting down".into(),
                ));
            }
            Err(_) => {
                return Err(LookupError::Unavailable(format!(
                    "no registry has answered for {name} yet (waited {FIRST_ANSWER:?})"
                )));
            }
        }
        if rx.borrow().state == State::Unknown {
            return Err(LookupError::NotFound(name.to_string()));
        }
        Ok(rx)
    }

    /// The name's entry, started if new; a receiver of it.
    fn entry(
        &self,
        name: &str,
        ignore_case: bool,
    ) -> Result<watch::Receiver<Snapshot>, LookupError> {
        let mut guard = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(names) = guard.as_mut() else {
            return Err(LookupError::Unavailable(
                "the agent is shutting down".into(),
            ));
        };
        if let Some(e) = names.map(ignore_case).get_mut(name) {
            e.last_asked = Instant::now();
            return Ok(e.tx.subscribe());
        }
        if names.len() >= MAX_NAMES {
            return Err(LookupError::Unavailable(format!(
                "this agent already watches {MAX_NAMES} names; try again once some are idle"
            )));
        }
        let tx = Arc::new(watch::Sender::new(Snapshot::new(State::Pending)));
        let rx = tx.subscribe();
        let stop = CancellationToken::new();
        tokio::spawn(
            Follower {
                name: name.to_string(),
                ignore_case,
                tx: tx.clone(),
                channel: self.channel.clone(),
                node: self.node.clone(),
                data_dir: self.data_dir.clone(),
            }
            .run(stop.clone()),
        );
        names.map(ignore_case).insert(
            name.to_string(),
            Entry {
                tx,
                last_asked: Instant::now(),
                stop,
            },
        );
        Ok(rx)
    }

    /// Forgets names idle for longer than `idle` and unheld, until `shutdown`; then ends
    /// every watch (and with them every blocking query and event stream).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let period = (self.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let mut guard = self.names.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(names) = guard.as_mut() {
                for map in [&mut names.exact, &mut names.nocase] {
                    map.retain(|name, e| {
                        let keep = e.tx.receiver_count() > 0 || e.last_asked.elapsed() < self.idle;
                        if !keep {
                            debug!(%name, "discovery cache: idle name forgotten");
                            e.stop.cancel();
                        }
                        keep
                    });
                }
            }
        }
        let names = self
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        for e in names
            .into_iter()
            .flat_map(|n| n.exact.into_values().chain(n.nocase.into_values()))
        {
            e.stop.cancel();
        }
    }

    /// How many names are watched now.
    pub fn len(&self) -> usize {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, Names::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Source for Cache {
    async fn subscribe(&self, name: &str) -> Result<watch::Receiver<Snapshot>, LookupError> {
        self.watch(name, false).await
    }
}

/// Follows one name on the registry, through every session, until stopped.
struct Follower {
    name: String,
    ignore_case: bool,
    tx: Arc<watch::Sender<Snapshot>>,
    channel: watch::Receiver<Option<Channel>>,
    node: String,
    data_dir: PathBuf,
}

impl Follower {
    async fn run(mut self, stop: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        loop {
            let channel = loop {
                if let Some(c) = self.channel.borrow_and_update().clone() {
                    break c;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = self.channel.changed() => if changed.is_err() { return },
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                got_any = self.follow(channel) => {
                    if got_any {
                        delay = Duration::from_millis(100);
                    }
                }
            }
            // The session is gone or the registry refused: keep the last list, try again
            // shortly (or as soon as a new session opens).
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
                _ = self.channel.changed() => {}
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// One watch on one connection; whether any list arrived.
    async fn follow(&self, channel: Channel) -> bool {
        let mut request = tonic::Request::new(FindRequest {
            name: self.name.clone(),
            ignore_case: self.ignore_case,
        });
        match crate::identity::load(&self.data_dir) {
            Ok(Some(id)) => {
                let md = request.metadata_mut();
                if let (Ok(node), Ok(secret)) = (self.node.parse(), id.secret.parse()) {
                    md.insert(NODE_HEADER, node);
                    md.insert(IDENTITY_HEADER, secret);
                }
            }
            Ok(None) => {}
            Err(e) => warn!(cause = %e, "discovery cache: cannot read the node identity"),
        }
        let mut stream = match QueryClient::new(channel).watch(request).await {
            Ok(s) => s.into_inner(),
            Err(status) => {
                warn!(name = %self.name, cause = %status.message(), "discovery cache: watch refused");
                return false;
            }
        };
        let mut got_any = false;
        loop {
            match stream.message().await {
                Ok(Some(list)) => {
                    got_any = true;
                    let state = state_of(list);
                    self.tx.send_if_modified(|s| s.update(state));
                }
                Ok(None) => return got_any,
                Err(status) => {
                    debug!(name = %self.name, cause = %status.message(), "discovery cache: watch ended");
                    return got_any;
                }
            }
        }
    }
}

fn state_of(list: Endpoints) -> State {
    if list.known {
        State::Known(Arc::new(list.endpoints))
    } else {
        State::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(idle: Duration) -> Arc<Cache> {
        let (_tx, rx) = watch::channel(None);
        Arc::new(Cache::new(
            rx,
            "n".into(),
            PathBuf::from("/nonexistent"),
            idle,
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_registry_the_first_answer_is_unavailable() {
        let c = cache(Duration::from_secs(60));
        let err = c
            .snapshot("a.b.Main", false)
            .await
            .expect_err("no registry");
        assert!(matches!(err, LookupError::Unavailable(_)), "{err}");
        assert!(matches!(
            c.snapshot("a.b", false).await,
            Err(LookupError::BadName(_))
        ));
        assert_eq!(c.len(), 1, "the name stays watched, waiting for a session");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_names_are_forgotten_unless_held() {
        let c = cache(Duration::from_secs(10));
        let shutdown = CancellationToken::new();
        let sweeper = tokio::spawn(c.clone().run(shutdown.clone()));
        let held = c.entry("a.b.Held", false).expect("entry");
        drop(c.entry("a.b.Idle", false).expect("entry"));
        assert_eq!(c.len(), 2);
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(c.len(), 1, "the idle one went, the held one stayed");
        shutdown.cancel();
        sweeper.await.expect("sweeper");
        assert!(c.is_empty());
        let mut held = held;
        tokio::time::timeout(Duration::from_secs(1), held.changed())
            .await
            .expect("the watch ends at shutdown")
            .expect_err("its sender is gone");
    }
}
