//! Discovery over HTTP on the registry's HTTP port: `/v1/endpoints/NAME` (blocking
//! queries) and `/v1/watch/NAME` (server-sent events), served by the agent crate's
//! handlers ([`corral_agent::discovery::http`]) over the registry's own table, and
//! Prometheus' `/v1/prometheus/targets` ([`crate::prometheus_sd`]). The same tokens as
//! `Query`: an admin token as `Authorization: Bearer TOKEN`, or none with
//! `--public-discovery`.
//!
//! Each name asked for over HTTP gets an index that moves with its list: one task per
//! name follows the name's channel in the discovery cache while the name is known.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::http::{Extensions, HeaderMap, header};
use corral_agent::discovery::http::Auth;
use corral_agent::discovery::{LookupError, Snapshot, Source, State, check_name};
use tokio::sync::watch;

use crate::auth::Tokens;
use crate::discovery::Watched;
use crate::state::Shared;

type Names = Arc<Mutex<HashMap<String, Arc<watch::Sender<Snapshot>>>>>;

/// The registry's table as a discovery [`Source`].
pub struct Lists {
    shared: Arc<Shared>,
    names: Names,
}

fn state_of(w: &Watched) -> State {
    match w {
        Some(eps) => State::Known(eps.clone()),
        None => State::Unknown,
    }
}

impl Source for Lists {
    async fn subscribe(&self, name: &str) -> Result<watch::Receiver<Snapshot>, LookupError> {
        check_name(name)?;
        let rx = {
            let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
            match names.get(name) {
                Some(tx) => tx.subscribe(),
                None => {
                    let mut src = self.shared.discovery().watch_name(name);
                    let now = src.borrow_and_update().clone();
                    if now.is_none() {
                        return Err(LookupError::NotFound(name.to_string()));
                    }
                    let tx = Arc::new(watch::Sender::new(Snapshot::new(state_of(&now))));
                    names.insert(name.to_string(), tx.clone());
                    let rx = tx.subscribe();
                    self.shared
                        .spawn(forward(self.names.clone(), name.to_string(), src, tx));
                    rx
                }
            }
        };
        if rx.borrow().state == State::Unknown {
            return Err(LookupError::NotFound(name.to_string()));
        }
        Ok(rx)
    }
}

/// Follows one name's channel into its indexed snapshots. The entry stays while the
/// name is known, so its index moves only when its list does, however many requests
/// come and go; it goes with the name (the server was removed) or at shutdown.
async fn forward(
    names: Names,
    name: String,
    mut src: watch::Receiver<Watched>,
    tx: Arc<watch::Sender<Snapshot>>,
) {
    while src.changed().await.is_ok() {
        let now = state_of(&src.borrow_and_update());
        let gone = now == State::Unknown;
        if gone {
            // Under the lock: a request either found the entry (and hears it go) or
            // starts a new one.
            let mut names = names.lock().unwrap_or_else(PoisonError::into_inner);
            names.remove(&name);
            tx.send_if_modified(|s| s.update(now));
            return;
        }
        tx.send_if_modified(|s| s.update(now));
    }
    // Shutdown: the discovery cache closed its channels.
    names
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&name);
}

/// The check of a request's token: none needed with `--public-discovery` (or when the
/// registry has no admin token at all, as for admin calls). A refusal is recorded in the
/// audit log and counted, as `HttpDiscovery`.
pub fn auth(shared: &Arc<Shared>) -> Auth {
    let tokens = Tokens::new(&shared.config().admin_tokens);
    let public = shared.config().public_discovery;
    let shared = shared.clone();
    Arc::new(move |headers: &HeaderMap, extensions: &Extensions| {
        if public {
            return Ok(());
        }
        let value = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or_default());
        if tokens.check_header(value).is_ok() {
            return Ok(());
        }
        // Discovery's own words: the admin calls' would point at the CLI's --token.
        let why = if value.is_none() {
            "discovery needs a token: send `Authorization: Bearer TOKEN` with an admin \
             token (or run the registry with --public-discovery)"
        } else {
            "the token is not valid"
        };
        crate::gate::refused(
            &shared,
            None,
            value.is_some(),
            &crate::http::ClientAddr::of(extensions),
            "HttpDiscovery",
            &tonic::Status::unauthenticated(why),
        );
        Err(why.to_string())
    })
}

/// The discovery routes of the registry's HTTP side.
pub fn routes(shared: &Arc<Shared>) -> Router {
    let auth = auth(shared);
    let lists = Arc::new(Lists {
        shared: shared.clone(),
        names: Names::default(),
    });
    corral_agent::discovery::http::routes(lists, Some(auth.clone()))
        .merge(crate::prometheus_sd::routes(shared.clone(), auth))
}
