//! `registry dev` brings up a registry and an agent for this host in one command.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use corral_tests::{bin, free_port, start_on_free_ports, wait_until};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// `registry dev` and, through its cgroup subtree (named after `.1`), its services.
struct KillOnDrop(std::process::Child, std::path::PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
        let _ = self.0.wait();
        corral_tests::cgroups::clean_up(&self.1);
    }
}

/// Starts `registry dev` in `dir` on free ports; its gRPC port. A free port can be taken
/// by another test before it binds it: then it starts again on other ports.
fn start_dev(dir: &std::path::Path) -> (KillOnDrop, u16) {
    let stderr = dir.join("dev.stderr");
    start_on_free_ports("registry dev", || {
        let grpc = free_port();
        let child = Command::new(bin("registry"))
            .current_dir(dir)
            .args(["dev", "--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--http", &format!("127.0.0.1:{}", free_port())])
            .args(["--agent-http", &format!("127.0.0.1:{}", free_port())])
            .args(["--cgroup", &corral_tests::cgroups::subtree_name(dir)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .process_group(0)
            .spawn()
            .expect("spawn registry dev");
        let mut child = KillOnDrop(child, dir.to_path_buf());
        let addr = format!("http://127.0.0.1:{grpc}");
        wait_until("registry dev to answer", Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.0.try_wait() {
                let log = std::fs::read_to_string(&stderr).unwrap_or_default();
                return Ok(Err(format!("registry dev exited ({status}): {log}")));
            }
            let out = Command::new(bin("registry"))
                .args(["node", "list", "--addr", &addr])
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(Ok(()))
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into())
            }
        })
        .map(|()| (child, grpc))
    })
}

#[test]
fn dev_shows_this_host_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, grpc) = start_dev(dir.path());
    let addr = format!("http://127.0.0.1:{grpc}");
    let host = corral_agent_host_name();
    let nodes = wait_until("this host up in node list", Duration::from_secs(30), || {
        let out = Command::new(bin("registry"))
            .args(["node", "list", "-o", "json", "--addr", &addr])
            .output()
            .map_err(|e| e.to_string())?;
        let list: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        match corral_tests::find(&list, "name", &host) {
            Some(n) if n["state"] == "up" => Ok(list.clone()),
            _ => Err(list.to_string()),
        }
    });
    assert_eq!(nodes.as_array().map(Vec::len), Some(1));
    assert!(
        dir.path().join(".corral/dev.db").exists(),
        "the SQLite file is ./.corral/dev.db"
    );
    // The banner tells a newcomer what to run next.
    let _ = killpg(Pid::from_raw(child.0.id() as i32), Signal::SIGINT);
    let out = std::mem::replace(&mut child.0, Command::new("true").spawn().expect("true"))
        .wait_with_output()
        .expect("dev output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("registry node list"), "{text}");
    assert!(out.status.success(), "dev exits cleanly on SIGINT");
}

/// The node name `registry dev` uses: the host name's first label.
fn corral_agent_host_name() -> String {
    let host = nix::unistd::gethostname()
        .expect("hostname")
        .into_string()
        .expect("utf8 hostname");
    host.split('.').next().unwrap_or(&host).to_string()
}

/// The README's package walk-through under `registry dev`, with its defaults (a data dir
/// relative to where dev started): a packaged server starts from its release directory
/// and runs. It used to fail with "No such file": the relative data dir pointed nowhere
/// from the release directory the service starts in.
#[test]
fn dev_runs_a_packaged_server() {
    use corral_tests::packages::{Entry, tar_gz, write};
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, grpc) = start_dev(dir.path());
    let addr = format!("http://127.0.0.1:{grpc}");
    let cli = |args: &[&str]| {
        let out = Command::new(bin("registry"))
            .args(args)
            .args(["--addr", &addr])
            .current_dir(dir.path())
            .output()
            .expect("registry CLI");
        assert!(
            out.status.success(),
            "registry {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let svc = std::fs::read(bin("corral-testsvc")).expect("test service binary");
    let pkg = tar_gz(&[Entry::Dir("bin"), Entry::File("bin/hello", &svc, 0o755)]);
    let path = write(dir.path(), "hello-1.0.0.tgz", &pkg);
    cli(&[
        "package",
        "upload",
        path.to_str().expect("utf8"),
        "--server",
        "demo.hello",
        "--version",
        "1.0.0",
    ]);
    let spec = format!(
        "app = \"demo\"\nserver = \"hello\"\nnodes = [{:?}]\ncommand = [\"bin/hello\"]\npackage = \"1.0.0\"\n\
         [[adapters]]\nname = \"Main\"\nport = \"auto\"\n[health]\nkind = \"http\"\ninterval = \"200ms\"\n",
        corral_agent_host_name()
    );
    std::fs::write(dir.path().join("hello.toml"), spec).expect("spec");
    cli(&["apply", "-f", "hello.toml"]);
    wait_until(
        "the packaged server healthy",
        Duration::from_secs(60),
        || {
            let out = cli(&["server", "status", "demo.hello", "-o", "json"]);
            let list: serde_json::Value =
                serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            let i = &list[0];
            if i["state"] == "running" && i["health"] == "healthy" && i["version"] == "1.0.0" {
                Ok(())
            } else {
                Err(i.to_string())
            }
        },
    );
    let _ = killpg(Pid::from_raw(child.0.id() as i32), Signal::SIGINT);
    let out = std::mem::replace(&mut child.0, Command::new("true").spawn().expect("true"))
        .wait_with_output()
        .expect("dev output");
    let text = String::from_utf8_lossy(&out.stdout);
    let registry = bin("registry").display().to_string();
    assert!(
        text.contains(&format!("{registry} node list")),
        "the banner's commands work as printed: {text}"
    );
    assert!(
        text.contains(&dir.path().join(".corral/agent").display().to_string()),
        "the data dir is shown absolute: {text}"
    );
}
