//! Admin RPCs on packages: upload (streamed, checked as it arrives), list, remove.

use std::io::Read;
use std::sync::mpsc as std_mpsc;

use corral_common::archive::check_archive;
use corral_proto::v1::upload_chunk::Body;
use corral_proto::v1::{
    ListPackagesRequest, ListPackagesResponse, PackageInfo, RemovePackageRequest,
    RemovePackageResponse, UploadChunk,
};
use sha2::{Digest, Sha256};
use tonic::{Status, Streaming};
use tracing::info;

use super::split_server;
use crate::state::Shared;
use crate::store::{CHUNK_SIZE, PackageRow, StoreError, now_ms};

/// An upload left unfinished this long is from an uploader that died.
const STALE_UPLOAD_MS: i64 = 60 * 60 * 1000;

/// A `Read` over byte buffers sent from the upload task, for the checker thread.
struct ChannelReader {
    rx: std_mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

pub fn package_info(p: PackageRow, used_by: Vec<String>) -> PackageInfo {
    PackageInfo {
        server: format!("{}.{}", p.app, p.server),
        version: p.version,
        sha256: p.sha256,
        size: u64::try_from(p.size).unwrap_or(0),
        note: p.note,
        created_at_ms: p.created_at_ms,
        entries: u64::try_from(p.entries).unwrap_or(0),
        used_by,
    }
}

pub async fn upload(
    shared: &Shared,
    mut stream: Streaming<UploadChunk>,
) -> Result<PackageInfo, Status> {
    let Some(UploadChunk {
        body: Some(Body::Header(h)),
    }) = stream.message().await?
    else {
        return Err(Status::invalid_argument(
            "an upload must start with an UploadHeader",
        ));
    };
    let (app, server) = split_server(&h.server)?;
    crate::spec::check_version(&h.version).map_err(Status::invalid_argument)?;
    if h.size > shared.config().max_package_size {
        return Err(Status::invalid_argument(format!(
            "the package is {} bytes; the limit is {} (max_package_size)",
            h.size,
            shared.config().max_package_size
        )));
    }
    if h.sha256.len() != 64 || !h.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument(format!(
            "sha256 {} is not 64 hex digits",
            corral_proto::text::quoted(&h.sha256)
        )));
    }
    let row = PackageRow {
        app: app.to_string(),
        server: server.to_string(),
        version: h.version.clone(),
        sha256: h.sha256.to_ascii_lowercase(),
        size: h.size as i64,
        note: h.note.chars().take(1024).collect(),
        entries: 0,
        chunk_size: CHUNK_SIZE as i64,
        created_at_ms: now_ms(),
    };
    shared.store().begin_upload(&row, STALE_UPLOAD_MS).await?;
    match receive(shared, &row, &mut stream).await {
        Ok((entries, chunk_sha256)) => {
            shared
                .store()
                .finish_upload(app, server, &row.version, entries as i64)
                .await?;
            // Ready for the first `Agent.Sources` of a rollout, which need not read the
            // package back.
            shared.distribution().remember(&row.sha256, chunk_sha256);
            info!(package = %format!("{}.{} {}", app, server, row.version), bytes = row.size, entries, "package uploaded");
            Ok(package_info(
                PackageRow {
                    entries: entries as i64,
                    ..row
                },
                Vec::new(),
            ))
        }
        Err(status) => {
            // Nothing half-done: the package and its chunks go.
            let _ = shared.store().abort_upload(app, server, &row.version).await;
            Err(status)
        }
    }
}

/// Stores the bytes in chunks while a thread checks them as a package; the entry count
/// and the sha256 of each chunk.
async fn receive(
    shared: &Shared,
    row: &PackageRow,
    stream: &mut Streaming<UploadChunk>,
) -> Result<(u64, Vec<u8>), Status> {
    let (tx, rx) = std_mpsc::sync_channel::<Vec<u8>>(4);
    let limits = shared.config().package_limits;
    let checker = std::thread::spawn(move || {
        let mut reader = ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        };
        let result = check_archive(&mut reader, limits);
        // Drain what is left so the sender never blocks on a checker that stopped early.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
        result
    });
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let mut seq = 0i64;
    let mut buf = Vec::with_capacity(CHUNK_SIZE);
    let size = row.size as u64;
    let mut chunk_sha256 = Vec::new();
    let flush = async |buf: &mut Vec<u8>, seq: &mut i64, hashes: &mut Vec<u8>| {
        hashes.extend_from_slice(&Sha256::digest(&buf[..]));
        shared
            .store()
            .put_chunk(&row.app, &row.server, &row.version, *seq, buf)
            .await?;
        *seq += 1;
        let full = std::mem::replace(buf, Vec::with_capacity(CHUNK_SIZE));
        let _ = tx.send(full);
        Ok::<(), Status>(())
    };
    while let Some(msg) = stream.message().await? {
        let Some(Body::Data(data)) = msg.body else {
            return Err(Status::invalid_argument(
                "only data may follow the UploadHeader",
            ));
        };
        total += data.len() as u64;
        if total > size {
            return Err(Status::invalid_argument(format!(
                "the upload is longer than the {size} bytes announced"
            )));
        }
        hasher.update(&data);
        let mut rest = &data[..];
        while !rest.is_empty() {
            let take = rest.len().min(CHUNK_SIZE - buf.len());
            buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if buf.len() == CHUNK_SIZE {
                flush(&mut buf, &mut seq, &mut chunk_sha256).await?;
            }
        }
    }
    if !buf.is_empty() {
        flush(&mut buf, &mut seq, &mut chunk_sha256).await?;
    }
    drop(tx);
    if total != size {
        return Err(Status::invalid_argument(format!(
            "the upload ended after {total} of {size} bytes"
        )));
    }
    let got = hex::encode(hasher.finalize());
    if got != row.sha256 {
        return Err(Status::invalid_argument(format!(
            "sha256 mismatch: the header says {}, the bytes hash to {got}",
            row.sha256
        )));
    }
    let checked = tokio::task::spawn_blocking(move || checker.join())
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|_| Status::internal("the package checker panicked"))?;
    checked
        .map(|entries| (entries, chunk_sha256))
        .map_err(|e| Status::invalid_argument(format!("package refused: {e}")))
}

pub async fn list(
    shared: &Shared,
    req: ListPackagesRequest,
) -> Result<ListPackagesResponse, Status> {
    let filter = if req.server.is_empty() {
        None
    } else {
        Some(split_server(&req.server)?)
    };
    let mut packages = Vec::new();
    for p in shared.store().list_packages(filter).await? {
        let used_by = shared
            .store()
            .package_users(&p.app, &p.server, &p.version)
            .await?;
        packages.push(package_info(p, used_by));
    }
    Ok(ListPackagesResponse { packages })
}

pub async fn remove(
    shared: &Shared,
    req: RemovePackageRequest,
) -> Result<RemovePackageResponse, Status> {
    let (app, server) = split_server(&req.server)?;
    let name = format!("{app}.{server} {}", req.version);
    if shared
        .store()
        .get_package(app, server, &req.version)
        .await?
        .is_none()
    {
        return Err(StoreError::PackageNotFound(name).into());
    }
    let users = shared
        .store()
        .package_users(app, server, &req.version)
        .await?;
    let in_spec = shared
        .store()
        .get_server(app, server)
        .await?
        .is_some_and(|s| s.spec.package.as_deref() == Some(&req.version));
    if !users.is_empty() || in_spec {
        let nodes = if users.is_empty() {
            "the server's spec".to_string()
        } else {
            users.join(", ")
        };
        return Err(StoreError::PackageInUse { name, nodes }.into());
    }
    shared
        .store()
        .abort_upload(app, server, &req.version)
        .await?;
    info!(package = %name, "package removed");
    Ok(RemovePackageResponse {})
}
