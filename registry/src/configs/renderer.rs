//! The config renderer: one replica at a time (a lease) follows the fleet's tables,
//! renders every config file of every instance, and delivers what changed — at once for
//! files that do not restart their instance, in rolling batches for those that do
//! ([`super::plan`]), with planned absences frozen ([`super::freeze`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::freeze::Memory;
use super::pass::Change;
use super::plan::{InstanceKey, Planner};
use crate::spec::Spec;
use crate::state::Shared;
use crate::store::{Delivered, EventRow, StoreError, now_ms};

const LEASE_NAME: &str = "config-renderer";
const LEASE: Duration = Duration::from_secs(5);
/// Passes are at least this far apart: a storm of reports gives a pass per interval.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// With nothing due, a pass still runs this often (a template applied elsewhere).
const IDLE: Duration = Duration::from_secs(1);

/// What a renderer remembers between passes.
pub(super) struct Renderer {
    pub(super) planner: Planner,
    pub(super) memory: Memory,
    /// When this replica took the lease; None while another holds it.
    pub(super) leading_since: Option<i64>,
    /// Errors already logged, so a broken template is logged once, not every pass.
    pub(super) logged: HashSet<String>,
}

/// Runs until shutdown: takes the lease when free and renders while it holds it.
pub async fn run(shared: Arc<Shared>) {
    let mut tables = shared.discovery().subscribe_instances();
    let mut recomputed = shared.discovery().subscribe_recomputes();
    let mut r = Renderer {
        planner: Planner::default(),
        memory: Memory::default(),
        leading_since: None,
        logged: HashSet::new(),
    };
    let mut wake = Instant::now();
    let mut renewed = Instant::now() - LEASE;
    loop {
        tokio::select! {
            () = shared.shutdown().cancelled() => break,
            _ = tables.changed() => {}
            _ = recomputed.changed() => {}
            () = tokio::time::sleep_until(wake) => {}
        }
        tokio::time::sleep(MIN_INTERVAL).await;
        let now = now_ms();
        if renewed.elapsed() >= LEASE / 5 {
            renewed = Instant::now();
            let held = shared
                .store()
                .lease(
                    LEASE_NAME,
                    shared.replica_id(),
                    now,
                    now + LEASE.as_millis() as i64,
                )
                .await;
            match held {
                Ok(true) => {
                    if r.leading_since.is_none() {
                        info!(replica = %shared.replica_id(), "rendering configs for the fleet");
                        r.leading_since = Some(now);
                    }
                }
                Ok(false) => r.leading_since = None,
                Err(e) => {
                    warn!(cause = %e, "cannot renew the config renderer's lease");
                    r.leading_since = None;
                }
            }
        }
        wake = Instant::now() + IDLE;
        if r.leading_since.is_none() {
            continue;
        }
        match r.pass(&shared, now).await {
            Ok(Some(at)) => {
                let delay = Duration::from_millis(u64::try_from(at - now).unwrap_or(0));
                wake = wake.min(Instant::now() + delay);
            }
            Ok(None) => {}
            Err(e) => warn!(cause = %e, "config render pass failed; retrying"),
        }
    }
    if r.leading_since.is_some() {
        let _ = shared
            .store()
            .release_lease(LEASE_NAME, shared.replica_id())
            .await;
    }
}

impl Renderer {
    /// Writes an instance's new files and tells its node; false when it is gone.
    pub(super) async fn deliver(
        &mut self,
        shared: &Shared,
        key: &InstanceKey,
        files: &BTreeMap<String, Delivered>,
        restart_at: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (app, server, node) = key;
        if !shared
            .store()
            .deliver_configs((app, server, node), files, restart_at, now)
            .await?
        {
            return Ok(false);
        }
        for name in files.keys() {
            self.planner.delivered(&(key.clone(), name.clone()));
        }
        info!(
            instance = %format!("{app}.{server}@{node}"),
            files = ?files.keys().collect::<Vec<_>>(),
            restart = restart_at.is_some(),
            "config delivered"
        );
        shared.resend(std::slice::from_ref(node));
        Ok(true)
    }

    /// Config changes restarted the instance too often: hold them, keep its last files,
    /// say so in an event.
    pub(super) async fn flapping(
        &mut self,
        shared: &Shared,
        spec: &Spec,
        change: &Change,
        now: i64,
    ) -> Result<(), StoreError> {
        let (app, server, node) = &change.key;
        let names = change.restarting.join(", ");
        warn!(instance = %format!("{app}.{server}@{node}"), config = %names, "config flapping: holding its changes");
        shared
            .store()
            .hold_config((app, server, node), &names)
            .await?;
        crate::actual::event(
            shared,
            EventRow {
                id: 0,
                at_ms: now,
                app: app.clone(),
                server: server.clone(),
                node: node.clone(),
                kind: "config".into(),
                from: String::new(),
                to: "config_flapping".into(),
                reason: format!(
                    "config {names} changed and restarted the instance more than {} times within a minute; \
                     its changes are held and the last files kept until the next apply or `registry server restart`",
                    spec.config_restart.max_per_minute
                ),
            },
        );
        // Files that do not restart it still follow.
        if change.old != change.without_restart {
            self.deliver(shared, &change.key, &change.without_restart, None, now)
                .await?;
        }
        Ok(())
    }

    pub(super) fn log_once(&mut self, key: &InstanceKey, error: &str) {
        let line = format!("{}.{}@{}: {error}", key.0, key.1, key.2);
        if self.logged.insert(line.clone()) {
            if self.logged.len() > 10_000 {
                self.logged.clear();
            }
            warn!(cause = %line, "cannot render a config; the instance keeps its last files");
        }
    }
}
