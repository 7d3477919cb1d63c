//! Node liveness: heartbeats are kept in memory by the sessions and written in batches;
//! a node whose heartbeats no replica has written for the node timeout is swept `down`.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::state::Shared;
use crate::store::now_ms;

/// Runs the liveness loops until shutdown.
pub async fn run(shared: Arc<Shared>) {
    tokio::join!(flush_heartbeats(shared.clone()), sweep_stale_nodes(shared));
}

/// Writes the heartbeats of the last interval in one batch (each node's at most once per
/// refresh period, [`crate::sessions::refresh_ms`]); once more at shutdown. While
/// the database is unreachable they wait (a heartbeat is pending until written), and are
/// written as soon as it is back.
async fn flush_heartbeats(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config().flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut availability = shared.outage().subscribe();
    let refresh = crate::sessions::refresh_ms(
        shared.config().heartbeat_interval,
        shared.config().node_timeout,
    );
    loop {
        let stop = tokio::select! {
            () = shared.shutdown().cancelled() => true,
            _ = tick.tick() => false,
            Ok(()) = availability.changed() => false,
        };
        if shared.outage().reachable() {
            let rows = shared
                .sessions()
                .pending_heartbeats(if stop { 0 } else { refresh });
            match shared.store().write_heartbeats(&rows).await {
                Ok(revived) => {
                    shared.sessions().written(&rows);
                    if !rows.is_empty() {
                        shared.outage().write_succeeded();
                    }
                    if !revived.is_empty() {
                        for node in &revived {
                            info!(%node, "node up again: its heartbeats reached the database");
                        }
                        shared.discovery_changed();
                    }
                }
                Err(err) => {
                    warn!(cause = %err, nodes = rows.len(), "could not write heartbeats; they wait");
                    shared.outage().write_failed(&err);
                }
            }
        }
        if stop {
            return;
        }
    }
}

/// Marks `down` the nodes whose sessions no replica has kept alive: their last-seen time
/// is older than the node timeout plus two flush intervals. Nodes with a session open here
/// are alive. While the database is unreachable, and for two flush intervals after it is
/// back, it waits: heartbeats could not be written meanwhile.
async fn sweep_stale_nodes(shared: Arc<Shared>) {
    let grace = shared.config().node_timeout + 2 * shared.config().flush_interval;
    let settle = 2 * shared.config().flush_interval;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shared.shutdown().cancelled() => return,
            _ = tick.tick() => {}
        }
        if shared.outage().up_for().is_none_or(|up| up < settle) {
            continue;
        }
        let cutoff = now_ms() - grace.as_millis() as i64;
        let alive = shared.sessions().live_nodes();
        match shared.store().sweep_stale_nodes(cutoff, &alive).await {
            Ok(names) => {
                if !names.is_empty() {
                    shared.discovery_changed();
                }
                for node in names {
                    info!(%node, "node down: no heartbeat reached any registry");
                }
            }
            Err(err) => warn!(cause = %err, "could not sweep stale nodes"),
        }
    }
}
