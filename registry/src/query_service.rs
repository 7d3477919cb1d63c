//! The `Query` service: discovery reads, answered from the in-memory cache.

use std::sync::Arc;

use corral_proto::v1::query_server::Query;
use corral_proto::v1::{Endpoints, FindRequest};
use tonic::{Request, Response, Status};

use crate::discovery::Table;
use crate::query_auth::Verifier;
use crate::query_watch::EndpointStream;
use crate::state::Shared;

pub struct QueryService {
    pub shared: Arc<Shared>,
    /// Checks the node identities agents' watch caches present.
    pub nodes: Verifier,
}

impl QueryService {
    pub fn new(shared: Arc<Shared>) -> QueryService {
        QueryService {
            shared,
            nodes: Verifier::default(),
        }
    }
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
            known: true,
        }),
        None => Err(Status::not_found(format!(
            "no service {} (no server has that adapter)",
            corral_proto::text::quoted(name)
        ))),
    }
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn find(&self, request: Request<FindRequest>) -> Result<Response<Endpoints>, Status> {
        self.nodes.check(&self.shared, &request).await?;
        let req = request.into_inner();
        check_name(&req.name)?;
        let table = self.shared.discovery().table();
        let name = if req.ignore_case {
            crate::query_watch::resolve(&table, &req.name).unwrap_or(req.name)
        } else {
            req.name
        };
        lookup(&table, &name).map(Response::new)
    }

    type WatchStream = EndpointStream;

    /// The list now (empty and not `known` while no server has the name), then again on
    /// every change of it; the stream ends at shutdown.
    async fn watch(
        &self,
        request: Request<FindRequest>,
    ) -> Result<Response<EndpointStream>, Status> {
        self.nodes.check(&self.shared, &request).await?;
        let req = request.into_inner();
        check_name(&req.name)?;
        Ok(Response::new(if req.ignore_case {
            crate::query_watch::ignoring_case(self.shared.clone(), req.name)
        } else {
            crate::query_watch::exact(&self.shared, req.name)
        }))
    }
}
