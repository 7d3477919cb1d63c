//! `[[files]]`: files in the instance's `conf/` whose content is a secret's value for
//! that instance (`registry secret put`), written 0600 unless `mode` says otherwise.
//!
//! ```toml
//! [[files]]
//! name = "ssl.key"          # the file in conf/
//! secret = "ssl.key"        # the secret; default: the file's name
//! mode = "0600"             # octal, as a string or 0o600; default 0600
//! on_change = "restart"     # restart | signal:SIGHUP | none
//! ```
//!
//! They are kept with the `[[config]]` templates (`Spec::configs`, with `secret` set), so
//! they are delivered, rolled out and held the same way.

use toml::{Table, Value};

use super::extra::{self, ConfigTemplate, defaults};
use super::{Checker, type_name};

/// The mode of a `[[files]]` entry without one.
pub const DEFAULT_MODE: u32 = 0o600;

pub(super) fn files(
    c: &mut Checker,
    table: &Table,
    earlier: &[ConfigTemplate],
) -> Vec<ConfigTemplate> {
    let mut out: Vec<ConfigTemplate> = Vec::new();
    let Some(value) = table.get("files") else {
        return out;
    };
    let Value::Array(items) = value else {
        c.err(
            "files",
            format!(
                "must be an array of tables ([[files]]), not {}",
                type_name(value)
            ),
        );
        return out;
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("files[{i}]");
        let Value::Table(t) = item else {
            c.err(&path, format!("must be a table, not {}", type_name(item)));
            continue;
        };
        c.unknown_keys(t, &path, &["name", "secret", "mode", "on_change"]);
        let seen: Vec<ConfigTemplate> = earlier.iter().chain(&out).cloned().collect();
        let name = extra::file_name(c, t, &path, &seen);
        let secret = c
            .string(t, "secret", &format!("{path}.secret"))
            .unwrap_or_else(|| name.clone());
        if let Err(e) = crate::secrets::check_name(&secret) {
            c.err(&format!("{path}.secret"), e);
        }
        let mode = mode(c, t, &path);
        let on_change = extra::on_change(c, t, &path);
        out.push(ConfigTemplate {
            name,
            template: String::new(),
            on_change,
            wait_min: defaults::RENDER_WAIT_MIN,
            wait_max: defaults::RENDER_WAIT_MAX,
            secret: Some(secret),
            mode: Some(mode),
        });
    }
    out
}

fn mode(c: &mut Checker, t: &Table, path: &str) -> u32 {
    let field = format!("{path}.mode");
    let parsed = match t.get("mode") {
        None => return DEFAULT_MODE,
        Some(Value::String(s)) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
        Some(Value::Integer(n)) => u32::try_from(*n).ok(),
        Some(other) => {
            c.err(
                &field,
                format!(
                    "must be an octal string like \"0640\", not {}",
                    type_name(other)
                ),
            );
            return DEFAULT_MODE;
        }
    };
    match parsed {
        Some(m) if m <= 0o777 && m & 0o400 != 0 => m,
        _ => {
            c.err(
                &field,
                "must be permission bits from \"0400\" to \"0777\" that let the owner read \
                 (e.g. \"0600\", \"0640\")",
            );
            DEFAULT_MODE
        }
    }
}

/// How a mode is written back in a spec: "0600".
pub fn mode_text(mode: u32) -> String {
    format!("{mode:04o}")
}

#[cfg(test)]
mod tests {
    const BASE: &str = "app = \"a\"\nserver = \"s\"\nnodes = [\"n\"]\ncommand = [\"x\"]\n";

    fn parse(extra: &str) -> Result<crate::spec::Spec, Vec<String>> {
        crate::spec::parse(&format!("{BASE}{extra}"), "spec.toml").map_err(|e| e.0)
    }

    #[test]
    fn files_parse_with_defaults_and_export_back() {
        let spec = parse(
            "[[config]]\nname = \"c.ini\"\ntemplate = \"t={{ secret('tok') }}\"\n\
             [[files]]\nname = \"ssl.key\"\n\
             [[files]]\nname = \"ca.crt\"\nsecret = \"ca\"\nmode = 0o644\non_change = \"none\"\n",
        )
        .expect("valid");
        let files: Vec<_> = spec.configs.iter().filter(|c| c.secret.is_some()).collect();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].secret.as_deref(), Some("ssl.key"));
        assert_eq!(files[0].mode, Some(0o600));
        assert_eq!(files[0].on_change, "restart");
        assert_eq!(
            (files[1].secret.as_deref(), files[1].mode),
            (Some("ca"), Some(0o644))
        );
        let refs = crate::secrets::references(&spec);
        assert_eq!(refs.keys().collect::<Vec<_>>(), ["ca", "ssl.key", "tok"]);
        let exported = crate::spec::to_toml(&spec);
        assert!(exported.contains("[[files]]") && exported.contains("mode = \"0644\""));
        assert_eq!(
            crate::spec::parse(&exported, "export.toml").expect("again"),
            spec
        );
    }

    #[test]
    fn bad_files_name_the_field() {
        let err = parse(
            "[[config]]\nname = \"x\"\ntemplate = \"t\"\n\
             [[files]]\nname = \"x\"\n\
             [[files]]\nname = \"k\"\nmode = \"0999\"\n\
             [[files]]\nname = \"j\"\nmode = \"0200\"\nsecret = \"../s\"\ncolour = 1\n",
        )
        .expect_err("invalid");
        let all = err.join("\n");
        for want in [
            "files[0].name: \"x\" is defined twice",
            "files[1].mode",
            "files[2].mode",
            "files[2].secret",
            "colour",
        ] {
            assert!(all.contains(want), "{want} in {all}");
        }
        let err = parse("files = 3\n").expect_err("not tables");
        assert!(err[0].contains("array of tables"), "{err:?}");
    }
}
