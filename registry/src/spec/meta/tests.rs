use super::*;
use crate::spec::parse;

fn spec(extra: &str) -> Result<crate::spec::Spec, Vec<String>> {
    parse(
        &format!(
            "app = \"demo\"\nserver = \"m\"\nnodes = [\"node-a\", \"node-b\"]\ncommand = [\"c\"]\n{extra}"
        ),
        "m.toml",
    )
    .map_err(|e| e.0)
}

const FULL: &str = r#"
[[adapters]]
name = "Main"
port = "auto"
weight = 10
tags = ["v2"]
meta = { zone = "a", dc = "x" }
[[adapters.override]]
ordinal = 0
weight = 5
[[adapters.override]]
node = "node-b"
tags = ["canary"]
meta = { zone = "b" }
[[adapters]]
name = "Admin"
port = "auto"
[metrics]
adapter = "Admin"
"#;

#[test]
fn overrides_apply_per_instance() {
    let s = spec(FULL).expect("valid");
    let m = &s.metadata;
    let a = m.effective("Main", "node-a", 0);
    assert_eq!((a.weight, a.tags.as_slice()), (5, &["v2".to_string()][..]));
    assert_eq!(a.meta["zone"], "a");
    let b = m.effective("Main", "node-b", 1);
    assert_eq!(b.weight, 10);
    assert_eq!(b.tags, ["canary"]);
    assert_eq!((b.meta["zone"].as_str(), b.meta["dc"].as_str()), ("b", "x"));
    // An adapter without metadata, and one that is not there: the defaults.
    let admin = m.effective("Admin", "node-a", 0);
    assert_eq!(
        (admin.weight, admin.tags.len(), admin.meta.len()),
        (1, 0, 0)
    );
    assert!(!m.adapters.contains_key("Admin"), "defaults are not stored");
    assert_eq!(
        m.metrics,
        Some(MetricsTarget {
            adapter: "Admin".into(),
            path: None
        })
    );
}

#[test]
fn a_spec_without_metadata_stores_as_before() {
    let s = spec("[[adapters]]\nname = \"Main\"\nport = 1\nweight = 1\ntags = []\n").expect("ok");
    assert!(s.metadata.is_empty());
    let json = serde_json::to_string(&s).expect("json");
    assert!(!json.contains("metadata"), "{json}");
}

#[test]
fn every_problem_is_named() {
    let errors = spec(
        r#"
[[adapters]]
name = "Main"
port = "auto"
weight = 70000
tags = ["ok", "has space", "ok"]
meta = { "bad key" = "x", n = 3 }
colour = "red"
[[adapters.override]]
ordinal = 0
node = "node-a"
weight = 1
[[adapters.override]]
weight = 2
[[adapters.override]]
node = "node-z"
tags = ["x"]
[[adapters.override]]
ordinal = 1
[[adapters.override]]
ordinal = 2
weight = 1
[[adapters.override]]
ordinal = 2
weight = 3
[metrics]
adapter = "Nope"
path = "no-slash"
"#,
    )
    .expect_err("invalid");
    let all = errors.join("\n");
    for needle in [
        "adapters[0].weight: must be between 0 and 65535, not 70000",
        "adapters[0].tags[1]: tag \"has space\" must be",
        "adapters[0].tags[2]: tag \"ok\" is listed twice",
        "adapters[0].meta.bad key: a meta key must be",
        "adapters[0].meta.n: must be a string, not an integer",
        "adapters[0].colour: unknown field",
        "adapters[0].override[0]: names both an ordinal and a node",
        "adapters[0].override[1]: needs `ordinal = N` or `node = \"NAME\"`",
        "adapters[0].override[2].node: \"node-z\" is not one of `nodes`",
        "adapters[0].override[3]: sets nothing",
        "adapters[0].override[5]: ordinal 2 has another override already",
        "metrics.adapter: \"Nope\" is not an adapter of this server (it has: Main)",
        "metrics.path: \"no-slash\" must be a URL path",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    let errors = spec("[metrics]\npath = \"/m\"\nextra = 1\n").expect_err("invalid");
    let all = errors.join("\n");
    assert!(all.contains("metrics.adapter: is required"), "{all}");
    assert!(all.contains("metrics.extra: unknown field"), "{all}");
}
