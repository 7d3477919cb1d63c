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

fn string(s: &str) -> Value {
    Value::String(s.to_string())
}

fn int(n: u32) -> Value {
    Value::Integer(i64::from(n))
}

/// A TOML document written in the order a person reads a spec, values inline.
#[derive(Default)]
struct Doc(String);

impl Doc {
    fn line(&mut self, key: &str, value: &Value) {
        self.0.push_str(&format!("{key} = {value}\n"));
    }

    fn table(&mut self, header: &str) {
        self.0.push_str(&format!("\n{header}\n"));
    }

    /// A template: a multi-line literal string when it can be one (exactly the text,
    /// no escapes), else a basic string with escapes.
    fn text(&mut self, key: &str, text: &str) {
        if text.contains('\n') && !text.contains("'''") && !text.contains('\r') {
            self.0.push_str(&format!("{key} = '''\n{text}'''\n"));
        } else {
            self.line(key, &string(text));
        }
    }
}

/// The spec as a TOML document that [`super::parse`] turns back into the same spec.
pub fn to_toml(spec: &Spec) -> String {
    let mut d = Doc::default();
    d.0.push_str(&format!(
        "# {} as it runs now (`registry server export`); `registry apply -f` of this file changes nothing.\n",
        spec.name()
    ));
    d.line("app", &string(&spec.app));
    d.line("server", &string(&spec.server));
    if let Some((host, port)) = &spec.external {
        d.line("kind", &string("external"));
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        d.line("address", &string(&format!("{host}:{port}")));
    }
    d.line("nodes", &strings(&spec.nodes));
    if spec.external.is_none() {
        d.line("command", &strings(&spec.command));
    }
    d.line("state", &string(spec.state.as_str()));
    if let Some(user) = &spec.user {
        d.line("user", &string(user));
    }
    if let Some(package) = &spec.package {
        d.line("package", &string(package));
    }
    let env: Table = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), string(v)))
        .collect();
    d.line("env", &Value::Table(env));
    for a in &spec.adapters {
        d.table("[[adapters]]");
        d.line("name", &string(&a.name));
        let port = if a.port == 0 {
            string("auto")
        } else {
            Value::Integer(i64::from(a.port))
        };
        d.line("port", &port);
        d.0.push_str(&super::meta::export_adapter(&spec.metadata, &a.name));
    }
    let r = &spec.restart;
    d.table("[restart]");
    d.line("policy", &string(&r.policy));
    d.line("min_uptime", &duration(r.min_uptime));
    d.line("initial_delay", &duration(r.initial_delay));
    d.line("max_delay", &duration(r.max_delay));
    d.line("max_quick_failures", &int(r.max_quick_failures));
    d.table("[stop]");
    d.line("signal", &string(&spec.stop.signal));
    d.line("timeout", &duration(spec.stop.timeout));
    if let Some(h) = &spec.health {
        d.table("[health]");
        d.line("kind", &string(&h.kind));
        if let Some(a) = &h.adapter {
            d.line("adapter", &string(a));
        }
        d.line("path", &string(&h.path));
        if !h.command.is_empty() {
            d.line("command", &strings(&h.command));
        }
        d.line("interval", &duration(h.interval));
        d.line("timeout", &duration(h.timeout));
        d.line("start_period", &duration(h.start_period));
        d.line("healthy_after", &int(h.healthy_after));
        d.line("unhealthy_after", &int(h.unhealthy_after));
        d.line("restart_after", &int(h.restart_after));
    }
    for c in spec.configs.iter().filter(|c| c.secret.is_none()) {
        d.table("[[config]]");
        d.line("name", &string(&c.name));
        d.text("template", &c.template);
        d.line("on_change", &string(&c.on_change));
        let wait: Table = [
            ("min".to_string(), duration(c.wait_min)),
            ("max".to_string(), duration(c.wait_max)),
        ]
        .into_iter()
        .collect();
        d.line("render_wait", &Value::Table(wait));
    }
    for c in &spec.configs {
        let Some(secret) = &c.secret else { continue };
        d.table("[[files]]");
        d.line("name", &string(&c.name));
        d.line("secret", &string(secret));
        let mode = c.mode.unwrap_or(super::files::DEFAULT_MODE);
        d.line("mode", &string(&super::files::mode_text(mode)));
        d.line("on_change", &string(&c.on_change));
    }
    if let Some(r) = &spec.resources {
        d.0.push_str(&super::resources::export(r));
    }
    d.table("[config_restart]");
    d.line("batch", &int(spec.config_restart.batch));
    d.line("max_per_minute", &int(spec.config_restart.max_per_minute));
    d.0.push_str(&super::meta::export_metrics(&spec.metadata));
    d.0
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
[resources]
memory = "256MiB"
cpu = 1.5
cpu_weight = 200
pids = 512
"#,
        );
        round_trip(
            "app = \"fabric\"\nserver = \"cc\"\nkind = \"external\"\naddress = \"10.0.0.9:7052\"\nnodes = [\"a\"]\n\
             [health]\nkind = \"tcp\"\n",
        );
        round_trip(
            r#"app = "m"
server = "meta"
nodes = ["node-a", "node-b"]
command = ["bin/m"]
[[adapters]]
name = "Main"
port = "auto"
weight = 10
tags = ["v2", "zone:a"]
meta = { zone = "a", "rack-id" = "r1" }
[[adapters.override]]
ordinal = 0
weight = 5
[[adapters.override]]
node = "node-b"
tags = []
meta = { zone = "b" }
[[adapters]]
name = "Metrics"
port = "auto"
[metrics]
adapter = "Metrics"
path = "/prom"
"#,
        );
        round_trip(
            "app = \"x\"\nserver = \"y\"\nnodes = [\"a\"]\ncommand = [\"c\"]\n[health]\nkind = \"exec\"\ncommand = [\"bin/check\", \"-q\"]\n",
        );
    }
}
