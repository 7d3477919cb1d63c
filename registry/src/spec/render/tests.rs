//! Tests of template rendering.

use super::*;

fn entry(node: &str, ordinal: u32, port: u16) -> InstanceEntry {
    InstanceEntry {
        node: node.into(),
        host: format!("10.0.0.{}", ordinal + 1),
        port,
        ports: BTreeMap::from([("P2P".into(), port)]),
        ordinal,
        state: "running".into(),
        healthy: ordinal == 0,
        weight: 1 + ordinal,
        tags: if ordinal == 0 {
            vec!["v2".into()]
        } else {
            Vec::new()
        },
        meta: BTreeMap::from([("zone".into(), format!("z{ordinal}"))]),
    }
}

fn ep(host: &str, tags: &[&str]) -> corral_proto::v1::Endpoint {
    corral_proto::v1::Endpoint {
        node: "n".into(),
        host: host.into(),
        port: 30300,
        weight: 1,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        meta: BTreeMap::new(),
    }
}

fn tables() -> Tables {
    let mut endpoints = HashMap::new();
    endpoints.insert(
        "chain0.Gateway.P2P".to_string(),
        vec![ep("10.0.0.1", &["v2"]), ep("10.0.0.2", &[])],
    );
    let mut instances = HashMap::new();
    instances.insert(
        "chain0.Gateway.P2P".to_string(),
        vec![entry("node-a", 0, 30300), entry("node-b", 1, 30301)],
    );
    Tables {
        endpoints: Arc::new(endpoints),
        instances: Arc::new(instances),
    }
}

#[test]
fn renders_peers_and_variables() {
    let ctx = RenderContext {
        node: "node-a".into(),
        ports: BTreeMap::from([("P2P".into(), 30300)]),
        ordinal: 2,
        ..RenderContext::default()
    };
    let out = render(
        "{% for e in endpoints('chain0.Gateway.P2P') %}{{ e }}\n{% endfor %}me={{ node }}:{{ ports.P2P }}#{{ ordinal }}",
        &ctx,
        &tables(),
    )
    .expect("renders");
    assert_eq!(
        out.content,
        "10.0.0.1:30300\n10.0.0.2:30300\nme=node-a:30300#2"
    );
    assert_eq!(
        out.endpoints,
        BTreeSet::from(["chain0.Gateway.P2P".to_string()])
    );
    assert!(out.instances.is_empty());
}

#[test]
fn instances_lists_every_assigned_instance_with_its_fields() {
    let out = render(
        "{% for i in instances('chain0.Gateway.P2P') %}{{ i.ordinal }} {{ i.node }} {{ i.host }}:{{ i.port }} {{ i.state }} {{ i.healthy }}\n{% endfor %}",
        &RenderContext::default(),
        &tables(),
    )
    .expect("renders");
    assert_eq!(
        out.content,
        "0 node-a 10.0.0.1:30300 running True\n1 node-b 10.0.0.2:30301 running False\n"
    );
    assert!(out.endpoints.is_empty(), "instances() is not liveness");
    let json = render(
        "{{ instances('chain0.Gateway.P2P') | map(attribute='node') | list | tojson }}",
        &RenderContext::default(),
        &tables(),
    )
    .expect("tojson");
    assert_eq!(json.content, r#"["node-a","node-b"]"#);
}

#[test]
fn tags_filter_and_metadata_reach_templates() {
    let out = render(
        "{{ endpoints('chain0.Gateway.P2P', tag='v2') | join(',') }};\
         {% for i in instances('chain0.Gateway.P2P') %}{{ i.node }} w={{ i.weight }} \
         tags={{ i.tags | join('+') }} zone={{ i.meta.zone }};{% endfor %}\
         {{ instances('chain0.Gateway.P2P', tag='v2') | length }}",
        &RenderContext::default(),
        &tables(),
    )
    .expect("renders");
    assert_eq!(
        out.content,
        "10.0.0.1:30300;node-a w=1 tags=v2 zone=z0;node-b w=2 tags= zone=z1;1"
    );
    let err = render(
        "{{ endpoints('chain0.Gateway.P2P', colour='red') }}",
        &RenderContext::default(),
        &tables(),
    )
    .expect_err("unknown keyword");
    assert!(err.message.contains("colour"), "{err}");
}

#[test]
fn errors_name_the_line() {
    let err = check_syntax("ok\n{% for x in %}\n").expect_err("syntax");
    assert_eq!(err.line, Some(2), "{err}");
    let err =
        render("a\n{{ nodee }}", &sample_context(), &Tables::default()).expect_err("undefined");
    assert!(
        err.to_string().starts_with("line 2") && err.message.contains("undefined"),
        "{err}"
    );
    let err =
        render("{{ ports.P2P }}", &sample_context(), &Tables::default()).expect_err("no such port");
    assert!(err.message.contains("undefined"), "{err}");
}

#[test]
fn runaway_templates_are_stopped() {
    let err = render(
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        &sample_context(),
        &Tables::default(),
    )
    .expect_err("out of fuel");
    assert!(err.message.contains("fuel"), "{err}");
    let err =
        render("{{ 'x' * 2000000 }}", &sample_context(), &Tables::default()).expect_err("too big");
    assert!(err.message.contains("limit"), "{err}");
}

#[test]
fn secrets_render_and_their_errors_do_not_quote_them() {
    let ctx = RenderContext {
        secrets: crate::secrets::SecretValues(Arc::new(BTreeMap::from([(
            "tok".to_string(),
            "s3cr3t-value".to_string(),
        )]))),
        ..sample_context()
    };
    let out = render("t={{ secret('tok') }}", &ctx, &Tables::default()).expect("renders");
    assert_eq!(out.content, "t=s3cr3t-value");
    assert_eq!(out.secrets, BTreeSet::from(["tok".to_string()]));
    let err = render("{{ secret('nope') }}", &ctx, &Tables::default()).expect_err("missing");
    assert!(err.message.contains("\"nope\" is not set"), "{err}");
    let err =
        render("{{ secret('tok') | int + [] }}", &ctx, &Tables::default()).expect_err("type error");
    assert!(
        !err.to_string().contains("s3cr3t") && err.message.contains("withheld"),
        "{err}"
    );
    assert!(render_env("{{ secret('tok') }}", &ctx).is_err());
}

#[test]
fn env_values_take_variables_but_no_functions() {
    let ctx = RenderContext {
        ordinal: 3,
        node: "n".into(),
        ..RenderContext::default()
    };
    assert_eq!(
        render_env("id-{{ ordinal }}-{{ node }}", &ctx).expect("env"),
        "id-3-n"
    );
    assert_eq!(render_env("plain", &ctx).expect("plain"), "plain");
    let err = render_env("{{ endpoints('a.b.C') }}", &ctx).expect_err("no functions");
    assert!(err.message.contains("cannot be used in env"), "{err}");
}
