//! `Query.Watch` streams. An exact name reads its channel in the discovery cache
//! directly (one wake-up per change per watcher). A name matched without regard to case
//! (agents' DNS: DNS names are case-insensitive) is resolved to the name the spec
//! spells, then followed; while no server has it, it is resolved again after every
//! recomputation of the table, so it is found once a server with it is applied.

use std::pin::Pin;
use std::sync::Arc;

use corral_proto::v1::Endpoints;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::discovery::{Table, Watched};
use crate::state::Shared;

pub type EndpointStream = Pin<Box<dyn Stream<Item = Result<Endpoints, Status>> + Send>>;

fn message(name: &str, watched: &Watched) -> Endpoints {
    Endpoints {
        name: name.to_string(),
        endpoints: watched.as_deref().cloned().unwrap_or_default(),
        known: watched.is_some(),
    }
}

/// The list of `name` now, then again on every change of it.
pub fn exact(shared: &Shared, name: String) -> EndpointStream {
    let rx = shared.discovery().watch_name(&name);
    Box::pin(WatchStream::new(rx).map(move |w| Ok(message(&name, &w))))
}

/// The name of `table` that `requested` names without regard to case: itself when it is
/// there, else the first in sorted order.
pub fn resolve(table: &Table, requested: &str) -> Option<String> {
    if table.contains_key(requested) {
        return Some(requested.to_string());
    }
    table
        .keys()
        .filter(|k| k.eq_ignore_ascii_case(requested))
        .min()
        .cloned()
}

/// Follows `requested` without regard to case, until the caller goes or shutdown.
pub fn ignoring_case(shared: Arc<Shared>, requested: String) -> EndpointStream {
    let (tx, rx) = mpsc::channel(4);
    let task = shared.clone();
    task.spawn(async move {
        let mut recomputes = shared.discovery().subscribe_recomputes();
        let mut last: Option<Endpoints> = None;
        loop {
            recomputes.borrow_and_update();
            let resolved = resolve(&shared.discovery().table(), &requested);
            let mut list = resolved
                .as_ref()
                .map(|name| shared.discovery().watch_name(name));
            // Follow the resolved name until it goes; or wait for a recomputation.
            loop {
                let now = match (&resolved, list.as_mut()) {
                    (Some(name), Some(rx)) => message(name, &rx.borrow_and_update()),
                    _ => message(&requested, &None),
                };
                let gone = !now.known;
                if last.as_ref() != Some(&now) {
                    last = Some(now.clone());
                    if tx.send(Ok(now)).await.is_err() {
                        return;
                    }
                }
                if gone && resolved.is_some() {
                    break;
                }
                tokio::select! {
                    () = shared.shutdown().cancelled() => return,
                    () = tx.closed() => return,
                    changed = async {
                        match list.as_mut() {
                            Some(rx) => rx.changed().await.is_ok(),
                            None => recomputes.changed().await.is_ok(),
                        }
                    } => {
                        if !changed {
                            return;
                        }
                        if list.is_none() {
                            break;
                        }
                    }
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_without_regard_to_case() {
        let table: Table = ["demo.echo.Main", "Demo.echo.Main", "x.y.Z"]
            .iter()
            .map(|n| (n.to_string(), Arc::new(Vec::new())))
            .collect();
        assert_eq!(
            resolve(&table, "demo.echo.main").as_deref(),
            Some("Demo.echo.Main")
        );
        assert_eq!(
            resolve(&table, "demo.echo.Main").as_deref(),
            Some("demo.echo.Main")
        );
        assert_eq!(resolve(&table, "x.y.z").as_deref(), Some("x.y.Z"));
        assert_eq!(resolve(&table, "x.y.w"), None);
    }
}
