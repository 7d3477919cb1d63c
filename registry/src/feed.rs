//! Keeping replicas in step. Several registries can serve one fleet from one MySQL
//! database; each keeps caches in memory (open sessions, the discovery table). What one
//! of them changes it publishes on its own bus ([`crate::bus`]): its sessions and
//! discovery hear of it at once, and [`record`] appends it to the `changes` table; every
//! replica follows that table ([`follow`]) and publishes what the others wrote on its own
//! bus, so an agent hears of a change within a poll interval whichever replica it is
//! connected to. Each row names the replica that wrote it, and a replica skips its own
//! rows: its bus carried them when it made the change.
//!
//! A secret put or removed is recorded as a change of the desired state of the nodes
//! that run the server's instances: node names, never a value. The other replicas then
//! send those nodes their desired state again, reading values from the database, and
//! the config renderer (on whichever replica holds its lease) re-reads the secrets on
//! every pass and delivers the files that changed per their `on_change`.

use std::time::Duration;

use tracing::warn;

use tokio::sync::broadcast;

use crate::bus::{Change, Origin, Published};
use crate::state::Shared;
use crate::store::now_ms;

/// How often a replica reads the feed.
pub const POLL: Duration = Duration::from_millis(200);
/// How long rows stay in the feed.
const KEEP: Duration = Duration::from_secs(600);

/// Records in the feed, until shutdown, the changes this replica publishes on its bus,
/// for the other replicas. Changes that arrive together are written in one batch.
pub async fn record(shared: std::sync::Arc<Shared>) {
    let mut rx = shared.subscribe();
    loop {
        let first = tokio::select! {
            () = shared.shutdown().cancelled() => return,
            p = rx.recv() => p,
        };
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(Ok(more));
        }
        let mut nodes: Vec<String> = Vec::new();
        let mut discovery = false;
        for p in batch {
            match p {
                Ok(Published {
                    origin: Origin::Elsewhere,
                    ..
                }) => {}
                Ok(Published {
                    change: Change::Desired { nodes: n, .. },
                    ..
                }) => nodes.extend(n.iter().cloned()),
                Ok(Published {
                    change: Change::Discovery | Change::Reported,
                    ..
                }) => discovery = true,
                // Fell behind: the other replicas must recompute and resend everything.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    discovery = true;
                    nodes.extend(shared.sessions().live_nodes());
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
        nodes.sort();
        nodes.dedup();
        let me = shared.replica_id();
        let now = now_ms();
        let mut result = Ok(());
        if !nodes.is_empty() {
            result = shared
                .store()
                .record_changes(&nodes, "desired", me, now)
                .await;
        }
        if discovery && result.is_ok() {
            result = shared
                .store()
                .record_changes(&[], "discovery", me, now)
                .await;
        }
        if let Err(e) = result {
            warn!(cause = %e, "cannot record a change for the other replicas");
        }
    }
}

/// Follows the feed until shutdown.
pub async fn follow(shared: std::sync::Arc<Shared>) {
    let mut last = match shared.store().last_change_id().await {
        Ok(id) => id,
        Err(e) => {
            warn!(cause = %e, "cannot read the change feed; following from the start");
            0
        }
    };
    let mut trimmed = std::time::Instant::now();
    loop {
        tokio::select! {
            () = shared.shutdown().cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        let changes = match shared.store().changes_after(last).await {
            Ok(c) => c,
            Err(e) => {
                warn!(cause = %e, "cannot read the change feed");
                continue;
            }
        };
        if let Some(c) = changes.last() {
            last = c.id;
        }
        if let Some(nodes) = written_by_others(&changes, shared.replica_id()) {
            shared.changed_elsewhere(if nodes.is_empty() {
                crate::bus::Change::Discovery
            } else {
                crate::bus::Change::Desired {
                    nodes: nodes.into(),
                    refresh: true,
                }
            });
        }
        if trimmed.elapsed() > Duration::from_secs(60) {
            trimmed = std::time::Instant::now();
            if let Err(e) = shared
                .store()
                .trim_changes(now_ms() - KEEP.as_millis() as i64)
                .await
            {
                warn!(cause = %e, "cannot trim the change feed");
            }
        }
    }
}

/// The nodes named by the rows another replica wrote, or None when every row is this
/// replica's own (nothing to do: it acted when it wrote them).
fn written_by_others(changes: &[crate::store::Change], me: &str) -> Option<Vec<String>> {
    let mut theirs = changes.iter().filter(|c| c.replica != me).peekable();
    theirs.peek()?;
    Some(
        theirs
            .filter(|c| !c.node.is_empty())
            .map(|c| c.node.clone())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Change;

    fn change(id: i64, node: &str, replica: &str) -> Change {
        Change {
            id,
            node: node.into(),
            kind: if node.is_empty() {
                "discovery"
            } else {
                "desired"
            }
            .into(),
            replica: replica.into(),
        }
    }

    #[test]
    fn a_replica_skips_its_own_rows() {
        let mine = [change(1, "node-a", "me"), change(2, "", "me")];
        assert_eq!(written_by_others(&mine, "me"), None);
        assert_eq!(written_by_others(&[], "me"), None);
        let mixed = [
            change(1, "node-a", "me"),
            change(2, "node-b", "other"),
            change(3, "", "other"),
            // Rows from before replicas were named are everyone's.
            change(4, "node-c", ""),
        ];
        assert_eq!(
            written_by_others(&mixed, "me"),
            Some(vec!["node-b".to_string(), "node-c".to_string()])
        );
        // A discovery-only change of another replica: no node, but a recomputation.
        assert_eq!(
            written_by_others(&[change(5, "", "other")], "me"),
            Some(vec![])
        );
    }
}
