//! The `Query` service: discovery reads, answered from the in-memory cache.

use std::pin::Pin;
use std::sync::Arc;

use corral_proto::v1::query_server::Query;
use corral_proto::v1::{Endpoints, FindRequest};
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::discovery::Table;
use crate::state::Shared;

pub struct QueryService {
    pub shared: Arc<Shared>,
}

/// A name must look like `APP.SERVER.ADAPTER`.
fn check_name(name: &str) -> Result<(), Status> {
    if corral_proto::names::split_service(name).is_none() {
        return Err(Status::invalid_argument(format!(
            "service name {} must be APP.SERVER.ADAPTER, e.g. demo.echo.Main",
            corral_proto::text::quoted(name)
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
            "no service {} (no server has that adapter)",
            corral_proto::text::quoted(name)
        ))),
    }
}

type EndpointStream = Pin<Box<dyn Stream<Item = Result<Endpoints, Status>> + Send>>;

#[tonic::async_trait]
impl Query for QueryService {
    async fn find(&self, request: Request<FindRequest>) -> Result<Response<Endpoints>, Status> {
        let name = request.into_inner().name;
        check_name(&name)?;
        lookup(&self.shared.discovery().table(), &name).map(Response::new)
    }

    type WatchStream = EndpointStream;

    /// The list now (empty if the name is not known yet), then again on every change of
    /// it. The stream reads the name's channel directly: a change costs each watcher one
    /// wake-up of its HTTP/2 stream, and the stream ends at shutdown.
    async fn watch(
        &self,
        request: Request<FindRequest>,
    ) -> Result<Response<EndpointStream>, Status> {
        let name = request.into_inner().name;
        check_name(&name)?;
        let rx = self.shared.discovery().watch_name(&name);
        let stream = WatchStream::new(rx).map(move |eps| {
            Ok(Endpoints {
                name: name.clone(),
                endpoints: eps.as_ref().clone(),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
