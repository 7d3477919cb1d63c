//! Spec drift made visible: `registry server export` prints the live spec as TOML that
//! round-trips through `apply`, and applying a file that would undo an expand, patch,
//! rollback or undeploy made since the last apply needs `--force`.

use std::time::Duration;

use corral_tests::fleet::{Fleet, instances};
use corral_tests::packages::{release, write};

const S: Duration = Duration::from_secs(1);

fn text(out: &std::process::Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn spec(nodes: &[&str], package: Option<&str>) -> String {
    let nodes: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
    let (command, package) = match package {
        Some(v) => ("\"bin/server\"".to_string(), format!("package = \"{v}\"\n")),
        None => ("\"sleep\", \"1000\"".to_string(), String::new()),
    };
    format!(
        "app = \"demo\"\nserver = \"drift\"\nnodes = [{}]\ncommand = [{command}]\n{package}\
         [[adapters]]\nname = \"Main\"\nport = \"auto\"\n\
         [[config]]\nname = \"peers\"\ntemplate = \"{{% for i in instances('demo.drift') %}}{{{{ i.node }}}} {{% endfor %}}\"\n\
         on_change = \"none\"\n[restart]\nmin_uptime = \"1s\"\n",
        nodes.join(", ")
    )
}

/// Export round-trips: applying it changes nothing, and it shows what changed since the
/// last apply. The original file would undo an expand: refused without --force, shown
/// by a dry run, applied with --force.
#[test]
fn export_round_trips_and_an_undone_expand_needs_force() {
    let f = Fleet::start(2);
    let original = spec(&["node-a"], None);
    f.registry.apply(&original);
    let out = f.registry.cli(&["server", "export", "demo.drift"]);
    let (ok, exported, err) = text(&out);
    assert!(ok, "{err}");
    let (ok, stdout, err) = text(&f.registry.try_apply(&exported, &[]));
    assert!(ok && stdout.contains("no change"), "{stdout}{err}");

    let (ok, _, err) = text(
        &f.registry
            .cli(&["server", "expand", "demo.drift", "--to", "node-b"]),
    );
    assert!(ok, "{err}");
    let (_, exported, _) = text(&f.registry.cli(&["server", "export", "demo.drift"]));
    assert!(
        exported.contains("# since the last apply: node node-b was added")
            && exported.contains("nodes = [\"node-a\", \"node-b\"]"),
        "{exported}"
    );

    let (ok, _, err) = text(&f.registry.try_apply(&original, &[]));
    assert!(!ok, "an apply that undoes an expand is refused");
    assert!(
        err.contains("would undo changes made to demo.drift since its last apply")
            && err.contains("removes the instance on node-b, added by `registry server expand`")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        instances(&f.registry, "demo.drift").expect("status").len(),
        2,
        "nothing changed"
    );
    let (ok, stdout, err) = text(&f.registry.try_apply(&original, &["--dry-run"]));
    assert!(ok, "{err}");
    assert!(
        stdout.contains("would remove instances on node-b (they would be stopped)")
            && stdout.contains("undoes: removes the instance on node-b")
            && stdout.contains("(needs --force)"),
        "{stdout}"
    );

    // The exported file is the live spec: applying it is no change and clears the drift.
    let (ok, stdout, err) = text(&f.registry.try_apply(&exported, &[]));
    assert!(ok && stdout.contains("no change"), "{stdout}{err}");
    let (_, again, _) = text(&f.registry.cli(&["server", "export", "demo.drift"]));
    assert!(!again.contains("since the last apply"), "{again}");

    // Now the original file is a plain removal, with --force or without.
    let (ok, stdout, err) = text(&f.registry.try_apply(&original, &[]));
    assert!(
        ok && stdout.contains("remove instances on node-b (stopping them)"),
        "{stdout}{err}"
    );
}

/// An apply that would switch back a release a patch rolled out needs --force too.
#[test]
fn an_apply_that_undoes_a_patch_needs_force() {
    let f = Fleet::start(1);
    for v in ["1.0.0", "2.0.0"] {
        let path = write(f.dir.path(), &format!("d-{v}.tgz"), &release(v, false));
        let (ok, _, err) = text(&f.registry.cli(&[
            "package",
            "upload",
            path.to_str().expect("utf8"),
            "--server",
            "demo.drift",
            "--version",
            v,
        ]));
        assert!(ok, "{err}");
    }
    let original = spec(&["node-a"], Some("1.0.0"));
    f.registry.apply(&original);
    f.registry
        .wait_instance("demo.drift", "node-a", "running 1.0.0", 30 * S, |i| {
            i["state"] == "running" && i["version"] == "1.0.0"
        });
    let (ok, _, err) = text(&f.registry.cli(&[
        "patch",
        "demo.drift",
        "--version",
        "2.0.0",
        "--min-healthy",
        "1s",
        "--deadline",
        "30s",
    ]));
    assert!(ok, "patch: {err}");
    let (ok, _, err) = text(&f.registry.try_apply(&original, &[]));
    assert!(
        !ok && err
            .contains("switches the release from 2.0.0 (set by `registry patch` or `rollback`"),
        "{err}"
    );
    let (ok, stdout, err) = text(&f.registry.try_apply(&original, &["--force"]));
    assert!(
        ok && stdout.contains("undoes: switches the release"),
        "{stdout}{err}"
    );
    f.registry
        .wait_instance("demo.drift", "node-a", "back on 1.0.0", 30 * S, |i| {
            i["state"] == "running" && i["version"] == "1.0.0"
        });
}
