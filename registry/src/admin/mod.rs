//! The `Admin` gRPC service. Each RPC delegates to a function in the module of its
//! noun; this file only routes.

pub(crate) mod apply;
pub mod audit;
pub(crate) mod events;
mod history;
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
        noted(&r, |q| format!("node {}", q.name));
        nodes::remove(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn apply(&self, r: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let note = noted(&r, |q| format!("spec {}", q.source));
        apply::apply(&self.shared, r.into_inner())
            .await
            .inspect(|a| note.set(format!("{}{}", a.server, dry(a.dry_run))))
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
        noted(&r, |q| {
            let action = corral_proto::wire::name_of::<ServerAction>(q.action);
            let on = if q.node.is_empty() { "" } else { " on " };
            format!("{} {action}{on}{}", q.server, q.node)
        });
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
        let note = noted(&r, |_| String::new());
        packages::upload(&self.shared, r.into_inner())
            .await
            .inspect(|p| note.set(format!("{}@{}", p.server, p.version)))
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
        noted(&r, |q| format!("{}@{}", q.server, q.version));
        packages::remove(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn start_rollout(
        &self,
        r: Request<StartRolloutRequest>,
    ) -> Result<Response<Rollout>, Status> {
        noted(&r, |q| match (q.rollback, q.version.as_str()) {
            (true, "") => format!("{} rollback to the previous release", q.server),
            (true, v) => format!("{} rollback to {v}", q.server),
            (false, v) => format!("{}@{v}", q.server),
        });
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
        noted(&r, |q| {
            let preview = if q.preview { " (preview)" } else { "" };
            format!("{} to {}{preview}", q.server, q.nodes.join(","))
        });
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

    async fn server_history(
        &self,
        r: Request<ServerHistoryRequest>,
    ) -> Result<Response<ServerHistoryResponse>, Status> {
        history::history(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn server_diff(
        &self,
        r: Request<ServerDiffRequest>,
    ) -> Result<Response<ServerDiffResponse>, Status> {
        history::diff(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn revert_server(
        &self,
        r: Request<RevertServerRequest>,
    ) -> Result<Response<RevertServerResponse>, Status> {
        noted(&r, |q| {
            format!("{} to version {}{}", q.server, q.version, dry(q.dry_run))
        });
        history::revert(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn put_secret(
        &self,
        r: Request<PutSecretRequest>,
    ) -> Result<Response<SecretInfo>, Status> {
        noted(&r, |q| secret_target(&q.server, &q.name, q.scope.as_ref()));
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
        noted(&r, |q| secret_target(&q.server, &q.name, q.scope.as_ref()));
        secrets::remove(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_audit(
        &self,
        r: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        audit::list(&self.shared, r.into_inner())
            .await
            .map(Response::new)
    }

    type LogsStream = crate::logs::LogsStream;

    async fn logs(
        &self,
        r: Request<LogsRequest>,
    ) -> Result<Response<crate::logs::LogsStream>, Status> {
        crate::logs::logs(self.shared.clone(), r)
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

/// Notes what a call acts on, for the audit log ([`crate::audit`]): set before the call
/// runs, so that a failed call is recorded with it too; the note, to refine it after.
fn noted<T>(r: &Request<T>, target: impl FnOnce(&T) -> String) -> crate::audit::Note {
    let note = crate::audit::Note::of(r);
    note.set(target(r.get_ref()));
    note
}

fn dry(dry_run: bool) -> &'static str {
    if dry_run { " (dry run)" } else { "" }
}

/// A secret's audit target: `APP.SERVER/NAME` and its scope; never its value.
fn secret_target(server: &str, name: &str, scope: Option<&SecretScope>) -> String {
    let scope = match scope {
        Some(s) if s.kind == SecretScopeKind::Node as i32 => format!(" (node {})", s.node),
        Some(s) if s.kind == SecretScopeKind::Ordinal as i32 => {
            format!(" (ordinal {})", s.ordinal)
        }
        _ => " (all)".to_string(),
    };
    format!("{server}/{name}{scope}")
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
