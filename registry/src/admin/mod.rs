//! The `Admin` gRPC service. Each RPC delegates to a function in the module of its
//! noun; this file only routes.

pub(crate) mod apply;
pub(crate) mod events;
pub(crate) mod nodes;
pub(crate) mod packages;
mod resources;
mod secrets;
pub(crate) mod servers;

use std::pin::Pin;
use std::sync::Arc;

use corral_proto::v1::admin_server::Admin;
use corral_proto::v1::*;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::state::Shared;

pub use nodes::node_to_proto;

pub struct AdminService {
    pub shared: Arc<Shared>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;
type RolloutStream = Pin<Box<dyn Stream<Item = Result<Rollout, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_nodes(
        &self,
        r: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        nodes::list(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_node(&self, r: Request<GetNodeRequest>) -> Result<Response<Node>, Status> {
        nodes::get(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_node(
        &self,
        r: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        nodes::remove(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn apply(&self, r: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        apply::apply(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_servers(
        &self,
        r: Request<ListServersRequest>,
    ) -> Result<Response<ListServersResponse>, Status> {
        servers::list(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn server_status(
        &self,
        r: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        servers::status(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn control_server(
        &self,
        r: Request<ControlServerRequest>,
    ) -> Result<Response<ControlServerResponse>, Status> {
        servers::control(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_events(
        &self,
        r: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        events::list(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn upload_package(
        &self,
        r: Request<tonic::Streaming<UploadChunk>>,
    ) -> Result<Response<PackageInfo>, Status> {
        packages::upload(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_packages(
        &self,
        r: Request<ListPackagesRequest>,
    ) -> Result<Response<ListPackagesResponse>, Status> {
        packages::list(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_package(
        &self,
        r: Request<RemovePackageRequest>,
    ) -> Result<Response<RemovePackageResponse>, Status> {
        packages::remove(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn start_rollout(
        &self,
        r: Request<StartRolloutRequest>,
    ) -> Result<Response<Rollout>, Status> {
        crate::rollout::start(self.shared.clone(), r.into_inner())
            .await
            .map(Response::new)
    }

    type WatchRolloutStream = RolloutStream;

    async fn watch_rollout(
        &self,
        r: Request<GetRolloutRequest>,
    ) -> Result<Response<RolloutStream>, Status> {
        crate::rollout::watch(self.shared.clone(), r.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_rollout(
        &self,
        r: Request<GetRolloutRequest>,
    ) -> Result<Response<Rollout>, Status> {
        crate::rollout::get(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_rollouts(
        &self,
        r: Request<ListRolloutsRequest>,
    ) -> Result<Response<ListRolloutsResponse>, Status> {
        crate::rollout::list(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn expand(&self, r: Request<ExpandRequest>) -> Result<Response<ExpandResponse>, Status> {
        apply::expand(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn export_server(
        &self,
        r: Request<ExportServerRequest>,
    ) -> Result<Response<ExportServerResponse>, Status> {
        apply::export(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn put_secret(
        &self,
        r: Request<PutSecretRequest>,
    ) -> Result<Response<SecretInfo>, Status> {
        secrets::put(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_secrets(
        &self,
        r: Request<ListSecretsRequest>,
    ) -> Result<Response<ListSecretsResponse>, Status> {
        secrets::list(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_secret(
        &self,
        r: Request<RemoveSecretRequest>,
    ) -> Result<Response<SecretInfo>, Status> {
        secrets::remove(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    type FollowEventsStream = EventStream;

    async fn follow_events(
        &self,
        r: Request<ListEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        events::follow(self.shared.clone(), r.into_inner())
            .await
            .map(Response::new)
    }
}

/// Splits `app.server`, naming the argument when it is malformed. Both halves follow the
/// spec's name rules, so a name that passes is short enough to echo in any later error.
pub fn split_server(name: &str) -> Result<(&str, &str), Status> {
    let shown = corral_proto::text::quoted(name);
    match corral_proto::names::split_server(name) {
        Some((app, server)) => {
            for (what, part) in [("app", app), ("server", server)] {
                crate::spec::check_name(what, part, &['_', '-'])
                    .map_err(|e| Status::invalid_argument(format!("server {shown}: {e}")))?;
            }
            Ok((app, server))
        }
        _ => Err(Status::invalid_argument(format!(
            "server {shown} must be written APP.SERVER, e.g. demo.echo"
        ))),
    }
}
