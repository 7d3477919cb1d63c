//! Config templates that converge: ordinals, templated `env`, templates checked at apply
//! with real data, renders that settle before they are delivered, config restarts that
//! roll, and a config that still restarts an instance too often, held.

use std::time::Duration;

use corral_tests::fleet::{Fleet, instances, lines};
use corral_tests::wait_until;
use serde_json::Value;

const S: Duration = Duration::from_secs(1);

fn ordinals(f: &Fleet, server: &str) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = instances(&f.registry, server)
        .expect("status")
        .iter()
        .map(|i| {
            (
                i["node"].as_str().unwrap_or("").to_string(),
                i["ordinal"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    out.sort();
    out
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Ordinals are 0-based within a server, kept across restarts, and a new instance takes
/// the lowest free one; the service sees its own as `CORRAL_ORDINAL`, and `env` values
/// are templates over the same variables.
#[test]
fn ordinals_are_stable_and_reach_the_service() {
    let f = Fleet::start(4);
    f.registry.apply(
        "app = \"demo\"\nserver = \"ord\"\nnodes = [\"node-a\", \"node-b\", \"node-c\"]\n\
         command = [\"sh\", \"-c\", \"echo ordinal=$CORRAL_ORDINAL id=$PEER_ID; exec sleep 1000\"]\n\
         env = { PEER_ID = \"peer-{{ ordinal }}-{{ node }}\" }\n",
    );
    let expect = |node: &str, ordinal: u64| {
        let log = f.instance_file(node, "demo.ord", "logs/stdout.log");
        let want = format!("ordinal={ordinal} id=peer-{ordinal}-{node}");
        wait_until(&format!("{node} prints {want}"), 30 * S, || {
            let l = lines(&log);
            if l.last() == Some(&want) {
                Ok(())
            } else {
                Err(format!("{l:?}"))
            }
        });
    };
    for (node, n) in [("node-a", 0), ("node-b", 1), ("node-c", 2)] {
        expect(node, n);
    }
    ok(&f.registry.cli(&["server", "restart", "demo.ord"]));
    wait_until("every instance restarted", 30 * S, || {
        let all = instances(&f.registry, "demo.ord")?;
        if all
            .iter()
            .all(|i| i["restarts"] == 1 && i["state"] == "running")
        {
            Ok(())
        } else {
            Err(Value::Array(all).to_string())
        }
    });
    assert_eq!(
        ordinals(&f, "demo.ord"),
        [
            ("node-a".into(), 0),
            ("node-b".into(), 1),
            ("node-c".into(), 2)
        ],
        "kept across restarts"
    );
    ok(&f
        .registry
        .cli(&["server", "undeploy", "demo.ord", "--node", "node-b"]));
    ok(&f
        .registry
        .cli(&["server", "expand", "demo.ord", "--to", "node-d"]));
    assert_eq!(
        ordinals(&f, "demo.ord"),
        [
            ("node-a".into(), 0),
            ("node-c".into(), 2),
            ("node-d".into(), 1)
        ],
        "the new instance takes the lowest free ordinal"
    );
    expect("node-d", 1);
}

/// A template is rendered at apply for every instance with the ports it really gets
/// (`ports.P2P` of an auto port used to be refused at apply, then work at run time); a
/// template that fails for one instance names the file, line, node and instance, and
/// nothing is applied.
#[test]
fn templates_are_checked_with_real_data_at_apply() {
    let f = Fleet::start(2);
    let spec = |template: &str| {
        format!(
            "app = \"demo\"\nserver = \"tpl\"\nnodes = [\"node-a\", \"node-b\"]\ncommand = [\"sleep\", \"1000\"]\n\
             [[adapters]]\nname = \"P2P\"\nport = \"auto\"\n\
             [[config]]\nname = \"me.conf\"\ntemplate = \"{template}\"\n"
        )
    };
    let dry = f.registry.try_apply(
        &spec("listen={{ node_ip }}:{{ ports.P2P }}"),
        &["--dry-run"],
    );
    let text = ok(&dry);
    assert!(
        text.contains("instance on node-a: ordinal 0, ports P2P:20000")
            && text.contains("instance on node-b: ordinal 1, ports P2P:20000"),
        "a dry run says exactly what would happen: {text}"
    );
    assert_eq!(f.registry.json(&["server", "list"]), serde_json::json!([]));

    // Only node-b's instance fails: the error names it, and nothing is applied.
    let bad = spec("{% if ordinal == 1 %}\\n{{ ports.RPC }}{% endif %}");
    let out = f.registry.try_apply(&bad, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config[0].template: line 2")
            && err.contains("file me.conf")
            && err.contains("node node-b")
            && err.contains("instance demo.tpl@node-b")
            && !err.contains("node-a"),
        "{err}"
    );
    assert_eq!(f.registry.json(&["server", "list"]), serde_json::json!([]));

    f.registry
        .apply(&spec("listen={{ node_ip }}:{{ ports.P2P }}"));
    for a in &f.agents {
        let path = a.instance_dir("demo.tpl").join("conf/me.conf");
        let want = format!("listen={}:20000", a.ip);
        wait_until(&format!("{} rendered", a.node), 30 * S, || {
            let l = lines(&path);
            if l == [want.clone()] {
                Ok(())
            } else {
                Err(format!("{l:?}"))
            }
        });
    }
    // A name that is not an adapter of a server that exists is an error; a server that
    // does not exist yet is a note.
    let out = f
        .registry
        .try_apply(&spec("{{ endpoints('demo.tpl.Nope') | join(',') }}"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("demo.tpl has no adapter \"Nope\" (it has: P2P)"),
        "{err}"
    );
    let out = f
        .registry
        .try_apply(&spec("{{ endpoints('other.srv.Main') | join(',') }}"), &[]);
    assert!(
        ok(&out).contains("names no server yet"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A burst of changes gives one render and one restart: a consumer with a 3 s quiet
/// time sees two expansions made 1 s apart as one change.
#[test]
fn a_burst_of_changes_gives_one_restart() {
    let f = Fleet::start(4);
    f.registry.apply(
        "app = \"demo\"\nserver = \"pool\"\nnodes = [\"node-a\"]\ncommand = [\"sleep\", \"1000\"]\n",
    );
    f.registry.apply(
        "app = \"demo\"\nserver = \"user\"\nnodes = [\"node-a\"]\ncommand = [\"sleep\", \"1000\"]\n\
         [[config]]\nname = \"pool.txt\"\n\
         template = \"{% for i in instances('demo.pool') %}{{ i.node }}\\n{% endfor %}\"\n\
         render_wait = { min = \"3s\", max = \"20s\" }\n",
    );
    let pool = f.instance_file("node-a", "demo.user", "conf/pool.txt");
    wait_until("the first render", 30 * S, || {
        let l = lines(&pool);
        if l == ["node-a"] {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    });
    ok(&f
        .registry
        .cli(&["server", "expand", "demo.pool", "--to", "node-b"]));
    ok(&f
        .registry
        .cli(&["server", "expand", "demo.pool", "--to", "node-c"]));
    wait_until("one render with both", 30 * S, || {
        let l = lines(&pool);
        if l.len() == 3 {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    });
    let user = f
        .registry
        .wait_instance("demo.user", "node-a", "running", 30 * S, |i| {
            i["state"] == "running"
        });
    assert_eq!(user["restarts"], 1, "one restart for the burst: {user}");
}

/// A config restart that cannot settle (a template that lists a crash-looping server's
/// states) restarts its instance at most `max_per_minute` times; then it is held, with
/// a `config_flapping` event naming the file, and the instance keeps running on its
/// last config.
#[test]
fn a_flapping_config_is_held() {
    let f = Fleet::start(1);
    f.registry.apply(
        "app = \"demo\"\nserver = \"flaky\"\nnodes = [\"node-a\"]\ncommand = [\"sh\", \"-c\", \"sleep 0.2; exit 1\"]\n\
         [restart]\ninitial_delay = \"50ms\"\nmax_delay = \"200ms\"\nmax_quick_failures = 1000000\n",
    );
    f.registry.apply(
        "app = \"demo\"\nserver = \"watcher\"\nnodes = [\"node-a\"]\ncommand = [\"sleep\", \"1000\"]\n\
         [[config]]\nname = \"flaky.txt\"\n\
         template = \"{% for i in instances('demo.flaky') %}{{ i.state }} {{ i.healthy }}{% endfor %}\"\n\
         render_wait = { min = \"100ms\", max = \"500ms\" }\n\
         [config_restart]\nmax_per_minute = 3\n",
    );
    let held = wait_until("the watcher's config held", 60 * S, || {
        let i = f.registry.instance("demo.watcher", "node-a")?;
        if i["config_hold"] == "flaky.txt" {
            Ok(i)
        } else {
            Err(i.to_string())
        }
    });
    assert_eq!(held["restarts"], 3, "{held}");
    // The event row follows the hold by up to one writer round of the registry.
    wait_until("the config_flapping event", 20 * S, || {
        let events = f.registry.events("demo.watcher");
        if events.iter().any(|e| {
            e["to"] == "config_flapping"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("flaky.txt"))
        }) {
            Ok(())
        } else {
            Err(format!("{events:?}"))
        }
    });
    // Held: the watcher is not restarted again while the flaky server keeps flapping.
    let flaky = |f: &Fleet| {
        f.registry.instance("demo.flaky", "node-a").expect("flaky")["restarts"]
            .as_u64()
            .unwrap_or(0)
    };
    let seen = flaky(&f);
    wait_until("the flaky server to restart 10 more times", 60 * S, || {
        if flaky(&f) >= seen + 10 {
            Ok(())
        } else {
            Err(flaky(&f).to_string())
        }
    });
    let now = f
        .registry
        .instance("demo.watcher", "node-a")
        .expect("watcher");
    assert_eq!(now["restarts"], 3, "no more config restarts: {now}");
    assert_eq!(now["state"], "running", "{now}");
}

/// A registry restart restarts nothing, even services whose config lists endpoints: while
/// the agents reconnect, what `endpoints()` lists is not the fleet yet, and the renderer
/// does not trust it until they are back.
#[test]
fn a_registry_restart_restarts_no_service_with_an_endpoints_config() {
    let mut f = Fleet::start(2);
    f.registry.apply(&format!(
        "app = \"demo\"\nserver = \"mesh\"\nnodes = [\"node-a\", \"node-b\"]\ncommand = [{:?}]\n\
         [[adapters]]\nname = \"Main\"\nport = \"auto\"\n\
         [health]\nkind = \"http\"\ninterval = \"100ms\"\nstart_period = \"1s\"\n\
         [[config]]\nname = \"peers.txt\"\n\
         template = \"{{% for e in endpoints('demo.mesh.Main') %}}{{{{ e }}}}\\n{{% endfor %}}\"\n\
         render_wait = {{ min = \"200ms\", max = \"1s\" }}\n",
        corral_tests::fleet::testsvc()
    ));
    for node in ["node-a", "node-b"] {
        let path = f.instance_file(node, "demo.mesh", "conf/peers.txt");
        wait_until(&format!("two peers on {node}"), 60 * S, || {
            let l = lines(&path);
            if l.len() == 2 {
                Ok(())
            } else {
                Err(format!("{l:?}"))
            }
        });
    }
    let restarts = |f: &Fleet| -> Vec<u64> {
        instances(&f.registry, "demo.mesh")
            .unwrap_or_default()
            .iter()
            .map(|i| i["restarts"].as_u64().unwrap_or(0))
            .collect()
    };
    // Settled: the same restart counts for a while.
    let mut before = restarts(&f);
    wait_until("the mesh to settle", 60 * S, || {
        std::thread::sleep(std::time::Duration::from_secs(3));
        let now = restarts(&f);
        if now == before {
            Ok(())
        } else {
            let msg = format!("{before:?} -> {now:?}");
            before = now;
            Err(msg)
        }
    });
    f.registry.restart();
    for node in ["node-a", "node-b"] {
        f.registry
            .wait_node(node, "up again", 30 * S, |v| v["state"] == "up");
    }
    // Past the renderer's wait for agents to come back (half the node timeout, 5 s) and
    // a render wait more, nothing restarted.
    let start = std::time::Instant::now();
    while start.elapsed() < 10 * S {
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert_eq!(
            restarts(&f),
            before,
            "a registry restart restarted a service"
        );
    }
}
