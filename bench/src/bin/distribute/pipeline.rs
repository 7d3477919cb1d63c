//! What Tars' patch and most operators' scripts do, for comparison: every node downloads
//! the package over HTTP from a static server (nginx from Debian, `sendfile on`), checks
//! its sha256 and unpacks it with `tar`: `curl -o` + `sha256sum -c` + `tar -xzf`, one
//! pipeline per node, each into its own directory, all at once.
//!
//! nginx runs as this process's child, with its own config file in a temporary directory
//! and a loopback port: it never touches a system nginx.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use corral_bench::{cpu_time, free_port};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::package::Package;

/// What the pipelines measured.
pub struct Measured {
    pub wall: Duration,
    /// curl + sha256sum + tar (+ sh) of every node, summed.
    pub nodes_cpu: Duration,
    /// nginx's master and workers.
    pub server_cpu: Duration,
}

/// nginx serving one directory on a loopback port; stopped (its group) on drop.
struct Nginx {
    child: Child,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn start(dir: &Path, root: &Path) -> anyhow::Result<Nginx> {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|b| Path::new(b).exists())
            .context("nginx is not installed (apt-get install nginx; scripts/deps.sh does)")?;
        let port = free_port()?;
        let d = dir.display();
        std::fs::create_dir_all(dir.join("tmp"))?;
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process on;\nworker_processes auto;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n\
                 default_type application/octet-stream;\n\
                 client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
                 fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n\
                 scgi_temp_path {d}/tmp/scgi;\n\
                 server {{ listen 127.0.0.1:{port}; root {}; }}\n}}\n",
                root.display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("nginx.out"))?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("start nginx")?;
        let mut nginx = Nginx { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = nginx.child.try_wait()? {
                let out = std::fs::read_to_string(dir.join("nginx.out")).unwrap_or_default();
                bail!("nginx exited ({status}): {out}");
            }
            ensure!(
                Instant::now() < deadline,
                "nginx did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx.child.try_wait()?;
        Ok(nginx)
    }

    /// CPU of the master and its workers so far.
    fn cpu(&self) -> Duration {
        let master = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        std::iter::once(master)
            .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
            .filter_map(|p| cpu_time(p).ok())
            .sum()
    }
}

fn children_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(Duration::ZERO, |u| {
        let t = |tv: nix::sys::time::TimeVal| {
            Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
        };
        t(u.user_time()) + t(u.system_time())
    })
}

/// `nodes` pipelines at once, each into `dir/node-N`; fails unless every one succeeds.
pub fn run(pkg: &Package, nodes: usize, dir: &Path) -> anyhow::Result<Measured> {
    let root = dir.join("www");
    std::fs::create_dir_all(&root)?;
    std::fs::copy(&pkg.path, root.join("pkg.tgz"))?;
    let nginx = Nginx::start(&dir.join("nginx"), &root)?;
    let url = format!("http://127.0.0.1:{}/pkg.tgz", nginx.port);
    let script = "set -e; curl -sS -f -o \"$D/pkg.tgz\" \"$URL\"; \
                  echo \"$SHA  $D/pkg.tgz\" | sha256sum -c --quiet -; \
                  mkdir -p \"$D/release\"; tar -xzf \"$D/pkg.tgz\" -C \"$D/release\"";
    nix::unistd::sync();
    let server0 = nginx.cpu();
    let children0 = children_cpu();
    let started = Instant::now();
    let mut running = Vec::new();
    for i in 0..nodes {
        let d = dir.join(format!("node-{i}"));
        std::fs::create_dir_all(&d)?;
        let child = Command::new("sh")
            .args(["-c", script])
            .env("D", &d)
            .env("URL", &url)
            .env("SHA", &pkg.sha256)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .context("start a pipeline")?;
        running.push(child);
    }
    let mut failed = Vec::new();
    for (i, mut child) in running.into_iter().enumerate() {
        let status = child.wait()?;
        if !status.success() {
            failed.push(format!("node-{i}: {status}"));
        }
    }
    let wall = started.elapsed();
    let nodes_cpu = children_cpu() - children0;
    let server_cpu = nginx.cpu() - server0;
    ensure!(failed.is_empty(), "pipelines failed: {}", failed.join(", "));
    drop(nginx);
    std::fs::remove_dir_all(dir)?;
    Ok(Measured {
        wall,
        nodes_cpu,
        server_cpu,
    })
}
