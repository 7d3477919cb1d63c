//! Rolling patches. `start` records a rollout in the database and spawns its
//! [`executor`]; the executor reads all it needs from the database on every step, so a
//! registry that restarts (or another replica, once the lease runs out) resumes it.

pub mod executor;

use corral_proto::v1::{RolloutPhase, RolloutState};
use corral_proto::wire::{name_of, number};
use std::sync::Arc;
use std::time::Duration;

use corral_proto::v1::{
    GetRolloutRequest, ListRolloutsRequest, ListRolloutsResponse, Rollout, RolloutInstance,
    StartRolloutRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{info, warn};

use crate::admin::split_server;
use crate::state::Shared;
use crate::store::{RolloutInstanceRow, RolloutRow, StoreError, now_ms};

pub const DEFAULT_MIN_HEALTHY: Duration = Duration::from_secs(5);
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

pub async fn to_proto(shared: &Shared, r: RolloutRow) -> Result<Rollout, StoreError> {
    let instances = shared.store().rollout_instances(r.id).await?;
    Ok(Rollout {
        id: r.id,
        server: format!("{}.{}", r.app, r.server),
        to_version: r.to_version,
        state: number::<RolloutState>(&r.state),
        error: r.error,
        batch: r.batch as u32,
        min_healthy_ms: r.min_healthy_ms as u64,
        deadline_ms: r.deadline_ms as u64,
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        instances: instances
            .into_iter()
            .map(|i| RolloutInstance {
                node: i.node,
                batch: i.batch as u32,
                from_version: i.from_version,
                phase: number::<RolloutPhase>(&i.phase),
                percent: i.percent as u32,
                error: i.error,
            })
            .collect(),
    })
}

/// The version a rollback goes to: the version before the current one.
async fn previous_version(
    shared: &Shared,
    app: &str,
    server: &str,
    current: &str,
) -> Result<String, Status> {
    for r in shared
        .store()
        .list_rollouts(Some((app, server)), 100)
        .await?
    {
        if r.state == "succeeded" && r.to_version == current && !r.from_version.is_empty() {
            return Ok(r.from_version);
        }
    }
    // No rollout led here: the newest package uploaded before the current one.
    let packages = shared.store().list_packages(Some((app, server))).await?;
    let created = packages
        .iter()
        .find(|p| p.version == current)
        .map_or(i64::MAX, |p| p.created_at_ms);
    packages
        .into_iter()
        .filter(|p| p.version != current && p.created_at_ms <= created)
        .max_by_key(|p| p.created_at_ms)
        .map(|p| p.version)
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "{app}.{server} has no version to roll back to before {current}"
            ))
        })
}

pub async fn start(shared: Arc<Shared>, req: StartRolloutRequest) -> Result<Rollout, Status> {
    let (app, server) = split_server(&req.server)?;
    // The request's own values first: bad input is named before any lookup.
    let batch = match req.batch {
        None => 1,
        Some(0) => {
            return Err(Status::invalid_argument(
                "batch (--batch) is 0; a rollout switches at least 1 instance at a time",
            ));
        }
        Some(n) => i64::from(n),
    };
    if req.deadline_ms == Some(0) {
        return Err(Status::invalid_argument(
            "deadline (--deadline) is 0s; no instance could start in no time (leave it out for 60s)",
        ));
    }
    let current = shared
        .store()
        .get_server(app, server)
        .await?
        .ok_or_else(|| StoreError::ServerNotFound(req.server.clone()))?;
    let from_version = current.spec.package.clone().unwrap_or_default();
    let version = if req.rollback && req.version.is_empty() {
        previous_version(&shared, app, server, &from_version).await?
    } else {
        req.version.clone()
    };
    crate::spec::check_version(&version).map_err(Status::invalid_argument)?;
    if shared
        .store()
        .get_package(app, server, &version)
        .await?
        .is_none()
    {
        return Err(Status::failed_precondition(format!(
            "package {app}.{server} {version} has not been uploaded (see `registry package list --server {app}.{server}`)"
        )));
    }
    let instances = shared.store().instances_of(app, server).await?;
    for n in &req.nodes {
        if !instances.iter().any(|i| &i.node == n) {
            return Err(Status::invalid_argument(format!(
                "{app}.{server} has no instance on node {}",
                corral_proto::text::quoted(n)
            )));
        }
    }
    let targets: Vec<RolloutInstanceRow> = instances
        .iter()
        .filter(|i| req.nodes.is_empty() || req.nodes.contains(&i.node))
        .enumerate()
        .map(|(n, i)| RolloutInstanceRow {
            node: i.node.clone(),
            batch: n as i64 / batch,
            from_version: i.desired_version.clone(),
            phase: "pending".into(),
            percent: 0,
            error: String::new(),
            switched_at_ms: 0,
            healthy_since_ms: 0,
        })
        .collect();
    if targets.is_empty() {
        return Err(Status::failed_precondition(format!(
            "{app}.{server} has no instances to patch"
        )));
    }
    // Unset means the default; an explicit 0 min_healthy is honoured (running, and
    // healthy with a check, is enough), an explicit 0 deadline was refused above.
    let ms = |d: Option<u64>, default: Duration| {
        i64::try_from(d.unwrap_or(default.as_millis() as u64)).unwrap_or(i64::MAX)
    };
    let now = now_ms();
    let row = RolloutRow {
        id: 0,
        app: app.to_string(),
        server: server.to_string(),
        from_version,
        to_version: version.clone(),
        state: "running".into(),
        error: String::new(),
        batch,
        min_healthy_ms: ms(req.min_healthy_ms, DEFAULT_MIN_HEALTHY),
        deadline_ms: ms(req.deadline_ms, DEFAULT_DEADLINE),
        created_at_ms: now,
        updated_at_ms: now,
    };
    let id = shared
        .store()
        .create_rollout_as(
            &row,
            &targets,
            shared.replica_id(),
            now + executor::LEASE.as_millis() as i64,
            if req.rollback { "rollback" } else { "patch" },
        )
        .await?;
    let nodes: Vec<String> = targets.iter().map(|t| t.node.clone()).collect();
    shared.changed(&nodes);
    info!(rollout = id, server = %req.server, version = %version, instances = nodes.len(), "rollout started");
    executor::spawn(shared.clone(), id);
    Ok(to_proto(&shared, shared.store().get_rollout(id).await?).await?)
}

pub async fn get(shared: &Shared, req: GetRolloutRequest) -> Result<Rollout, Status> {
    Ok(to_proto(shared, shared.store().get_rollout(req.id).await?).await?)
}

pub async fn list(
    shared: &Shared,
    req: ListRolloutsRequest,
) -> Result<ListRolloutsResponse, Status> {
    let filter = if req.server.is_empty() {
        None
    } else {
        Some(split_server(&req.server)?)
    };
    let mut rollouts = Vec::new();
    for r in shared.store().list_rollouts(filter, 100).await? {
        rollouts.push(to_proto(shared, r).await?);
    }
    Ok(ListRolloutsResponse { rollouts })
}

type RolloutStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Rollout, Status>> + Send>>;

/// The rollout now and after every change, until it ends.
pub async fn watch(shared: Arc<Shared>, req: GetRolloutRequest) -> Result<RolloutStream, Status> {
    let first = to_proto(&shared, shared.store().get_rollout(req.id).await?).await?;
    let (tx, rx) = mpsc::channel(16);
    let task_shared = shared.clone();
    shared.spawn(async move {
        let shared = task_shared;
        let mut last = first;
        if tx.send(Ok(last.clone())).await.is_err() {
            return;
        }
        while !executor::is_final(name_of::<RolloutState>(last.state).as_str()) {
            tokio::select! {
                () = shared.shutdown().cancelled() => return,
                () = tx.closed() => return,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            let now = match shared.store().get_rollout(req.id).await {
                Ok(r) => to_proto(&shared, r).await,
                Err(e) => Err(e),
            };
            match now {
                Ok(r) if r != last => {
                    last = r;
                    if tx.send(Ok(last.clone())).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Takes over rollouts whose driver stopped renewing its lease (a registry that died or
/// restarted), so none is left half-done.
pub async fn resume_orphans(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shared.shutdown().cancelled() => return,
            _ = tick.tick() => {}
        }
        match shared.store().orphaned_rollouts(now_ms()).await {
            Ok(ids) => {
                for id in ids {
                    info!(rollout = id, "resuming a rollout whose driver stopped");
                    crate::rollout::executor::spawn(shared.clone(), id);
                }
            }
            Err(err) => warn!(cause = %err, "could not look for orphaned rollouts"),
        }
    }
}
