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
