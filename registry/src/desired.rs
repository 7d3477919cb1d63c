//! What each node must run, computed from the database: every instance assigned to it,
//! with its spec in the agent's form (this node's ports, its release, its rendered
//! environment) and the config files delivered to it. Sessions send it when they open
//! and after every change of their node.

use std::collections::BTreeMap;

use corral_proto::v1::{ConfigFile, DesiredState, InstanceSpec, PackageRef};
use tracing::warn;

use crate::configs::instance::{self, Placement};
use crate::state::Shared;
use crate::store::{Delivered, Store, StoreError, now_ms};

/// The node's full desired state, from the database: specs with this node's ports,
/// releases and rendered environment, and the config files delivered to each instance.
/// Files are rendered here the first time an instance needs them and when its spec
/// changed (the agent restarts it for the new spec anyway); every other change of a file
/// is the config renderer's to deliver ([`crate::configs`]).
pub async fn desired_state(shared: &Shared, node: &str) -> Result<DesiredState, StoreError> {
    let store = shared.store();
    let assignments = store.node_assignments(node).await?;
    let node_row = store.get_node(node).await?;
    let (node_ip, data_dir) = node_row
        .map(|n| (n.address, n.data_dir))
        .unwrap_or_default();
    let delivered = store.node_configs(node).await?;
    let mut tables = None;
    let mut secrets = std::collections::HashMap::new();
    let mut instances = Vec::with_capacity(assignments.len());
    for a in assignments {
        let (app, server) = (a.spec.app.clone(), a.spec.server.clone());
        let placement = Placement {
            node,
            node_ip: &node_ip,
            data_dir: &data_dir,
            ordinal: u32::try_from(a.ordinal).unwrap_or(0),
            ports: store.instance_ports(&app, &server, node).await?,
            version: &a.desired_version,
            secrets: Default::default(),
        };
        let mut ctx = instance::context(&a.spec, &placement);
        let env = instance::env(&a.spec, &ctx).unwrap_or_else(|f| {
            warn!(node, server = %a.spec.name(), cause = %f, "cannot render env; sending it unrendered");
            a.spec.env.clone()
        });
        let package = package_ref(store, &app, &server, &a.desired_version).await?;
        let spec = instance::wire_spec(&a.spec, &placement.ports, package, env);
        let fingerprint = corral_proto::spec_hash(&spec);
        let key = (app.clone(), server.clone(), node.to_string());
        let mut files = delivered.get(&key).cloned().unwrap_or_default();
        let stale = files.is_empty() || files.values().any(|d| d.fingerprint != fingerprint);
        if stale && !a.spec.configs.is_empty() {
            let tables = tables.get_or_insert_with(|| shared.discovery().render_tables());
            let key = (app.clone(), server.clone());
            if !secrets.contains_key(&key) {
                let read = store.server_secrets(&app, &server).await;
                // A secret that does not open: the files that read it keep their last
                // version (logged, naming the secret), the rest of the node goes on.
                let read = read.unwrap_or_else(|e| {
                    warn!(node, server = %a.spec.name(), cause = %e, "cannot read the server's secrets");
                    Default::default()
                });
                secrets.insert(key.clone(), read);
            }
            ctx.secrets = secrets[&key].resolve(node, placement.ordinal);
            let mut fresh = BTreeMap::new();
            for c in &a.spec.configs {
                match instance::file(&a.spec, &c.name, &ctx, tables) {
                    Ok(r) => {
                        fresh.insert(
                            c.name.clone(),
                            Delivered {
                                secret: !r.secrets.is_empty(),
                                content: r.content,
                                fingerprint: fingerprint.clone(),
                            },
                        );
                    }
                    // Checked at apply with this instance's values; a failure now is on
                    // something only the running fleet has. It keeps its last file.
                    Err(f) => {
                        warn!(node, server = %a.spec.name(), cause = %f, "cannot render a config");
                        if let Some(old) = files.get(&c.name) {
                            fresh.insert(c.name.clone(), old.clone());
                        }
                    }
                }
            }
            store
                .deliver_configs((&app, &server, node), &fresh, None, now_ms())
                .await?;
            files = fresh;
        }
        let configs = a
            .spec
            .configs
            .iter()
            .filter_map(|c| {
                let (on_change, signal) = c.wire_on_change();
                files.get(&c.name).map(|d| ConfigFile {
                    name: c.name.clone(),
                    content: d.content.clone(),
                    on_change,
                    signal,
                    mode: instance::file_mode(c, d.secret),
                })
            })
            .collect();
        instances.push(InstanceSpec {
            app: app.clone(),
            server: server.clone(),
            spec: Some(spec),
            running: a.running,
            restart_counter: u64::try_from(a.restart_counter).unwrap_or(0),
            prefetch: package_ref(store, &app, &server, &a.prefetch_version).await?,
            configs,
            ordinal: placement.ordinal,
        });
    }
    Ok(DesiredState { instances })
}

/// What an agent needs to fetch and verify a release; None for no version.
pub async fn package_ref(
    store: &Store,
    app: &str,
    server: &str,
    version: &str,
) -> Result<Option<PackageRef>, StoreError> {
    if version.is_empty() {
        return Ok(None);
    }
    let p = store
        .get_package(app, server, version)
        .await?
        .ok_or_else(|| StoreError::PackageNotFound(format!("{app}.{server} {version}")))?;
    Ok(Some(PackageRef {
        version: p.version,
        sha256: p.sha256,
        size: u64::try_from(p.size).unwrap_or(0),
    }))
}
