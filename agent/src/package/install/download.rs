//! The download of a package into the cache, from the registry or from the peer it
//! names ([`super::sources`]): resumed from what a `.partial` file holds, retried when
//! the stream is cut (from another source when a peer failed), verified by sha256; each
//! chunk goes to the cache writer and to the unpacker. While it runs, the download is
//! announced to the peer service, which relays what is written to the nodes sent here.

use corral_proto::v1::InstallState;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_proto::v1::agent_client::AgentClient;
use corral_proto::v1::{DownloadRequest, PackageRef};

use super::cache::{CacheWriter, Check, Verdict};
use super::peers::Announced;
use super::sources::{Plan, Tried, progress};
use super::unpacker::{Unpacker, feed_from_file};
use super::{Held, InstallError, Installer, io_err};

impl Installer {
    /// Downloads into the cache, resuming a partial file; returns the verified file.
    pub(super) async fn download(
        &self,
        app: &str,
        server: &str,
        pkg: &PackageRef,
        report: &impl Fn(InstallState, u32),
        unpacker: &mut Unpacker,
    ) -> Result<PathBuf, InstallError> {
        let cache = self.data_dir.join("cache");
        std::fs::create_dir_all(&cache).map_err(io_err(&pkg.version, &cache))?;
        let done = cache.join(&pkg.sha256);
        // Another install of the same package may be downloading it: wait for it.
        let cache_lock = self.locks.lock(&done).await;
        if self.is_cached(pkg) {
            return Ok(done);
        }
        let partial = cache.join(format!("{}.partial", pkg.sha256));
        let have = std::fs::metadata(&partial).map_or(0, |m| m.len());
        let announced = self.peers.relay.announce(&pkg.sha256, have);
        let mut tried = Tried::default();
        let mut attempts = 0;
        loop {
            let attempt = Attempt {
                partial: &partial,
                cache_lock: &cache_lock,
                announced: &announced,
                tried: &tried,
            };
            match self
                .fetch(app, server, pkg, attempt, report, unpacker)
                .await
            {
                Ok(()) => break,
                Err(InstallError::Peer { peer, corrupt, .. }) if attempts < 100 => {
                    // Another source at once: the registry gives another peer, or serves.
                    attempts += 1;
                    if corrupt {
                        tried.corrupt.push(peer);
                    } else {
                        tried.failed.push(peer);
                    }
                }
                Err(e @ InstallError::Checksum { .. }) => {
                    let _ = std::fs::remove_file(&partial);
                    return Err(e);
                }
                Err(e) => {
                    attempts += 1;
                    if attempts >= 20 {
                        return Err(e);
                    }
                    tracing::warn!(version = %pkg.version, cause = %e, "download interrupted; resuming");
                    tokio::time::sleep(Duration::from_millis(200 * attempts.min(10))).await;
                }
            }
        }
        std::fs::rename(&partial, &done).map_err(io_err(&pkg.version, &done))?;
        Ok(done)
    }

    /// One download attempt, from wherever the partial file ends.
    async fn fetch(
        &self,
        app: &str,
        server: &str,
        pkg: &PackageRef,
        attempt: Attempt<'_>,
        report: &impl Fn(InstallState, u32),
        unpacker: &mut Unpacker,
    ) -> Result<(), InstallError> {
        let version = pkg.version.as_str();
        let partial = attempt.partial;
        let plan = self.plan(app, server, pkg, attempt.tried).await?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(partial)
            .map_err(io_err(version, partial))?;
        let mut offset = file.metadata().map_err(io_err(version, partial))?.len();
        if let Plan::Peer(chunks, _) = &plan {
            // A peer sends whole chunks from a chunk boundary.
            let aligned = offset / chunks.chunk * chunks.chunk;
            if aligned != offset {
                file.set_len(aligned).map_err(io_err(version, partial))?;
                offset = aligned;
            }
        }
        if offset > pkg.size {
            file.set_len(0).map_err(io_err(version, partial))?;
            offset = 0;
        }
        if unpacker.fed() > offset {
            // It has seen bytes the file no longer holds: unpack from the file instead.
            unpacker.abandon().await;
        }
        // The unpacker gets what it has not seen of the file (all of it, after a restart
        // of the agent), while the writer hashes the file from its start.
        let written = attempt.announced.progress.clone();
        written.send_replace(offset);
        let check = Check::new(plan.chunks());
        let writer = CacheWriter::start(file, offset, attempt.cache_lock.clone(), written, check);
        let resumed = feed_from_file(unpacker, partial, offset).await;
        let streamed = match (resumed, &plan) {
            (Ok(()), Plan::Registry(_)) => {
                self.stream(app, server, pkg, offset, report, unpacker, &writer)
                    .await
            }
            (Ok(()), Plan::Peer(chunks, peer)) => {
                self.stream_peer(pkg, chunks, peer, offset, report, unpacker, &writer)
                    .await
            }
            (Err(e), _) => Err(io_err(version, partial)(e)),
        };
        // Whatever happened, the file is complete and synced before anyone opens it again.
        // A writer's error comes first: it is why a stream was cut short; so does a chunk
        // that does not match (the stream was cut because the writer stopped on it).
        let verdict = writer.finish().await.map_err(io_err(version, partial))?;
        let mismatch = |got: String| InstallError::Checksum {
            version: version.to_string(),
            expected: pkg.sha256.clone(),
            got,
        };
        if let Verdict::Mismatch(why) = verdict {
            return Err(mismatch(why));
        }
        streamed?;
        match verdict {
            Verdict::Whole(got) if got != pkg.sha256 => Err(mismatch(got)),
            Verdict::Mismatch(why) | Verdict::Short(why) => Err(mismatch(why)),
            Verdict::Whole(_) | Verdict::Chunks => Ok(()),
        }
    }

    /// Streams the package from `offset` to its end into the cache writer and the
    /// unpacker.
    #[allow(clippy::too_many_arguments)]
    async fn stream(
        &self,
        app: &str,
        server: &str,
        pkg: &PackageRef,
        offset: u64,
        report: &impl Fn(InstallState, u32),
        unpacker: &mut Unpacker,
        writer: &CacheWriter,
    ) -> Result<(), InstallError> {
        let version = pkg.version.as_str();
        let failed = |reason: String| InstallError::Download {
            version: version.to_string(),
            reason,
        };
        if offset > 0 {
            tracing::info!(version, offset, "resuming a download");
        }
        let channel = self
            .channel
            .borrow()
            .clone()
            .ok_or_else(|| failed("no registry session".into()))?;
        let request = DownloadRequest {
            node: self.node.clone(),
            identity: self.identity_secret(),
            app: app.to_string(),
            server: server.to_string(),
            version: version.to_string(),
            offset,
        };
        let mut client = AgentClient::new(channel).max_decoding_message_size(8 << 20);
        let mut stream = client
            .download(request)
            .await
            .map_err(|s| failed(s.message().to_string()))?
            .into_inner();
        let mut received = offset;
        let mut last_percent = u32::MAX;
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| failed(s.message().to_string()))?
        {
            received += chunk.data.len() as u64;
            if received > pkg.size {
                return Err(failed(format!(
                    "the registry sent more than the {} bytes announced",
                    pkg.size
                )));
            }
            if !writer.write(chunk.data.clone()).await {
                // Finishing the writer returns the error it stopped on.
                return Err(failed("the cache writer stopped".into()));
            }
            unpacker.feed(chunk.data).await;
            progress(report, received, pkg.size, &mut last_percent);
        }
        if received != pkg.size {
            return Err(failed(format!("got {received} of {} bytes", pkg.size)));
        }
        Ok(())
    }
}

/// What one download attempt works with.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    partial: &'a Path,
    cache_lock: &'a Held,
    announced: &'a Announced,
    tried: &'a Tried,
}
