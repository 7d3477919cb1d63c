//! `Admin.PutSecret`, `ListSecrets` and `RemoveSecret`. Values come in and never go out:
//! answers carry names, scopes, versions and sizes; messages name secrets, not values.

use corral_proto::v1::{
    ListSecretsRequest, ListSecretsResponse, PutSecretRequest, RemoveSecretRequest, SecretInfo,
    SecretScope, SecretScopeKind,
};
use corral_proto::wire::known;
use tonic::Status;
use tracing::info;

use super::split_server;
use crate::secrets::{self, MAX_VALUE, Scope};
use crate::state::Shared;
use crate::store::now_ms;
use crate::store::secrets::SecretRow;

fn scope_from(scope: Option<SecretScope>) -> Result<Scope, Status> {
    let s = scope.ok_or_else(|| {
        Status::invalid_argument(
            "say which instances the secret is for: --node, --ordinal or --all",
        )
    })?;
    let kind: SecretScopeKind =
        known("SecretScope.kind", s.kind).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(match kind {
        SecretScopeKind::All => Scope::All,
        SecretScopeKind::Node => {
            corral_proto::names::check_node_name(&s.node)
                .map_err(|e| Status::invalid_argument(format!("--node: {e}")))?;
            Scope::Node(s.node)
        }
        SecretScopeKind::Ordinal => Scope::Ordinal(s.ordinal),
        SecretScopeKind::Unspecified => {
            return Err(Status::invalid_argument("SecretScope.kind is not set"));
        }
    })
}

fn scope_to(scope: &Scope) -> SecretScope {
    match scope {
        Scope::All => SecretScope {
            kind: SecretScopeKind::All.into(),
            ..SecretScope::default()
        },
        Scope::Node(n) => SecretScope {
            kind: SecretScopeKind::Node.into(),
            node: n.clone(),
            ..SecretScope::default()
        },
        Scope::Ordinal(k) => SecretScope {
            kind: SecretScopeKind::Ordinal.into(),
            ordinal: *k,
            ..SecretScope::default()
        },
    }
}

fn info_of(r: &SecretRow) -> SecretInfo {
    SecretInfo {
        server: format!("{}.{}", r.app, r.server),
        name: r.name.clone(),
        scope: Some(scope_to(&r.scope)),
        version: u64::try_from(r.version).unwrap_or(0),
        size: u64::try_from(r.size).unwrap_or(0),
        updated_at_ms: r.updated_at_ms,
    }
}

fn check_name(name: &str) -> Result<(), Status> {
    secrets::check_name(name).map_err(Status::invalid_argument)
}

/// Tells the nodes running the server's instances: their sessions send the desired
/// state again (here and, through the change feed, on every replica), and the config
/// renderer delivers the files that read the secret per their `on_change`.
async fn tell_nodes(shared: &Shared, app: &str, server: &str) -> Result<(), Status> {
    let mut nodes: Vec<String> = shared
        .store()
        .instances_of(app, server)
        .await?
        .into_iter()
        .map(|i| i.node)
        .collect();
    nodes.dedup();
    if !nodes.is_empty() {
        shared.resend(&nodes);
    }
    Ok(())
}

pub async fn put(shared: &Shared, req: PutSecretRequest) -> Result<SecretInfo, Status> {
    let (app, server) = split_server(&req.server)?;
    check_name(&req.name)?;
    let scope = scope_from(req.scope)?;
    if req.value.is_empty() {
        return Err(Status::invalid_argument(format!(
            "the value of secret {} is empty",
            req.name
        )));
    }
    if req.value.len() > MAX_VALUE {
        return Err(Status::invalid_argument(format!(
            "the value of secret {} is {} bytes; the limit is {MAX_VALUE}",
            req.name,
            req.value.len()
        )));
    }
    let Ok(value) = String::from_utf8(req.value) else {
        return Err(Status::invalid_argument(format!(
            "the value of secret {} is not UTF-8 text; secrets are text (PEM, tokens): \
             base64 a binary one",
            req.name
        )));
    };
    let row = shared
        .store()
        .put_secret((app, server, &req.name), &scope, &value, now_ms())
        .await?;
    info!(secret = %row.describe(), "secret stored");
    tell_nodes(shared, app, server).await?;
    Ok(info_of(&row))
}

pub async fn list(shared: &Shared, req: ListSecretsRequest) -> Result<ListSecretsResponse, Status> {
    let filter = if req.server.is_empty() {
        None
    } else {
        Some(split_server(&req.server)?)
    };
    let rows = shared.store().list_secrets(filter).await?;
    Ok(ListSecretsResponse {
        secrets: rows.iter().map(info_of).collect(),
    })
}

pub async fn remove(shared: &Shared, req: RemoveSecretRequest) -> Result<SecretInfo, Status> {
    let (app, server) = split_server(&req.server)?;
    check_name(&req.name)?;
    let scope = scope_from(req.scope)?;
    let store = shared.store();
    let rows = store.list_secrets(Some((app, server))).await?;
    let Some(found) = rows.iter().find(|r| r.name == req.name && r.scope == scope) else {
        return Err(Status::not_found(format!(
            "{}.{server} has no secret {} for {}",
            app,
            req.name,
            scope.flag()
        )));
    };
    if let Some(spec) = store.get_server(app, server).await?.map(|s| s.spec)
        && let Some(users) = secrets::references(&spec).get(&req.name)
    {
        // Would an instance of the spec be left without a value?
        let left = rows
            .iter()
            .filter(|r| r.name == req.name && r.scope != scope);
        let mut others = secrets::ServerSecrets::default();
        for r in left {
            others
                .0
                .entry(r.name.clone())
                .or_default()
                .insert(r.scope.clone(), String::new());
        }
        let orphaned: Vec<String> = store
            .instances_of(app, server)
            .await?
            .into_iter()
            .filter(|i| {
                let ordinal = u32::try_from(i.ordinal).unwrap_or(0);
                others.resolve(&i.node, ordinal).get(&req.name).is_none()
            })
            .map(|i| i.node)
            .collect();
        if !orphaned.is_empty() {
            return Err(Status::failed_precondition(format!(
                "secret {} of {app}.{server} ({}) is used by the spec {app}.{server} ({}), and \
                 its instance on {} would be left without a value; remove it from the spec first \
                 (registry apply), or put a value those instances get",
                req.name,
                scope.flag(),
                users.iter().cloned().collect::<Vec<_>>().join(", "),
                orphaned.join(", ")
            )));
        }
    }
    let removed = store
        .remove_secret((app, server, &req.name), &scope)
        .await?
        .unwrap_or_else(|| found.clone());
    info!(secret = %removed.describe(), "secret removed");
    tell_nodes(shared, app, server).await?;
    Ok(info_of(&removed))
}
