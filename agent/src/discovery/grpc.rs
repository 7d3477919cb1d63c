//! `Query.Find` and `Query.Watch` for this host's gRPC clients, on the agent's HTTP port
//! (HTTP/2 without TLS, as the HTTP side serves its host only), answered from the watch
//! cache: a resolver pointed at the agent (`http://127.0.0.1:17892`) follows a name
//! without a connection of its own to the registry, and a thousand local watchers of one
//! name cost the registry one watch.
//!
//! It differs from the registry's `Query` in one way: a name no server has is refused
//! with `NotFound` (the cache does not follow unknown names), where the registry's
//! `Watch` stays open and sends an empty list that is not `known`.

use std::pin::Pin;
use std::sync::Arc;

use corral_proto::v1::query_server::{Query, QueryServer};
use corral_proto::v1::{Endpoints, FindRequest};
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{LookupError, Snapshot, Source, State};

/// The gRPC `Query` service over `source`, ready to merge into the HTTP router.
pub fn service<S: Source>(source: Arc<S>) -> QueryServer<LocalQuery<S>> {
    QueryServer::new(LocalQuery { source })
}

pub struct LocalQuery<S> {
    source: Arc<S>,
}

fn status(e: LookupError) -> Status {
    match e {
        LookupError::BadName(m) => Status::invalid_argument(m),
        e @ LookupError::NotFound(_) => Status::not_found(e.to_string()),
        LookupError::Unavailable(m) => Status::unavailable(m),
    }
}

/// The list of `name` a snapshot holds: empty and not `known` once no server has it.
fn message(name: &str, snap: &Snapshot) -> Endpoints {
    match &snap.state {
        State::Known(eps) => Endpoints {
            name: name.to_string(),
            endpoints: eps.as_ref().clone(),
            known: true,
        },
        State::Unknown | State::Pending => Endpoints {
            name: name.to_string(),
            endpoints: Vec::new(),
            known: false,
        },
    }
}

impl<S: Source> LocalQuery<S> {
    async fn subscribe(
        &self,
        req: &FindRequest,
    ) -> Result<tokio::sync::watch::Receiver<Snapshot>, Status> {
        if req.ignore_case {
            return Err(Status::invalid_argument(
                "ignore_case is answered by the registry only; ask the agent with the name as the spec spells it",
            ));
        }
        self.source.subscribe(&req.name).await.map_err(status)
    }
}

type EndpointStream = Pin<Box<dyn Stream<Item = Result<Endpoints, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Source> Query for LocalQuery<S> {
    async fn find(&self, request: Request<FindRequest>) -> Result<Response<Endpoints>, Status> {
        let req = request.into_inner();
        let rx = self.subscribe(&req).await?;
        let now = rx.borrow().clone();
        Ok(Response::new(message(&req.name, &now)))
    }

    type WatchStream = EndpointStream;

    /// The list now, then again on every change of it (a list whose server went away is
    /// sent empty, not `known`); the stream ends when the agent shuts down.
    async fn watch(
        &self,
        request: Request<FindRequest>,
    ) -> Result<Response<EndpointStream>, Status> {
        let req = request.into_inner();
        let rx = self.subscribe(&req).await?;
        let name = req.name;
        Ok(Response::new(Box::pin(
            WatchStream::new(rx).map(move |snap| Ok(message(&name, &snap))),
        )))
    }
}
