//! One pass of the config renderer over every instance with config files: render,
//! let renders settle, deliver what does not restart at once, and pick the next batch of
//! config restarts of each server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use super::instance::{self, Placement};
use super::plan::{InFlight, InstanceKey, Observed, Settle, next_batch};
use super::renderer::Renderer;
use crate::spec::Spec;
use crate::state::Shared;
use crate::store::{Delivered, InstanceRow, StoreError};

/// A new set of files for one instance, and what delivering it does.
pub(super) struct Change {
    pub(super) key: InstanceKey,
    pub(super) ordinal: u32,
    pub(super) files: BTreeMap<String, Delivered>,
    /// Changed files whose `on_change` restarts the instance.
    pub(super) restarting: Vec<String>,
    /// The same change without the restarting files (kept as delivered).
    pub(super) without_restart: BTreeMap<String, Delivered>,
    /// What the instance has now.
    pub(super) old: BTreeMap<String, Delivered>,
    pub(super) limit_ms: i64,
    pub(super) restarts: i64,
}

fn observed(i: &InstanceRow, spec: &Spec) -> Observed {
    Observed {
        restarts: i.restarts,
        ready: i.state == "running" && (spec.health.is_none() || i.health == "healthy"),
    }
}

/// How long a config restart may hold up the next batch: the check's start period, or
/// the minimum uptime of a server without a check.
fn limit_ms(spec: &Spec) -> i64 {
    let d = spec
        .health
        .as_ref()
        .map_or(spec.restart.min_uptime, |h| h.start_period)
        .max(Duration::from_secs(1));
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Renderer {
    /// One pass over every instance with config files; the next time something is due.
    pub(super) async fn pass(
        &mut self,
        shared: &Shared,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let store = shared.store();
        let servers: HashMap<(String, String), Spec> = store
            .list_servers()
            .await?
            .into_iter()
            .filter(|s| !s.spec.configs.is_empty())
            .map(|s| ((s.spec.app.clone(), s.spec.server.clone()), s.spec))
            .collect();
        if servers.is_empty() {
            self.planner.retain(|_| false);
            self.memory.retain(|_| false);
            return Ok(None);
        }
        let instances: Vec<InstanceRow> = store
            .all_instances()
            .await?
            .into_iter()
            .filter(|i| servers.contains_key(&(i.app.clone(), i.server.clone())))
            .collect();
        let exists: HashSet<InstanceKey> = instances
            .iter()
            .map(|i| (i.app.clone(), i.server.clone(), i.node.clone()))
            .collect();
        self.planner.retain(|k| exists.contains(k));
        self.memory.retain(|k| exists.contains(k));
        if instances.is_empty() {
            return Ok(None);
        }
        let nodes: HashMap<String, (String, String, bool)> = store
            .list_nodes()
            .await?
            .into_iter()
            .map(|n| {
                let up = n.state == crate::store::NodeState::Up;
                (n.name, (n.address, n.data_dir, up))
            })
            .collect();
        let ports = store.all_ports().await?;
        let delivered = store.all_configs().await?;
        // A secret that does not open stops only the files that read it (they keep their
        // last version); the error names it, once.
        let secrets = store.all_secrets().await.unwrap_or_else(|e| {
            self.log_once(&Default::default(), &e.to_string());
            Default::default()
        });
        let no_secrets = crate::secrets::ServerSecrets::default();
        let mut absent = store.rollout_absences().await?;
        absent.extend(self.planner.restarting_now().cloned());
        let (live, frozen) = self.memory.tables(
            &shared.discovery().table(),
            &shared.discovery().instances(),
            &absent,
        );
        let grace = shared.config().node_timeout / 2;
        let in_grace = self
            .leading_since
            .is_some_and(|since| now - since < grace.as_millis() as i64);
        let mut packages = HashMap::new();
        let mut due: Option<i64> = None;
        let mut soon = |at: i64| due = Some(due.map_or(at, |d: i64| d.min(at)));
        let reported = shared.discovery().instances();
        let mut waiting: HashMap<(String, String), Vec<(u32, Change)>> = HashMap::new();
        let mut busy: HashMap<(String, String), usize> = HashMap::new();
        for i in &instances {
            let server_key = (i.app.clone(), i.server.clone());
            let Some(spec) = servers.get(&server_key) else {
                continue;
            };
            let key: InstanceKey = (i.app.clone(), i.server.clone(), i.node.clone());
            if self.planner.in_flight(
                &key,
                observed(i, spec),
                i.config_restart_at_ms,
                limit_ms(spec),
                now,
            ) {
                *busy.entry(server_key.clone()).or_default() += 1;
                soon(now + 500);
            }
            let (ip, data_dir, node_up) = nodes.get(&i.node).cloned().unwrap_or_default();
            let placement = Placement {
                node: &i.node,
                node_ip: &ip,
                data_dir: &data_dir,
                ordinal: u32::try_from(i.ordinal).unwrap_or(0),
                ports: ports.get(&key).cloned().unwrap_or_default(),
                version: &i.desired_version,
                secrets: secrets
                    .get(&server_key)
                    .unwrap_or(&no_secrets)
                    .resolve(&i.node, u32::try_from(i.ordinal).unwrap_or(0)),
            };
            let ctx = instance::context(spec, &placement);
            let Some(files) = delivered.get(&key) else {
                // Never delivered (its node has not asked yet): the session renders
                // them when it sends the desired state.
                continue;
            };
            let package = if i.desired_version.is_empty() {
                None
            } else {
                let pkg_key = (i.app.clone(), i.server.clone(), i.desired_version.clone());
                if !packages.contains_key(&pkg_key) {
                    let p =
                        crate::desired::package_ref(store, &i.app, &i.server, &i.desired_version)
                            .await
                            .ok()
                            .flatten();
                    packages.insert(pkg_key.clone(), p);
                }
                packages.get(&pkg_key).cloned().flatten()
            };
            let env = match instance::env(spec, &ctx) {
                Ok(env) => env,
                Err(f) => {
                    self.log_once(&key, &f.to_string());
                    continue;
                }
            };
            let fingerprint =
                corral_proto::spec_hash(&instance::wire_spec(spec, &placement.ports, package, env));
            if files.values().any(|d| d.fingerprint != fingerprint) {
                // A new spec is on its way to the agent: the session renders the files
                // with it (the agent restarts for the spec anyway).
                continue;
            }
            let mut target = files.clone();
            target.retain(|name, _| spec.configs.iter().any(|c| &c.name == name));
            let mut changed = Vec::new();
            for c in &spec.configs {
                let restarts = c.on_change == "restart";
                let tables = if restarts { &frozen } else { &live };
                let rendered = match instance::file(spec, &c.name, &ctx, tables) {
                    Ok(r) => r,
                    Err(f) => {
                        self.log_once(&key, &f.to_string());
                        continue;
                    }
                };
                if in_grace && !rendered.endpoints.is_empty() {
                    // Sessions are still coming back to this leader: what endpoints()
                    // lists now is not the fleet yet.
                    soon(self.leading_since.unwrap_or(now) + grace.as_millis() as i64);
                    continue;
                }
                let file_key = (key.clone(), c.name.clone());
                let old = files.get(&c.name).map(|d| d.content.as_str());
                match self.planner.settle(
                    &file_key,
                    &rendered.content,
                    old,
                    (c.wait_min, c.wait_max),
                    now,
                ) {
                    Settle::Same => {}
                    Settle::Wait(at) => soon(at),
                    Settle::Deliver(content) => {
                        target.insert(
                            c.name.clone(),
                            Delivered {
                                content,
                                fingerprint: fingerprint.clone(),
                                secret: !rendered.secrets.is_empty(),
                            },
                        );
                        changed.push((c.name.clone(), restarts));
                    }
                }
            }
            if changed.is_empty() && target.len() == files.len() {
                continue;
            }
            // The state as last reported (discovery has it from memory at once; the row
            // follows with the writer's next round, which batches a storm's reports).
            let state = reported
                .get(&format!("{}.{}", i.app, i.server))
                .and_then(|entries| entries.iter().find(|e| e.node == i.node))
                .map_or(i.state.as_str(), |e| e.state.as_str());
            let running =
                i.desired == "running" && node_up && matches!(state, "running" | "starting");
            let restarting: Vec<String> = changed
                .iter()
                .filter(|(_, r)| *r)
                .map(|(n, _)| n.clone())
                .collect();
            let mut without_restart = target.clone();
            for name in &restarting {
                match files.get(name) {
                    Some(old) => without_restart.insert(name.clone(), old.clone()),
                    None => without_restart.remove(name),
                };
            }
            let change = Change {
                key: key.clone(),
                ordinal: placement.ordinal,
                files: target,
                restarting,
                without_restart,
                old: files.clone(),
                limit_ms: limit_ms(spec),
                restarts: i.restarts,
            };
            if change.restarting.is_empty() || !running {
                self.deliver(shared, &change.key, &change.files, None, now)
                    .await?;
            } else if !i.config_hold.is_empty() {
                if change.without_restart != *files {
                    self.deliver(shared, &change.key, &change.without_restart, None, now)
                        .await?;
                }
            } else {
                waiting
                    .entry(server_key)
                    .or_default()
                    .push((change.ordinal, change));
            }
        }
        for (server_key, changes) in waiting {
            let Some(spec) = servers.get(&server_key) else {
                continue;
            };
            let busy = busy.get(&server_key).copied().unwrap_or(0);
            let keys: Vec<(u32, usize)> = changes
                .iter()
                .enumerate()
                .map(|(n, (ordinal, _))| (*ordinal, n))
                .collect();
            for n in next_batch(&keys, spec.config_restart.batch, busy) {
                let change = &changes[n].1;
                if !self
                    .planner
                    .may_restart(&change.key, spec.config_restart.max_per_minute, now)
                {
                    self.flapping(shared, spec, change, now).await?;
                    continue;
                }
                let flight = InFlight {
                    at_ms: now,
                    restarts_before: change.restarts,
                    limit_ms: change.limit_ms,
                };
                if self
                    .deliver(shared, &change.key, &change.files, Some(now), now)
                    .await?
                {
                    self.planner.restarting(&change.key, flight);
                    soon(now + 200);
                }
            }
        }
        Ok(due)
    }
}
