//! The `Query` service: discovery reads, answered from the in-memory cache.

use std::pin::Pin;
use std::sync::Arc;

use corral_proto::v1::query_server::Query;
use corral_proto::v1::{Endpoints, FindRequest};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::discovery::Table;
use crate::server::Shared;

pub struct QueryService {
    pub shared: Arc<Shared>,
}

/// A name must look like `APP.SERVER.ADAPTER`.
fn check_name(name: &str) -> Result<(), Status> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(Status::invalid_argument(format!(
            "service name {name:?} must be APP.SERVER.ADAPTER, e.g. demo.echo.Main"
        )));
    }
    Ok(())
}

fn lookup(table: &Table, name: &str) -> Result<Endpoints, Status> {
    match table.get(name) {
        Some(eps) => Ok(Endpoints {
            name: name.to_string(),
            endpoints: eps.as_ref().clone(),
        }),
        None => Err(Status::not_found(format!(
            "no service {name:?} (no server has that adapter)"
        ))),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<Endpoints, Status>> + Send>>;

#[tonic::async_trait]
impl Query for QueryService {
    async fn find(&self, request: Request<FindRequest>) -> Result<Response<Endpoints>, Status> {
        let name = request.into_inner().name;
        check_name(&name)?;
        lookup(&self.shared.discovery.table(), &name).map(Response::new)
    }

    type WatchStream = WatchStream;

    /// The list now (empty if the name is not known yet), then again on every change.
    async fn watch(&self, request: Request<FindRequest>) -> Result<Response<WatchStream>, Status> {
        let name = request.into_inner().name;
        check_name(&name)?;
        let mut rx = self.shared.discovery.subscribe();
        let (tx, out) = mpsc::channel(4);
        let shutdown = self.shared.shutdown.clone();
        self.shared.tracker.spawn(async move {
            let mut last = None;
            loop {
                let now = rx
                    .borrow_and_update()
                    .get(&name)
                    .cloned()
                    .unwrap_or_default();
                if last.as_ref() != Some(&now) {
                    let msg = Endpoints {
                        name: name.clone(),
                        endpoints: now.as_ref().clone(),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                    last = Some(now);
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tx.closed() => return,
                    changed = rx.changed() => if changed.is_err() { return },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}
