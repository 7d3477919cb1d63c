//! `Agent.Download`: a package to an agent, in chunks, from any offset.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_proto::v1::{DownloadChunk, DownloadRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::server::Shared;
use crate::store::StoreError;

type Stream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<DownloadChunk, Status>> + Send>>;

/// Checks who asks: a node with its identity, for a server assigned to it.
async fn authorize(shared: &Shared, req: &DownloadRequest) -> Result<(), Status> {
    let node = shared.store.get_node(&req.node).await?;
    let known = node.is_some_and(|n| crate::join::identity_hash(&req.identity) == n.identity_hash);
    if !known {
        return Err(Status::unauthenticated(format!(
            "node {:?} did not prove its identity",
            req.node
        )));
    }
    let instances = shared.store.instances_of(&req.app, &req.server).await?;
    if !instances.iter().any(|i| i.node == req.node) {
        return Err(Status::permission_denied(format!(
            "node {:?} runs no instance of {}.{}",
            req.node, req.app, req.server
        )));
    }
    Ok(())
}

pub async fn download(shared: Arc<Shared>, req: DownloadRequest) -> Result<Stream, Status> {
    authorize(&shared, &req).await?;
    let name = format!("{}.{} {}", req.app, req.server, req.version);
    let pkg = shared
        .store
        .get_package(&req.app, &req.server, &req.version)
        .await?
        .ok_or_else(|| StoreError::PackageNotFound(name.clone()))?;
    let size = u64::try_from(pkg.size).unwrap_or(0);
    if req.offset > size {
        return Err(Status::out_of_range(format!(
            "offset {} is past the end of {name} ({size} bytes)",
            req.offset
        )));
    }
    let chunk = u64::try_from(pkg.chunk_size).unwrap_or(1).max(1);
    let (tx, rx) = mpsc::channel(2);
    let rate = shared.config.download_rate;
    let task_shared = shared.clone();
    shared.tracker.spawn(async move {
        let shared = task_shared;
        let started = Instant::now();
        let mut sent: u64 = 0;
        let mut seq = req.offset / chunk;
        let mut skip = (req.offset % chunk) as usize;
        while seq * chunk < size {
            let data = match shared
                .store
                .read_chunk(&req.app, &req.server, &req.version, seq as i64)
                .await
            {
                Ok(Some(d)) => d,
                Ok(None) => {
                    let _ = tx
                        .send(Err(Status::data_loss(format!(
                            "{name}: chunk {seq} is missing"
                        ))))
                        .await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            let data = if skip > 0 {
                data[skip.min(data.len())..].to_vec()
            } else {
                data
            };
            skip = 0;
            sent += data.len() as u64;
            if tx.send(Ok(DownloadChunk { data })).await.is_err() {
                return;
            }
            if let Some(rate) = rate {
                // Pace to the configured rate: no faster than `rate` bytes per second.
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            seq += 1;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}
