//! The packages the benchmark distributes, and what their stages cost alone.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use sha2::{Digest, Sha256};

const SERVER_SCRIPT: &[u8] = b"#!/bin/sh\nexec sleep 1000\n";

/// Which package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// `data.bin` of random bytes: gzip cannot shrink it, so inflate is cheap.
    Incompressible,
    /// Binaries and libraries of this host (`/usr/bin`, `/usr/lib`), the typical
    /// release: gzip shrinks them about 3x, so inflate and writing cost more.
    Binaries,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Incompressible => "incompressible",
            Kind::Binaries => "binaries",
        }
    }
}

/// A built package.
pub struct Package {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// Builds a package of about `size` bytes compressed at `path`, with `tar czf` as the
/// README shows (`bin/server` and the payload).
pub fn build(kind: Kind, path: &Path, size: u64) -> anyhow::Result<Package> {
    use std::os::unix::fs::PermissionsExt;
    let stage = path.with_extension("stage");
    std::fs::create_dir_all(stage.join("bin"))?;
    let script = stage.join("bin/server");
    std::fs::write(&script, SERVER_SCRIPT)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let mut tar = Command::new("tar");
    tar.arg("czf").arg(path).arg("-C").arg(&stage);
    match kind {
        Kind::Incompressible => {
            let mut random = std::fs::File::open("/dev/urandom")?.take(size);
            let mut data = std::fs::File::create(stage.join("data.bin"))?;
            std::io::copy(&mut random, &mut data)?;
            tar.arg(".");
        }
        Kind::Binaries => {
            // Regular files of at least 16 KiB (the package's entry limit stays far),
            // about 3x the target (gzip's usual ratio on binaries), by path.
            let list = stage.with_extension("list");
            let files = host_binaries(size * 3)?;
            std::fs::write(&list, files.join("\n"))?;
            tar.args(["bin", "--mode=u+rw,go+r,ug-s", "--owner=0", "--group=0"])
                .args(["-C", "/", "-T"])
                .arg(&list);
        }
    }
    let status = tar.status().context("run tar czf")?;
    ensure!(status.success(), "tar czf failed: {status}");
    std::fs::remove_dir_all(&stage)?;
    let _ = std::fs::remove_file(stage.with_extension("list"));
    Ok(Package {
        path: path.to_path_buf(),
        size: std::fs::metadata(path)?.len(),
        sha256: sha256_file(path)?,
    })
}

/// Paths (relative to `/`) of regular files under /usr/bin and /usr/lib, `want` bytes.
fn host_binaries(want: u64) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut total = 0;
    let mut dirs = vec![PathBuf::from("/usr/bin"), PathBuf::from("/usr/lib")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let name = path.to_string_lossy();
            let plain = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b));
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file() && meta.len() >= 16 << 10 && plain && total < want {
                total += meta.len();
                out.push(name.trim_start_matches('/').to_string());
            }
        }
    }
    ensure!(
        total >= want / 2,
        "only {total} bytes of binaries on this host"
    );
    Ok(out)
}

pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The CPU each stage of an install costs alone, in this process, one thread: what a
/// node cannot do with less.
#[derive(Clone, Copy, Default)]
pub struct Stages {
    pub inflate: Duration,
    pub hash: Duration,
    /// Writing the files: gunzip + untar, minus the inflate.
    pub write: Duration,
    /// Not a stage of the goal, but work an agent does beside them: writing the package
    /// itself to a file and fsyncing it (its cache, which resumes and peers read; the
    /// pipelines' `curl -o` does it too).
    pub package_file: Duration,
    /// Not a stage of the goal either: receiving the package over a plain loopback TCP
    /// connection (1 MiB reads, the receiving thread's CPU), what any transport pays.
    pub receive: Duration,
    /// Sending it over the same connection (the sending thread's CPU): what a node that
    /// serves its peers pays per package it sends.
    pub send: Duration,
}

impl Stages {
    pub fn total(&self) -> Duration {
        self.inflate + self.hash + self.write
    }
}

fn cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_THREAD).map_or(Duration::ZERO, |u| {
        let t = |tv: nix::sys::time::TimeVal| {
            Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
        };
        t(u.user_time()) + t(u.system_time())
    })
}

/// Measures the stages on `pkg`, unpacking into `dir` (removed after).
pub fn stages(pkg: &Path, dir: &Path) -> anyhow::Result<Stages> {
    let open = || -> anyhow::Result<_> {
        Ok(std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(pkg)?,
        ))
    };
    // Warm the page cache: the agents read nothing from disk either.
    sha256_file(pkg)?;
    let c = cpu();
    sha256_file(pkg)?;
    let hash = cpu() - c;
    let c = cpu();
    std::io::copy(
        &mut flate2::bufread::GzDecoder::new(open()?),
        &mut std::io::sink(),
    )?;
    let inflate = cpu() - c;
    let c = cpu();
    tar::Archive::new(flate2::bufread::GzDecoder::new(open()?)).unpack(dir)?;
    nix::unistd::syncfs(std::fs::File::open(dir)?)?;
    let unpack = cpu() - c;
    std::fs::remove_dir_all(dir)?;
    let copy = dir.with_extension("copy");
    let c = cpu();
    {
        let mut out = std::fs::File::create(&copy)?;
        std::io::copy(&mut open()?, &mut out)?;
        out.sync_all()?;
    }
    let package_file = cpu() - c;
    std::fs::remove_file(&copy)?;
    let (receive, send) = transport(pkg)?;
    Ok(Stages {
        inflate,
        hash,
        write: unpack.saturating_sub(inflate),
        package_file,
        receive,
        send,
    })
}

/// The CPU of sending `pkg` (from the page cache, 1 MiB writes) and of receiving it
/// (1 MiB reads into one buffer) over a loopback TCP connection, each its own thread.
fn transport(pkg: &Path) -> anyhow::Result<(Duration, Duration)> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let path = pkg.to_path_buf();
    let sender = std::thread::spawn(move || -> anyhow::Result<Duration> {
        let mut out = std::net::TcpStream::connect(addr)?;
        let mut file = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; 1 << 20];
        let c = cpu();
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
        }
        Ok(cpu() - c)
    });
    let (mut conn, _) = listener.accept()?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut got, c) = (0u64, cpu());
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let receive = cpu() - c;
    let send = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sending thread panicked"))??;
    anyhow::ensure!(
        got == std::fs::metadata(pkg)?.len(),
        "received {got} bytes of the package"
    );
    Ok((receive, send))
}
