//! Per-instance secrets (issue 17, item 5): values put for one node, one ordinal or every
//! instance reach only the instances they are for, as files 0600 in `conf/` (and through
//! `secret()` in templates); a new value reaches them per `on_change`; they are sealed at
//! rest, and no listing, answer, event, log line or database row shows them in clear.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use corral_tests::fleet::{Fleet, instances, lines};
use corral_tests::secrets::{files_under, holding, mode, put, put_ok};
use corral_tests::wait_until;

const S: Duration = Duration::from_secs(1);

/// A service with a per-node token file, a template that reads the token, and a file for
/// every instance that asks for SIGHUP (the service counts them in its log).
fn spec(nodes: &[&str]) -> String {
    let nodes: Vec<String> = nodes.iter().map(|n| format!("{n:?}")).collect();
    format!(
        "app = \"demo\"\nserver = \"sec\"\nnodes = [{}]\n\
         command = [\"sh\", \"-c\", \"trap 'echo got-hup' HUP; while true; do sleep 0.1; done\"]\n\
         [[adapters]]\nname = \"Main\"\nport = \"auto\"\n\
         [[config]]\nname = \"app.conf\"\ntemplate = \"node={{{{ node }}}}\\ntoken={{{{ secret('tok') }}}}\\n\"\n\
         [[files]]\nname = \"tok.pem\"\nsecret = \"tok\"\n\
         [[files]]\nname = \"api.txt\"\nsecret = \"api\"\nmode = \"0640\"\non_change = \"signal:SIGHUP\"\n",
        nodes.join(", ")
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn wait_content(path: &Path, want: &str, timeout: Duration) {
    wait_until(
        &format!("{} to hold the new value", path.display()),
        timeout,
        || {
            let now = read(path);
            if now == want {
                Ok(())
            } else {
                Err(format!("{} bytes", now.len()))
            }
        },
    );
}

fn restarts(f: &Fleet, server: &str) -> BTreeMap<String, u64> {
    instances(&f.registry, server)
        .unwrap_or_default()
        .iter()
        .map(|i| {
            (
                i["node"].as_str().unwrap_or("").to_string(),
                i["restarts"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// A value put for one node reaches only that node's instance, 0600 (a template that
/// read it too); the other node holds its own value and nothing of this one, anywhere in
/// its data dir. Putting a value again makes a new version that reaches the instance
/// per `on_change`: a restart for the token, SIGHUP (and no restart) for the API file.
#[test]
fn a_node_secret_reaches_only_its_instance_0600_and_rotates() {
    let f = Fleet::start(2);
    let dir = f.dir.path();
    let (a, b) = (
        format!("TOKEN-A-{:x}", rand::random::<u64>()),
        format!("TOKEN-B-{:x}", rand::random::<u64>()),
    );
    let api = format!("API-{:x}", rand::random::<u64>());
    put_ok(
        &f.registry,
        dir,
        "demo.sec",
        "tok",
        &["--node", "node-a"],
        &a,
    );
    put_ok(
        &f.registry,
        dir,
        "demo.sec",
        "tok",
        &["--node", "node-b"],
        &b,
    );
    put_ok(&f.registry, dir, "demo.sec", "api", &["--all"], &api);
    f.registry.apply(&spec(&["node-a", "node-b"]));

    for (node, mine, theirs) in [("node-a", &a, &b), ("node-b", &b, &a)] {
        let tok = f.instance_file(node, "demo.sec", "conf/tok.pem");
        wait_content(&tok, mine, 30 * S);
        assert_eq!(mode(&tok), 0o600, "{}", tok.display());
        let conf = f.instance_file(node, "demo.sec", "conf/app.conf");
        wait_content(&conf, &format!("node={node}\ntoken={mine}"), 10 * S);
        assert_eq!(
            mode(&conf),
            0o600,
            "a template that read a secret is a secret"
        );
        let api_file = f.instance_file(node, "demo.sec", "conf/api.txt");
        wait_content(&api_file, &api, 10 * S);
        assert_eq!(mode(&api_file), 0o640, "the spec's mode");
        let data_dir = &f.agent(node).data_dir;
        assert_eq!(mode(&data_dir.join("desired.pb")), 0o600);
        // The other node's value is nowhere on this node.
        let seen: Vec<(String, Vec<u8>)> = files_under(data_dir)
            .into_iter()
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read(&p).unwrap_or_default(),
                )
            })
            .collect();
        assert!(
            !holding(&seen, mine).is_empty(),
            "positive control: {node} holds its value"
        );
        let leaks = holding(&seen, theirs);
        assert!(
            leaks.is_empty(),
            "{node} holds the other node's value in {leaks:?}"
        );
    }
    wait_until("both instances running", 20 * S, || {
        let all = instances(&f.registry, "demo.sec")?;
        if all.len() == 2 && all.iter().all(|i| i["state"] == "running") {
            Ok(())
        } else {
            Err(format!("{all:?}"))
        }
    });
    let before = restarts(&f, "demo.sec");

    // A new token for node-a: version 3 (the name's third put), and a restart there only.
    let a2 = format!("TOKEN-A2-{:x}", rand::random::<u64>());
    let out = put_ok(
        &f.registry,
        dir,
        "demo.sec",
        "tok",
        &["--node", "node-a"],
        &a2,
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("version 3"), "{said}");
    assert!(!said.contains(&a2));
    wait_content(
        &f.instance_file("node-a", "demo.sec", "conf/tok.pem"),
        &a2,
        20 * S,
    );
    wait_until("node-a restarted for its new token", 20 * S, || {
        let now = restarts(&f, "demo.sec");
        if now["node-a"] > before["node-a"] {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    });
    assert_eq!(
        read(&f.instance_file("node-b", "demo.sec", "conf/tok.pem")),
        b
    );
    assert_eq!(
        restarts(&f, "demo.sec")["node-b"],
        before["node-b"],
        "node-b kept running"
    );

    // A new API value for every instance: SIGHUP, no restart.
    let before = restarts(&f, "demo.sec");
    let api2 = format!("API2-{:x}", rand::random::<u64>());
    put_ok(&f.registry, dir, "demo.sec", "api", &["--all"], &api2);
    for node in ["node-a", "node-b"] {
        wait_content(
            &f.instance_file(node, "demo.sec", "conf/api.txt"),
            &api2,
            20 * S,
        );
        let log = f.instance_file(node, "demo.sec", "logs/stdout.log");
        wait_until(&format!("{node} got SIGHUP"), 20 * S, || {
            let l = lines(&log);
            if l.iter().any(|l| l == "got-hup") {
                Ok(())
            } else {
                Err(format!("{l:?}"))
            }
        });
    }
    assert_eq!(restarts(&f, "demo.sec"), before, "a signal, not a restart");

    let list = f.registry.json(&["secret", "list", "demo.sec"]);
    let text = list.to_string();
    for v in [&a, &b, &a2, &api, &api2] {
        assert!(
            !text.contains(v.as_str()),
            "secret list shows a value: {text}"
        );
    }
    let versions: Vec<(String, String, u64)> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_string(),
                format!(
                    "{} {}",
                    s["scope"].as_str().unwrap_or(""),
                    s["node"].as_str().unwrap_or("")
                ),
                s["version"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        versions,
        vec![
            ("api".into(), "all ".into(), 2),
            ("tok".into(), "node node-a".into(), 3),
            ("tok".into(), "node node-b".into(), 2),
        ]
    );
}

/// What an operator can get wrong, refused with a message that names it and nothing
/// half-done: a spec that reads a secret an instance has no value for (apply and
/// expand), removing a secret the spec still needs, values that cannot be secrets, and a
/// call without the admin token.
#[test]
fn missing_secrets_and_bad_input_are_refused_clearly() {
    let f = Fleet::start_with(3, &["--admin-token", "s3cr3t-admin"]);
    let dir = f.dir.path();
    let r = &f.registry;
    put_ok(r, dir, "demo.sec", "tok", &["--node", "node-a"], "value-a");
    put_ok(r, dir, "demo.sec", "api", &["--all"], "value-api");
    // node-b has no token: nothing is applied, and the message says what is missing where.
    let out = r.try_apply(&spec(&["node-a", "node-b"]), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("secret \"tok\" is not set") && err.contains("node-b"),
        "{err}"
    );
    assert!(!err.contains("value-a"), "{err}");
    let servers = r.json(&["server", "list"]);
    assert_eq!(servers.as_array().map(Vec::len), Some(0), "{servers}");

    put_ok(r, dir, "demo.sec", "tok", &["--ordinal", "1"], "value-ord1");
    r.apply(&spec(&["node-a", "node-b"]));
    wait_content(
        &f.instance_file("node-b", "demo.sec", "conf/tok.pem"),
        "value-ord1",
        30 * S,
    );
    // node-c would be ordinal 2, with no value: expand is refused, nothing added.
    let out = r.cli(&["server", "expand", "demo.sec", "--to", "node-c"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("node-c") && err.contains("tok"),
        "{err}"
    );
    assert_eq!(instances(r, "demo.sec").expect("status").len(), 2);

    // The spec needs the ordinal's value for node-b: removing it is refused, naming the spec.
    let out = r.cli(&["secret", "rm", "demo.sec", "tok", "--ordinal", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("used by the spec demo.sec")
            && err.contains("node-b"),
        "{err}"
    );
    // With a value for every instance, it can go.
    put_ok(r, dir, "demo.sec", "tok", &["--all"], "value-all");
    let out = r.cli(&["secret", "rm", "demo.sec", "tok", "--ordinal", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_content(
        &f.instance_file("node-b", "demo.sec", "conf/tok.pem"),
        "value-all",
        30 * S,
    );
    let out = r.cli(&["secret", "rm", "demo.sec", "tok", "--ordinal", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("has no secret tok"),
        "{err}"
    );

    // Values and names that cannot be secrets.
    let bad = [
        (vec!["--all"], "", "is empty"),
        (vec!["--node", "bad node"], "x", "--node"),
    ];
    for (scope, value, want) in bad {
        let out = put(r, dir, "demo.sec", "tok", &scope, value);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{scope:?}: {err}"
        );
    }
    let out = put(r, dir, "demo.sec", "../etc", &["--all"], "x");
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret name"));
    let out = put(r, dir, "demo", "tok", &["--all"], "x");
    assert!(String::from_utf8_lossy(&out.stderr).contains("APP.SERVER"));
    let bin = dir.join("binary");
    std::fs::write(&bin, [0xff, 0xfe, 0x00]).expect("write");
    let out = r.cli(&[
        "secret",
        "put",
        "demo.sec",
        "tok",
        "--all",
        "--file",
        bin.to_str().expect("utf8"),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not UTF-8"));
    let out = r.cli(&[
        "secret",
        "put",
        "demo.sec",
        "tok",
        "--file",
        bin.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(2), "a scope is required");
    let out = r.cli(&[
        "secret", "put", "demo.sec", "tok", "--all", "--node", "node-a", "--file", "x",
    ]);
    assert_eq!(out.status.code(), Some(2), "one scope only");

    // Admin tokens gate every secret call.
    for args in [
        vec!["secret", "list"],
        vec!["secret", "rm", "demo.sec", "api", "--all"],
        vec![
            "secret",
            "put",
            "demo.sec",
            "x",
            "--all",
            "--file",
            bin.to_str().expect("utf8"),
        ],
    ] {
        let out = std::process::Command::new(corral_tests::bin("registry"))
            .args(&args)
            .args(["--addr", &r.addr()])
            .env_remove("CORRAL_TOKEN")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.to_lowercase().contains("token"),
            "{args:?}: {err}"
        );
    }
}

/// A file holding a secret belongs to the user the service runs as (the agent runs as
/// root here), so the service can read it and nobody else can.
#[test]
fn secret_files_belong_to_the_services_user() {
    use std::os::unix::fs::MetadataExt;
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("look up nobody")
        .expect("a user named nobody");
    let f = Fleet::start(1);
    let dir = f.dir.path();
    let value = format!("OWNED-{:x}", rand::random::<u64>());
    put_ok(&f.registry, dir, "demo.own", "tok", &["--all"], &value);
    f.registry.apply(
        "app = \"demo\"\nserver = \"own\"\nnodes = [\"node-a\"]\nuser = \"nobody\"\n\
         command = [\"sh\", \"-c\", \"wc -c < conf/tok.pem; exec sleep 100000\"]\n\
         [[files]]\nname = \"tok.pem\"\nsecret = \"tok\"\n",
    );
    let path = f.instance_file("node-a", "demo.own", "conf/tok.pem");
    wait_content(&path, &value, 30 * S);
    let meta = std::fs::metadata(&path).expect("metadata");
    assert_eq!(
        (meta.uid(), meta.gid(), mode(&path)),
        (nobody.uid.as_raw(), nobody.gid.as_raw(), 0o600)
    );
    // The service, as nobody, read it: it printed the value's length.
    let log = f.instance_file("node-a", "demo.own", "logs/stdout.log");
    wait_until("the service to read its file", 30 * S, || {
        let l = lines(&log);
        if l.first().map(|s| s.trim()) == Some(value.len().to_string().as_str()) {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    });
}
