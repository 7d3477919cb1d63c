//! Keeping replicas in step. Several registries can serve one fleet from one MySQL
//! database; each keeps caches in memory (open sessions, the discovery table). When one
//! of them changes something, it tells its own sessions at once and appends a row to the
//! `changes` table; every replica follows that table and tells its sessions too, so an
//! agent hears of a change within a poll interval whichever replica it is connected to.
//! Each row names the replica that wrote it, and a replica skips its own rows: it told
//! its sessions and its discovery cache when it made the change.

use std::time::Duration;

use tracing::warn;

use crate::server::Shared;
use crate::store::{Change, now_ms};

/// How often a replica reads the feed.
pub const POLL: Duration = Duration::from_millis(200);
/// How long rows stay in the feed.
const KEEP: Duration = Duration::from_secs(600);

impl Shared {
    /// The desired state of these nodes changed: resend it to their sessions, here
    /// and on every other replica. Discovery is recomputed first, so files rendered for
    /// the new state list the fleet as it now is.
    pub async fn changed(&self, nodes: &[String]) {
        if let Err(e) = self.refresh_discovery().await {
            warn!(cause = %e, "cannot recompute discovery before sending a change");
        }
        self.resend(nodes).await;
    }

    /// Recomputes discovery from the database now, with the reports not written yet on
    /// top of what it reads.
    pub async fn refresh_discovery(&self) -> Result<(), crate::store::StoreError> {
        self.metrics.discovery_recomputes.inc();
        self.discovery
            .refresh(&self.store, || self.actual.unwritten())
            .await
    }

    /// Only what these nodes are sent changed (new config files), nothing discovery
    /// depends on: resend their desired state here and on every other replica.
    pub async fn resend(&self, nodes: &[String]) {
        self.sessions.notify(nodes);
        if let Err(e) = self
            .store
            .record_changes(nodes, "desired", &self.replica_id, now_ms())
            .await
        {
            warn!(cause = %e, "cannot record a change for the other replicas");
        }
    }

    /// Something discovery depends on changed (an instance's state or health, a node
    /// up or down): recompute here and on every other replica.
    pub async fn discovery_changed(&self) {
        self.discovery.poke();
        if let Err(e) = self
            .store
            .record_changes(&[], "discovery", &self.replica_id, now_ms())
            .await
        {
            warn!(cause = %e, "cannot record a change for the other replicas");
        }
    }
}

/// Follows the feed until shutdown.
pub async fn follow(shared: std::sync::Arc<Shared>) {
    let mut last = match shared.store.last_change_id().await {
        Ok(id) => id,
        Err(e) => {
            warn!(cause = %e, "cannot read the change feed; following from the start");
            0
        }
    };
    let mut trimmed = std::time::Instant::now();
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        let changes = match shared.store.changes_after(last).await {
            Ok(c) => c,
            Err(e) => {
                warn!(cause = %e, "cannot read the change feed");
                continue;
            }
        };
        if let Some(c) = changes.last() {
            last = c.id;
        }
        if let Some(nodes) = written_by_others(&changes, &shared.replica_id) {
            if nodes.is_empty() {
                shared.discovery.poke();
            } else {
                if let Err(e) = shared.refresh_discovery().await {
                    warn!(cause = %e, "cannot recompute discovery before sending a change");
                }
                shared.sessions.notify(&nodes);
            }
        }
        if trimmed.elapsed() > Duration::from_secs(60) {
            trimmed = std::time::Instant::now();
            if let Err(e) = shared
                .store
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
fn written_by_others(changes: &[Change], me: &str) -> Option<Vec<String>> {
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
