//! A spec as TOML: what `registry server export` prints. Every field is written out,
//! defaults included, so the file says exactly what runs; `apply` of it changes nothing.

use toml::{Table, Value};

use super::Spec;

fn duration(d: std::time::Duration) -> Value {
    Value::String(humantime::format_duration(d).to_string())
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

fn table(entries: Vec<(&str, Value)>) -> Table {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The spec as a TOML document that [`super::parse`] turns back into the same spec.
pub fn to_toml(spec: &Spec) -> String {
    let mut t = Table::new();
    t.insert("app".into(), Value::String(spec.app.clone()));
    t.insert("server".into(), Value::String(spec.server.clone()));
    if let Some((host, port)) = &spec.external {
        t.insert("kind".into(), Value::String("external".into()));
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        t.insert("address".into(), Value::String(format!("{host}:{port}")));
    }
    t.insert("nodes".into(), strings(&spec.nodes));
    if spec.external.is_none() {
        t.insert("command".into(), strings(&spec.command));
    }
    t.insert(
        "state".into(),
        Value::String(spec.state.as_str().to_string()),
    );
    if let Some(user) = &spec.user {
        t.insert("user".into(), Value::String(user.clone()));
    }
    if let Some(package) = &spec.package {
        t.insert("package".into(), Value::String(package.clone()));
    }
    t.insert(
        "env".into(),
        Value::Table(
            spec.env
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        ),
    );
    t.insert(
        "adapters".into(),
        Value::Array(
            spec.adapters
                .iter()
                .map(|a| {
                    let port = if a.port == 0 {
                        Value::String("auto".into())
                    } else {
                        Value::Integer(i64::from(a.port))
                    };
                    Value::Table(table(vec![
                        ("name", Value::String(a.name.clone())),
                        ("port", port),
                    ]))
                })
                .collect(),
        ),
    );
    let r = &spec.restart;
    t.insert(
        "restart".into(),
        Value::Table(table(vec![
            ("policy", Value::String(r.policy.clone())),
            ("min_uptime", duration(r.min_uptime)),
            ("initial_delay", duration(r.initial_delay)),
            ("max_delay", duration(r.max_delay)),
            (
                "max_quick_failures",
                Value::Integer(i64::from(r.max_quick_failures)),
            ),
        ])),
    );
    t.insert(
        "stop".into(),
        Value::Table(table(vec![
            ("signal", Value::String(spec.stop.signal.clone())),
            ("timeout", duration(spec.stop.timeout)),
        ])),
    );
    if let Some(h) = &spec.health {
        let mut health = table(vec![
            ("kind", Value::String(h.kind.clone())),
            ("path", Value::String(h.path.clone())),
            ("interval", duration(h.interval)),
            ("timeout", duration(h.timeout)),
            ("start_period", duration(h.start_period)),
            ("healthy_after", Value::Integer(i64::from(h.healthy_after))),
            (
                "unhealthy_after",
                Value::Integer(i64::from(h.unhealthy_after)),
            ),
            ("restart_after", Value::Integer(i64::from(h.restart_after))),
        ]);
        if let Some(a) = &h.adapter {
            health.insert("adapter".into(), Value::String(a.clone()));
        }
        if !h.command.is_empty() {
            health.insert("command".into(), strings(&h.command));
        }
        t.insert("health".into(), Value::Table(health));
    }
    if !spec.configs.is_empty() {
        t.insert(
            "config".into(),
            Value::Array(
                spec.configs
                    .iter()
                    .map(|c| {
                        Value::Table(table(vec![
                            ("name", Value::String(c.name.clone())),
                            ("template", Value::String(c.template.clone())),
                            ("on_change", Value::String(c.on_change.clone())),
                            (
                                "render_wait",
                                Value::Table(table(vec![
                                    ("min", duration(c.wait_min)),
                                    ("max", duration(c.wait_max)),
                                ])),
                            ),
                        ]))
                    })
                    .collect(),
            ),
        );
    }
    t.insert(
        "config_restart".into(),
        Value::Table(table(vec![
            (
                "batch",
                Value::Integer(i64::from(spec.config_restart.batch)),
            ),
            (
                "max_per_minute",
                Value::Integer(i64::from(spec.config_restart.max_per_minute)),
            ),
        ])),
    );
    let body = toml::to_string_pretty(&t).unwrap_or_else(|e| format!("# cannot write TOML: {e}\n"));
    format!(
        "# {} as it runs now (`registry server export`); `registry apply -f` of this file changes nothing.\n{body}",
        spec.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) {
        let spec = super::super::parse(text, "spec.toml").expect("valid spec");
        let exported = to_toml(&spec);
        let again = super::super::parse(&exported, "export.toml")
            .unwrap_or_else(|e| panic!("export does not parse: {e}\n{exported}"));
        assert_eq!(again, spec, "{exported}");
        assert_eq!(to_toml(&again), exported, "stable");
    }

    #[test]
    fn every_kind_of_spec_round_trips() {
        round_trip(
            "app = \"demo\"\nserver = \"echo\"\nnodes = [\"a\", \"b\"]\ncommand = [\"bin/echo\", \"--x\"]\n",
        );
        round_trip(
            r#"app = "chain0"
server = "gw"
nodes = ["a"]
command = ["bin/gw"]
user = "svc"
state = "stopped"
package = "1.2.0"
env = { RUST_LOG = "info", ID = "gw-{{ ordinal }}" }
[[adapters]]
name = "P2P"
port = "auto"
[[adapters]]
name = "RPC"
port = 20200
[restart]
policy = "on-failure"
min_uptime = "1m 30s"
initial_delay = "250ms"
[stop]
signal = "SIGINT"
timeout = "3s"
[health]
kind = "http"
adapter = "RPC"
path = "/ready"
interval = "100ms"
restart_after = 3
[[config]]
name = "peers.txt"
template = """
{% for i in instances('chain0.gw.P2P') %}{{ i.host }}:{{ i.port }}
{% endfor %}"""
on_change = "signal:SIGHUP"
render_wait = { min = "1s", max = "10s" }
[config_restart]
batch = 2
max_per_minute = 3
"#,
        );
        round_trip(
            "app = \"fabric\"\nserver = \"cc\"\nkind = \"external\"\naddress = \"10.0.0.9:7052\"\nnodes = [\"a\"]\n\
             [health]\nkind = \"tcp\"\n",
        );
        round_trip(
            "app = \"x\"\nserver = \"y\"\nnodes = [\"a\"]\ncommand = [\"c\"]\n[health]\nkind = \"exec\"\ncommand = [\"bin/check\", \"-q\"]\n",
        );
    }
}
