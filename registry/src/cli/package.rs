//! `registry package upload|list|remove` (rolling a release out is in [`super::rollout`]).

use std::io::Read;
use std::path::PathBuf;

use clap::Subcommand;
use corral_proto::v1::upload_chunk::Body;
use corral_proto::v1::{
    ListPackagesRequest, PackageInfo, RemovePackageRequest, UploadChunk, UploadHeader,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::output::{bytes, print_table, time_ms};
use super::{CliError, ClientArgs, Format, connect};

/// Bytes per upload message.
const UPLOAD_CHUNK: usize = 256 * 1024;

#[derive(Subcommand, Debug)]
pub enum PackageCommand {
    /// Upload a .tar.gz release of a server.
    Upload {
        file: PathBuf,
        /// APP.SERVER
        #[arg(long)]
        server: String,
        #[arg(long)]
        version: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List packages.
    List {
        /// Only this server's (APP.SERVER).
        #[arg(long, value_parser = super::args::non_empty)]
        server: Option<String>,
    },
    /// Remove a package (refused while an instance uses it).
    Remove { server: String, version: String },
}

fn package_json(p: &PackageInfo) -> Value {
    json!({"server": p.server, "version": p.version, "sha256": p.sha256, "size": p.size, "note": p.note,
           "entries": p.entries, "created_at": time_ms(p.created_at_ms), "used_by": p.used_by})
}

/// sha256 and size of a file, read in pieces.
fn hash_file(path: &PathBuf) -> Result<(String, u64), CliError> {
    let err = |source| CliError::File {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

pub async fn run(cmd: PackageCommand, args: &ClientArgs) -> Result<(), CliError> {
    let mut client = connect(args).await?;
    match cmd {
        PackageCommand::Upload {
            file,
            server,
            version,
            note,
        } => {
            let (sha256, size) = hash_file(&file)?;
            let bar = ProgressBar::new(size);
            if args.output == Format::Table {
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_message(format!("{server} {version}"));
            } else {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let header = UploadChunk {
                body: Some(Body::Header(UploadHeader {
                    server,
                    version,
                    note,
                    size,
                    sha256,
                })),
            };
            let _ = tx.send(header).await;
            let reader_bar = bar.clone();
            let path = file.clone();
            // Read and send in pieces: the file is never held in memory whole.
            let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let mut f = std::fs::File::open(&path)?;
                loop {
                    let mut buf = vec![0u8; UPLOAD_CHUNK];
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.truncate(n);
                    reader_bar.inc(n as u64);
                    if tx
                        .blocking_send(UploadChunk {
                            body: Some(Body::Data(buf)),
                        })
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            });
            let result = client
                .upload_package(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await;
            let _ = reader.await;
            bar.finish_and_clear();
            let info = result?.into_inner();
            if args.output == Format::Json {
                println!("{}", package_json(&info));
            } else {
                println!(
                    "uploaded {} {} ({}, {} entries, sha256 {})",
                    info.server,
                    info.version,
                    bytes(info.size),
                    info.entries,
                    info.sha256
                );
            }
        }
        PackageCommand::List { server } => {
            let list = client
                .list_packages(ListPackagesRequest {
                    server: server.unwrap_or_default(),
                })
                .await?
                .into_inner()
                .packages;
            if args.output == Format::Json {
                println!("{}", Value::Array(list.iter().map(package_json).collect()));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|p| {
                    vec![
                        p.server.clone(),
                        p.version.clone(),
                        bytes(p.size),
                        time_ms(p.created_at_ms),
                        p.used_by.join(","),
                        p.note.clone(),
                    ]
                })
                .collect();
            print_table(
                &["SERVER", "VERSION", "SIZE", "UPLOADED", "USED BY", "NOTE"],
                &rows,
            );
        }
        PackageCommand::Remove { server, version } => {
            client
                .remove_package(RemovePackageRequest {
                    server: server.clone(),
                    version: version.clone(),
                })
                .await?;
            println!("removed {server} {version}");
        }
    }
    Ok(())
}
