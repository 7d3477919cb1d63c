//! Drives one rollout: every step reads the rollout and the instances' reported state
//! from the database and moves each instance along:
//!
//! ```text
//! pending -> downloading -> ready          (every target downloads ahead of time)
//! ready -> switching -> starting -> healthy (batch by batch)
//! any failure in a batch -> the batch is rolled back, the rollout fails
//! ```
//!
//! Nothing lives only in memory, so a registry that restarts mid-rollout (or another
//! replica, once this one's lease runs out) resumes it where it was.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::state::Shared;
use crate::store::{InstanceRow, RolloutInstanceRow, RolloutRow, StoreError, now_ms};

/// How long a replica's claim on a rollout lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(5);
/// How long an instance is out of discovery before it is stopped, so clients watching
/// the name stop sending to it first.
const DRAIN: Duration = Duration::from_millis(500);
const STEP: Duration = Duration::from_millis(200);

pub fn is_final(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "interrupted")
}

/// Starts driving rollout `id` on this replica, unless it already does.
pub fn spawn(shared: Arc<Shared>, id: i64) {
    if !shared.drive_rollout(id) {
        return;
    }
    let task_shared = shared.clone();
    shared.spawn(async move {
        let shared = task_shared;
        run(&shared, id).await;
        shared.rollout_driven(id);
    });
}

async fn run(shared: &Shared, id: i64) {
    loop {
        tokio::select! {
            () = shared.shutdown().cancelled() => return,
            () = tokio::time::sleep(STEP) => {}
        }
        let now = now_ms();
        match shared
            .store()
            .lease_rollout(id, shared.replica_id(), now, now + LEASE.as_millis() as i64)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                warn!(rollout = id, cause = %e, "cannot renew the rollout's lease");
                continue;
            }
        }
        match step(shared, id, now).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => warn!(rollout = id, cause = %e, "rollout step failed; retrying"),
        }
    }
}

fn describe_failure(a: &InstanceRow) -> String {
    let mut parts = vec![a.state.clone()];
    if !a.last_exit.is_empty() {
        parts.push(format!("last exit {}", a.last_exit));
    }
    if !a.last_error.is_empty() {
        parts.push(a.last_error.clone());
    }
    parts.join(", ")
}

/// One step; true when the rollout has ended.
async fn step(shared: &Shared, id: i64, now: i64) -> Result<bool, StoreError> {
    let r = shared.store().get_rollout(id).await?;
    if is_final(&r.state) {
        return Ok(true);
    }
    let mut insts = shared.store().rollout_instances(id).await?;
    let actual: HashMap<String, InstanceRow> = shared
        .store()
        .instances_of(&r.app, &r.server)
        .await?
        .into_iter()
        .map(|i| (i.node.clone(), i))
        .collect();
    if r.state == "rolling-back" {
        return rolling_back(shared, &r, &insts, &actual, now).await;
    }
    let name = format!("{}.{}", r.app, r.server);

    // Every target downloads the new release ahead of time.
    let mut all_ready = true;
    for i in insts
        .iter_mut()
        .filter(|i| i.phase == "pending" || i.phase == "downloading")
    {
        let before = i.clone();
        let a = actual.get(&i.node);
        match a
            .filter(|a| a.install_version == r.to_version)
            .map(|a| a.install_state.as_str())
        {
            Some("ready") => {
                i.phase = "ready".into();
                i.percent = 100;
            }
            Some("failed") => {
                let error = a.map(|a| a.install_error.clone()).unwrap_or_default();
                let msg = format!(
                    "instance {name}@{}: cannot install {}: {error}",
                    i.node, r.to_version
                );
                i.phase = "failed".into();
                i.error = error;
                shared.store().update_rollout_instance(id, i).await?;
                return fail(shared, &r, msg, &[], now).await;
            }
            Some(_) => {
                i.phase = "downloading".into();
                i.percent = a.map_or(0, |a| a.install_percent);
            }
            None => {}
        }
        if i.phase != "ready" {
            all_ready = false;
            if now - r.created_at_ms > r.deadline_ms {
                let msg = format!(
                    "instance {name}@{}: did not download {} within {}ms (is node {} up?)",
                    i.node, r.to_version, r.deadline_ms, i.node
                );
                return fail(shared, &r, msg, &[], now).await;
            }
        }
        if *i != before {
            shared.store().update_rollout_instance(id, i).await?;
        }
    }
    if !all_ready {
        return Ok(false);
    }

    let Some(batch) = insts
        .iter()
        .filter(|i| i.phase != "healthy")
        .map(|i| i.batch)
        .min()
    else {
        shared
            .store()
            .set_server_package(&r.app, &r.server, &r.to_version, id)
            .await?;
        shared
            .store()
            .set_rollout_state(id, "succeeded", "", now)
            .await?;
        shared.changed(&insts.iter().map(|i| i.node.clone()).collect::<Vec<_>>());
        info!(rollout = id, server = %name, version = %r.to_version, "rollout succeeded");
        return Ok(true);
    };

    let mut switch = Vec::new();
    let batch_rows: Vec<RolloutInstanceRow> =
        insts.iter().filter(|x| x.batch == batch).cloned().collect();
    for i in insts.iter_mut().filter(|i| i.batch == batch) {
        let before = i.clone();
        match i.phase.as_str() {
            "ready" => {
                i.phase = "draining".into();
                i.switched_at_ms = now;
            }
            "draining" if now - i.switched_at_ms >= DRAIN.as_millis() as i64 => {
                i.phase = "switching".into();
                i.switched_at_ms = now;
                switch.push(i.node.clone());
            }
            "switching" | "starting" => {
                if let Some(failure) = judge(i, actual.get(&i.node), &r, now) {
                    i.phase = "failed".into();
                    i.error = failure.clone();
                    shared.store().update_rollout_instance(id, i).await?;
                    let mut batch_nodes = batch_rows.clone();
                    for b in batch_nodes.iter_mut().filter(|b| b.node == i.node) {
                        *b = i.clone();
                    }
                    let msg = format!(
                        "instance {name}@{} failed on {}: {failure}",
                        i.node, r.to_version
                    );
                    return fail(shared, &r, msg, &batch_nodes, now).await;
                }
            }
            _ => {}
        }
        if *i != before {
            shared.store().update_rollout_instance(id, i).await?;
            if i.phase != before.phase {
                shared.discovery_changed();
            }
        }
    }
    if !switch.is_empty() {
        shared
            .store()
            .set_desired_version(&r.app, &r.server, &switch, &r.to_version, false)
            .await?;
        shared.changed(&switch);
        info!(rollout = id, server = %name, nodes = ?switch, version = %r.to_version, "switching");
    }
    Ok(false)
}

/// Moves a switched instance towards healthy; the reason when it failed.
fn judge(
    i: &mut RolloutInstanceRow,
    a: Option<&InstanceRow>,
    r: &RolloutRow,
    now: i64,
) -> Option<String> {
    let a = a?;
    let healthy = a.health.is_empty() || a.health == "healthy";
    let on_new = a.version == r.to_version && a.state == "running" && healthy;
    let reported_since = a.reported_at_ms >= i.switched_at_ms;
    if on_new {
        if i.healthy_since_ms == 0 {
            i.healthy_since_ms = now;
            i.phase = "starting".into();
        } else if now - i.healthy_since_ms >= r.min_healthy_ms {
            i.phase = "healthy".into();
            i.percent = 100;
        }
        return None;
    }
    // The release could not be installed at the switch: the agent keeps (or starts
    // again) the previous one and says why; no need to wait for the deadline.
    if reported_since && a.install_version == r.to_version && a.install_state == "failed" {
        return Some(format!(
            "cannot install {}: {}",
            r.to_version, a.install_error
        ));
    }
    if i.healthy_since_ms != 0 {
        return Some(format!(
            "stopped running within {}ms of starting: {}",
            r.min_healthy_ms,
            describe_failure(a)
        ));
    }
    if reported_since
        && matches!(
            a.state.as_str(),
            "backoff" | "crash-looping" | "failed" | "exited"
        )
    {
        return Some(describe_failure(a));
    }
    if now - i.switched_at_ms > r.deadline_ms {
        return Some(format!(
            "not running on {} within {}ms: {}",
            r.to_version,
            r.deadline_ms,
            describe_failure(a)
        ));
    }
    None
}

/// Fails the rollout; the given (switched) instances go back to their previous release.
async fn fail(
    shared: &Shared,
    r: &RolloutRow,
    msg: String,
    batch: &[RolloutInstanceRow],
    now: i64,
) -> Result<bool, StoreError> {
    warn!(rollout = r.id, cause = %msg, "rollout failed");
    shared.store().clear_prefetch(&r.app, &r.server).await?;
    let switched: Vec<&RolloutInstanceRow> =
        batch.iter().filter(|i| i.switched_at_ms > 0).collect();
    if switched.is_empty() {
        shared
            .store()
            .set_rollout_state(r.id, "failed", &msg, now)
            .await?;
        let nodes: Vec<String> = shared
            .store()
            .rollout_instances(r.id)
            .await?
            .into_iter()
            .map(|i| i.node)
            .collect();
        shared.changed(&nodes);
        return Ok(true);
    }
    let mut nodes = Vec::new();
    for i in switched {
        shared
            .store()
            .set_desired_version(
                &r.app,
                &r.server,
                std::slice::from_ref(&i.node),
                &i.from_version,
                false,
            )
            .await?;
        let mut back = i.clone();
        if back.phase != "failed" {
            back.phase = "rolled-back".into();
        }
        back.switched_at_ms = now;
        shared.store().update_rollout_instance(r.id, &back).await?;
        nodes.push(i.node.clone());
    }
    shared
        .store()
        .set_rollout_state(r.id, "rolling-back", &msg, now)
        .await?;
    shared.changed(&nodes);
    Ok(false)
}

/// Waits until the rolled-back instances run their previous release again.
async fn rolling_back(
    shared: &Shared,
    r: &RolloutRow,
    insts: &[RolloutInstanceRow],
    actual: &HashMap<String, InstanceRow>,
    now: i64,
) -> Result<bool, StoreError> {
    let back: Vec<&RolloutInstanceRow> = insts
        .iter()
        .filter(|i| i.phase == "rolled-back" || i.phase == "failed")
        .filter(|i| i.switched_at_ms > 0)
        .collect();
    let done = back.iter().all(|i| {
        actual
            .get(&i.node)
            .is_some_and(|a| a.state == "running" && a.version == i.from_version)
    });
    if done || now - r.updated_at_ms > r.deadline_ms {
        let error = if done {
            r.error.clone()
        } else {
            format!(
                "{}; rolling back did not finish within {}ms",
                r.error, r.deadline_ms
            )
        };
        shared
            .store()
            .set_rollout_state(r.id, "failed", &error, now)
            .await?;
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout() -> RolloutRow {
        RolloutRow {
            id: 1,
            app: "demo".into(),
            server: "app".into(),
            from_version: "1.0.0".into(),
            to_version: "2.0.0".into(),
            state: "running".into(),
            error: String::new(),
            batch: 1,
            min_healthy_ms: 1000,
            deadline_ms: 60_000,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    fn switched(at: i64) -> RolloutInstanceRow {
        RolloutInstanceRow {
            node: "node-a".into(),
            batch: 0,
            from_version: "1.0.0".into(),
            phase: "switching".into(),
            percent: 100,
            error: String::new(),
            switched_at_ms: at,
            healthy_since_ms: 0,
        }
    }

    /// What the agent reports: state, version, install state, when.
    fn actual(state: &str, version: &str, install: &str, reported_at_ms: i64) -> InstanceRow {
        InstanceRow {
            app: "demo".into(),
            server: "app".into(),
            node: "node-a".into(),
            desired: "running".into(),
            restart_counter: 0,
            state: state.into(),
            pid: 42,
            restarts: 0,
            started_at_ms: 0,
            last_exit: String::new(),
            last_error: String::new(),
            version: version.into(),
            reported_at_ms,
            desired_version: "2.0.0".into(),
            prefetch_version: String::new(),
            install_version: "2.0.0".into(),
            install_state: install.into(),
            install_percent: 0,
            install_error: if install == "failed" {
                "package 2.0.0: sha256 mismatch".into()
            } else {
                String::new()
            },
            health: String::new(),
            health_error: String::new(),
            ..InstanceRow::default()
        }
    }

    #[test]
    fn judging_a_switched_instance() {
        let r = rollout();
        #[rustfmt::skip]
        let table: Vec<(&str, InstanceRow, i64, Option<&str>)> = vec![
            ("still on the old release, in time", actual("running", "1.0.0", "ready", 1500), 2000, None),
            ("the new release could not be installed: at once, with the reason",
             actual("running", "1.0.0", "failed", 1500), 2000, Some("cannot install 2.0.0: package 2.0.0: sha256 mismatch")),
            ("a failure reported before the switch is not this one's",
             actual("running", "1.0.0", "failed", 500), 2000, None),
            ("the new release crashes", actual("backoff", "2.0.0", "ready", 1500), 2000, Some("backoff")),
            ("too late", actual("running", "1.0.0", "ready", 1500), 70_000, Some("not running on 2.0.0 within 60000ms: running")),
        ];
        for (name, a, now, want) in table {
            let mut i = switched(1000);
            let got = judge(&mut i, Some(&a), &r, now);
            assert_eq!(got.as_deref(), want, "{name}");
        }
        // Running the new release starts the min-healthy clock.
        let mut i = switched(1000);
        assert_eq!(
            judge(
                &mut i,
                Some(&actual("running", "2.0.0", "ready", 1500)),
                &r,
                2000
            ),
            None
        );
        assert_eq!((i.phase.as_str(), i.healthy_since_ms), ("starting", 2000));
    }
}
