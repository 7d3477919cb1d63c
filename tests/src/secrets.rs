//! Helpers for tests of secrets: putting values through the CLI, reading files' modes,
//! and searching everything a registry and its agents show for a value.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::Registry;

/// `registry secret put SERVER NAME SCOPE... --file F` with `value` written to a file of
/// its own under `dir` (removed after); the CLI's output.
pub fn put(
    r: &Registry,
    dir: &Path,
    server: &str,
    name: &str,
    scope: &[&str],
    value: &str,
) -> Output {
    let path = dir.join(format!("value-{}", rand::random::<u32>()));
    std::fs::write(&path, value).expect("write value");
    let file = path.to_str().expect("utf8 path");
    let out = r.cli(&[&["secret", "put", server, name], scope, &["--file", file]].concat());
    let _ = std::fs::remove_file(&path);
    out
}

/// The same, panicking when the registry refuses.
pub fn put_ok(
    r: &Registry,
    dir: &Path,
    server: &str,
    name: &str,
    scope: &[&str],
    value: &str,
) -> Output {
    let out = put(r, dir, server, name, scope, value);
    assert!(
        out.status.success(),
        "secret put {server} {name} {scope:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A file's permission bits.
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every regular file under `dir`, recursively (symlinks not followed).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// The places (labels) among `seen` whose bytes hold `value`.
pub fn holding<'a>(seen: &'a [(String, Vec<u8>)], value: &str) -> Vec<&'a str> {
    seen.iter()
        .filter(|(_, bytes)| bytes.windows(value.len()).any(|w| w == value.as_bytes()))
        .map(|(label, _)| label.as_str())
        .collect()
}

/// A CLI output as two labelled texts (stdout and stderr).
pub fn output(label: &str, out: &Output) -> Vec<(String, Vec<u8>)> {
    vec![
        (format!("{label} (stdout)"), out.stdout.clone()),
        (format!("{label} (stderr)"), out.stderr.clone()),
    ]
}

/// What the admin CLI shows about `server`, in tables and JSON: every listing there is.
pub fn cli_listings(r: &Registry, server: &str, node: &str) -> Vec<(String, Vec<u8>)> {
    let endpoint = format!("{server}.Main");
    let commands: Vec<Vec<&str>> = vec![
        vec!["node", "list"],
        vec!["node", "show", node],
        vec!["server", "list"],
        vec!["server", "status", server],
        vec!["server", "export", server],
        vec!["events", "--server", server, "--limit", "1000"],
        vec!["secret", "list"],
        vec!["secret", "list", server],
        vec!["package", "list"],
        vec!["rollout", "list"],
        vec!["endpoints", &endpoint],
    ];
    let mut seen = Vec::new();
    for c in commands {
        for json in [false, true] {
            let args: Vec<&str> = if json {
                [&c[..], &["-o", "json"]].concat()
            } else {
                c.clone()
            };
            let out = r.cli(&args);
            seen.extend(output(&format!("registry {}", args.join(" ")), &out));
        }
    }
    seen
}

/// The bodies of HTTP endpoints (whatever their status).
pub fn http_bodies(
    addr: std::net::SocketAddr,
    paths: &[String],
    label: &str,
) -> Vec<(String, Vec<u8>)> {
    paths
        .iter()
        .map(|p| {
            let body = match crate::http_get_any(addr, p) {
                Ok((_, head, body)) => format!("{head}\r\n\r\n{body}"),
                Err(e) => e,
            };
            (format!("{label} GET {p}"), body.into_bytes())
        })
        .collect()
}

/// Every `*.log` file under `dir`: registry and agent logs, and the services' own.
pub fn logs_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".log"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).unwrap_or_default(),
            )
        })
        .collect()
}
