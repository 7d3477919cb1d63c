use std::time::Duration;

use super::*;

const FULL: &str = r#"
app = "demo"
server = "echo"
nodes = ["node-a", "node-b"]
command = ["bin/echo", "--flag"]
env = { RUST_LOG = "info" }
user = "svc"
state = "running"
[[adapters]]
name = "Main"
port = 20001
[restart]
policy = "on-failure"
min_uptime = "5s"
initial_delay = "100ms"
max_delay = "30s"
max_quick_failures = 10
[stop]
signal = "SIGINT"
timeout = "10s"
"#;

#[test]
fn a_full_spec_parses() {
    let spec = parse(FULL, "demo.toml").expect("valid");
    assert_eq!(spec.name(), "demo.echo");
    assert_eq!(spec.nodes, ["node-a", "node-b"]);
    assert_eq!(spec.command, ["bin/echo", "--flag"]);
    assert_eq!(spec.env.get("RUST_LOG").map(String::as_str), Some("info"));
    assert_eq!(spec.user.as_deref(), Some("svc"));
    assert_eq!(
        spec.adapters,
        [Adapter {
            name: "Main".into(),
            port: 20001
        }]
    );
    assert_eq!(spec.restart.policy, "on-failure");
    assert_eq!(spec.restart.initial_delay, Duration::from_millis(100));
    assert_eq!(spec.stop.signal, "SIGINT");
    // It survives the trip through the database's JSON.
    let json = serde_json::to_string(&spec).expect("json");
    assert_eq!(serde_json::from_str::<Spec>(&json).expect("back"), spec);
}

#[test]
fn defaults_fill_what_is_left_out() {
    let spec = parse(
        "app = \"a\"\nserver = \"b\"\nnodes = [\"n\"]\ncommand = [\"sleep\", \"1\"]\n",
        "s.toml",
    )
    .expect("valid");
    assert_eq!(spec.state, RunState::Running);
    assert_eq!(spec.restart.policy, "always");
    assert_eq!(spec.restart.min_uptime, defaults::MIN_UPTIME);
    assert_eq!(
        spec.restart.max_quick_failures,
        defaults::MAX_QUICK_FAILURES
    );
    assert_eq!(spec.stop.signal, "SIGTERM");
    assert_eq!(spec.stop.timeout, defaults::STOP_TIMEOUT);
}

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    let bad = r#"
app = "de mo"
nodes = ["node-a", "node-a", "bad/name"]
command = []
env = { "1X" = "a", CORRAL_NODE = "x", N = 3 }
state = "paused"
colour = "blue"
[[adapters]]
name = "Main"
port = 70000
[[adapters]]
name = "Main"
port = 20001
extra = 1
[restart]
policy = "sometimes"
min_uptime = "5x"
initial_delay = "1m"
max_delay = "1s"
[stop]
signal = "SIGKILL"
timeout = 3
"#;
    let errors = parse(bad, "bad.toml").expect_err("invalid").0;
    let expect = [
        "app: app \"de mo\"",
        "server: is required",
        "nodes[1]: node \"node-a\" is listed twice",
        "nodes[2]: node name \"bad/name\"",
        "command: must start with a program",
        "env.1X: is not a valid variable name",
        "env.CORRAL_NODE: CORRAL_* variables are set by the agent",
        "env.N: must be a string, not an integer",
        "state: \"paused\" is not a state",
        "colour: unknown field",
        "adapters[0].port: must be between 1 and 65535, not 70000",
        "adapters[1].name: adapter \"Main\" is defined twice",
        "adapters[1].extra: unknown field",
        "restart.policy: \"sometimes\" is not a policy",
        "restart.min_uptime: \"5x\" is not a duration",
        "restart.initial_delay: 60s is longer than restart.max_delay (1s)",
        "stop.signal: \"SIGKILL\" is not a signal a process can handle",
        "stop.timeout: must be a string, not an integer",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in:\n{}",
            errors.join("\n")
        );
    }
    assert_eq!(
        errors.len(),
        expect.len(),
        "unexpected extra errors:\n{}",
        errors.join("\n")
    );
}

#[test]
fn toml_syntax_errors_name_the_file_and_line() {
    let errors = parse("app = \"a\"\nserver = \n", "broken.toml")
        .expect_err("invalid")
        .0;
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("broken.toml: ") && errors[0].contains("line 2"),
        "{}",
        errors[0]
    );
}

#[test]
fn changes_are_described() {
    let old = parse(FULL, "a").expect("valid");
    assert_eq!(
        describe_changes(Some(&old), &old, false),
        Vec::<String>::new()
    );
    let mut new = old.clone();
    new.nodes = vec!["node-b".into(), "node-c".into()];
    new.command = vec!["bin/echo".into()];
    new.env.insert("X".into(), "1".into());
    let lines = describe_changes(Some(&old), &new, false);
    assert_eq!(lines[0], "add instances on node-c");
    assert_eq!(lines[1], "remove instances on node-a (stopping them)");
    assert_eq!(
        describe_changes(Some(&old), &new, true)[1],
        "remove instances on node-a (they would be stopped)",
        "a dry run stops nothing"
    );
    assert!(lines[2].starts_with("command: "));
    assert_eq!(lines[3], "env.X: set to \"1\"");
    assert_eq!(
        describe_changes(None, &old, false),
        ["create server demo.echo on node-a, node-b (2 instances)"]
    );
}

#[test]
fn huge_values_are_not_echoed() {
    let spec = format!(
        "app = \"{}\"\nserver = \"s\"\nnodes = [\"n\"]\ncommand = [\"x\"]\nstate = \"{}\"\n",
        "a".repeat(1 << 20),
        "p".repeat(1 << 20)
    );
    let errors = parse(&spec, "big.toml").expect_err("invalid").0;
    assert_eq!(errors[0], "app: app name is 1048576 bytes; the limit is 63");
    assert!(errors.iter().all(|e| e.len() < 600), "{errors:?}");
}

#[test]
fn many_problems_show_the_first_and_a_count() {
    let nodes: Vec<String> = (0..10_000).map(|i| format!("\"bad/{i}\"")).collect();
    let spec = format!(
        "app = \"a\"\nserver = \"s\"\nnodes = [{}]\ncommand = [\"x\"]\n",
        nodes.join(",")
    );
    let errors = parse(&spec, "many.toml").expect_err("invalid");
    assert_eq!(errors.0.len(), 10_000);
    let text = errors.to_string();
    assert_eq!(text.lines().count(), PROBLEMS_SHOWN + 1, "{text}");
    assert!(text.ends_with("… and 9,980 more problems"), "{text}");
}

#[test]
fn adapters_that_map_to_one_variable_are_refused() {
    for (a, b) in [("Main", "MAIN"), ("a-b", "a_b"), ("p2p", "P2P")] {
        let spec = format!(
            "app = \"a\"\nserver = \"s\"\nnodes = [\"n\"]\ncommand = [\"x\"]\n\
             [[adapters]]\nname = \"{a}\"\nport = \"auto\"\n\
             [[adapters]]\nname = \"{b}\"\nport = \"auto\"\n"
        );
        let errors = parse(&spec, "s.toml").expect_err("duplicate").0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert!(
            e.starts_with("adapters[1].name: ")
                && e.contains(&format!("{a:?}"))
                && e.contains(&format!("{b:?}"))
                && e.contains(&corral_proto::names::port_env_var(a)),
            "{e}"
        );
    }
}
