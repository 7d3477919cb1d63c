//! Finding Corral services by name.
//!
//! A [`Resolver`] watches one name (`APP.SERVER.ADAPTER`) through any registry of a
//! locator list: it follows `Query.Watch` on the first registry that answers, moves to
//! the next when that one fails, and keeps the last known list meanwhile, so clients keep
//! working through a registry outage. [`Resolver::balance_channel`] turns it into a tonic
//! [`Channel`] that load-balances over the live endpoints; [`Resolver::balancer`] picks
//! one endpoint per call by a [`Policy`] (round robin, random, weighted, consistent
//! hash, same node), for clients that are not tonic channels.

pub mod policy;

pub use policy::{Balancer, Picker, Policy};

use std::collections::BTreeSet;
use std::time::Duration;

use corral_proto::v1::query_client::QueryClient;
use corral_proto::v1::{Endpoint, FindRequest};
use rand::Rng;
use tokio::sync::watch;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint as TonicEndpoint, Uri};
use tracing::{debug, warn};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("locator entry {0:?} is not a registry URL (expected e.g. http://10.0.0.1:17890)")]
    BadLocator(String),
    #[error("the locator is empty")]
    NoLocator,
    #[error("service name {0:?} must be APP.SERVER.ADAPTER")]
    BadName(String),
}

/// Watches one service name; cheap to clone the receiver it hands out.
pub struct Resolver {
    locators: Vec<Uri>,
    name: String,
    /// Delay between attempts after every registry failed: starts here, doubles to max.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// The token a registry wants for discovery reads (unless it runs with
    /// `--public-discovery`).
    pub token: Option<String>,
    /// TLS for https:// locators: the CA that signed the registries' certificates.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Resolver {
    /// `locator`: comma-separated registry URLs.
    pub fn new(locator: &str, name: &str) -> Result<Resolver, Error> {
        if corral_proto::names::split_service(name).is_none() {
            return Err(Error::BadName(name.to_string()));
        }
        let mut locators = Vec::new();
        for (entry, uri) in corral_proto::locator::entries(locator) {
            let uri = uri
                .filter(|u| u.host().is_some_and(|h| !h.is_empty()))
                .ok_or_else(|| Error::BadLocator(entry.to_string()))?;
            locators.push(uri);
        }
        if locators.is_empty() {
            return Err(Error::NoLocator);
        }
        Ok(Resolver {
            locators,
            name: name.to_string(),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            token: None,
            tls: None,
        })
    }

    /// Starts watching; the receiver always holds the last known endpoint list (empty
    /// until a registry answered once). The task ends when every receiver is dropped.
    pub fn watch(self) -> watch::Receiver<Vec<Endpoint>> {
        let (tx, rx) = watch::channel(Vec::new());
        tokio::spawn(self.follow(tx));
        rx
    }

    /// Starts watching, and chooses among the live endpoints by `policy`.
    pub fn balancer(self, policy: Policy) -> Balancer {
        Balancer::new(self.watch(), policy)
    }

    async fn follow(self, tx: watch::Sender<Vec<Endpoint>>) {
        let mut delay = self.retry_initial;
        let mut index = 0;
        loop {
            let uri = self.locators[index].clone();
            match self.follow_one(&uri, &tx).await {
                Ok(()) => return, // nobody listens any more
                Err(got_any) => {
                    if got_any {
                        delay = self.retry_initial;
                    }
                    index = (index + 1) % self.locators.len();
                    let wait = delay.mul_f64(rand::rng().random_range(0.5..=1.0));
                    delay = (delay * 2).min(self.retry_max);
                    tokio::select! {
                        () = tx.closed() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Follows the name on one registry; Ok when the receivers are gone, Err(got
    /// anything) when the registry failed.
    async fn follow_one(&self, uri: &Uri, tx: &watch::Sender<Vec<Endpoint>>) -> Result<(), bool> {
        let mut endpoint = TonicEndpoint::from(uri.clone());
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| {
                warn!(registry = %uri, cause = %e, "bad TLS settings");
                false
            })?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| {
                debug!(registry = %uri, cause = %e, "registry unreachable");
                false
            })?;
        let mut request = tonic::Request::new(FindRequest {
            name: self.name.clone(),
            ..Default::default()
        });
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}").parse().map_err(|_| {
                warn!("the token cannot be sent in a header");
                false
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        let mut stream = QueryClient::new(channel)
            .watch(request)
            .await
            .map_err(|s| {
                warn!(registry = %uri, cause = %s.message(), "watch refused");
                false
            })?
            .into_inner();
        let mut got_any = false;
        loop {
            tokio::select! {
                () = tx.closed() => return Ok(()),
                msg = stream.message() => match msg {
                    Ok(Some(list)) => {
                        got_any = true;
                        tx.send_replace(list.endpoints);
                    }
                    Ok(None) | Err(_) => return Err(got_any),
                },
            }
        }
    }

    /// A channel balanced over the service's endpoints, kept in step with discovery.
    /// `scheme` is "http" (or "https" with TLS set up on the endpoints by `configure`).
    pub fn balance_channel(self, capacity: usize) -> (Channel, watch::Receiver<Vec<Endpoint>>) {
        let (channel, changes) = Channel::balance_channel::<String>(capacity);
        let rx = self.watch();
        let mut follow = rx.clone();
        tokio::spawn(async move {
            let mut current: BTreeSet<String> = BTreeSet::new();
            loop {
                let wanted: BTreeSet<String> = follow
                    .borrow_and_update()
                    .iter()
                    .map(|e| format!("{}:{}", e.host, e.port))
                    .collect();
                for gone in current.difference(&wanted) {
                    if changes.send(Change::Remove(gone.clone())).await.is_err() {
                        return;
                    }
                }
                for new in wanted.difference(&current) {
                    let Ok(endpoint) = TonicEndpoint::from_shared(format!("http://{new}")) else {
                        continue;
                    };
                    if changes
                        .send(Change::Insert(new.clone(), endpoint))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                current = wanted;
                if follow.changed().await.is_err() {
                    return;
                }
            }
        });
        (channel, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_its_input() {
        assert!(Resolver::new("http://127.0.0.1:17890,127.0.0.2:17890", "a.b.C").is_ok());
        assert!(matches!(
            Resolver::new("http://127.0.0.1:1", "a.b"),
            Err(Error::BadName(_))
        ));
        assert!(matches!(Resolver::new("", "a.b.C"), Err(Error::NoLocator)));
        assert!(matches!(
            Resolver::new("http://:1", "a.b.C"),
            Err(Error::BadLocator(_))
        ));
    }
}
