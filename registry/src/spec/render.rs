//! Config templates, rendered per instance with minijinja.
//!
//! Variables: `app`, `server`, `node`, `node_ip`, `ports` (adapter name to port),
//! `version`, `instance_dir`; function `endpoints(name)`: the sorted `host:port` list of
//! the active endpoints of `APP.SERVER.ADAPTER`. Undefined variables are errors, so a
//! typo is found at apply time rather than rendered as an empty string.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior, context};

/// What a template sees of its instance.
#[derive(Clone, Debug, Default)]
pub struct RenderContext {
    pub app: String,
    pub server: String,
    pub node: String,
    pub node_ip: String,
    pub ports: BTreeMap<String, u16>,
    pub version: String,
    pub instance_dir: String,
}

/// Endpoints by name, as `host:port` strings.
pub type EndpointTable = Arc<HashMap<String, Vec<String>>>;

fn describe(e: &minijinja::Error) -> String {
    let detail = e
        .detail()
        .map_or_else(|| e.kind().to_string(), |d| format!("{}: {d}", e.kind()));
    match e.line() {
        Some(line) => format!("line {line}: {detail}"),
        None => detail,
    }
}

pub fn render(
    template: &str,
    ctx: &RenderContext,
    endpoints: &EndpointTable,
) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let table = endpoints.clone();
    env.add_function("endpoints", move |name: String| -> Vec<String> {
        table.get(&name).cloned().unwrap_or_default()
    });
    env.render_str(
        template,
        context! {
            app => ctx.app,
            server => ctx.server,
            node => ctx.node,
            node_ip => ctx.node_ip,
            ports => ctx.ports,
            version => ctx.version,
            instance_dir => ctx.instance_dir,
        },
    )
    .map_err(|e| describe(&e))
}

/// Checks a template at apply time: it must parse and render for a sample instance.
pub fn check(template: &str) -> Result<(), String> {
    let sample = RenderContext {
        app: "app".into(),
        server: "server".into(),
        node: "node".into(),
        node_ip: "127.0.0.1".into(),
        ports: BTreeMap::new(),
        version: "0.0.0".into(),
        instance_dir: "/var/lib/corral/instances/app.server".into(),
    };
    render(template, &sample, &EndpointTable::default()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_peers_and_variables() {
        let mut table = HashMap::new();
        table.insert(
            "chain0.Gateway.P2P".to_string(),
            vec!["10.0.0.1:30300".to_string(), "10.0.0.2:30300".to_string()],
        );
        let ctx = RenderContext {
            node: "node-a".into(),
            ports: BTreeMap::from([("P2P".into(), 30300)]),
            ..RenderContext::default()
        };
        let out = render(
            "{% for e in endpoints('chain0.Gateway.P2P') %}{{ e }}\n{% endfor %}me={{ node }}:{{ ports.P2P }}",
            &ctx,
            &Arc::new(table),
        )
        .expect("renders");
        assert_eq!(out, "10.0.0.1:30300\n10.0.0.2:30300\nme=node-a:30300");
    }

    #[test]
    fn errors_name_the_line() {
        let err = check("ok\n{% for x in %}\n").expect_err("syntax");
        assert!(err.starts_with("line 2:"), "{err}");
        let err = check("{{ nodee }}").expect_err("undefined");
        assert!(err.contains("line 1") && err.contains("undefined"), "{err}");
        check("{{ endpoints('a.b.C') | join(',') }} {{ app }}").expect("valid");
    }
}
