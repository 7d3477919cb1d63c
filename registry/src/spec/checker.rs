//! Walking a spec's TOML table and collecting every problem with its field path: the
//! checks every section of a spec is made of.

use std::time::Duration;

use corral_proto::text::{first_problems, quoted};
use toml::{Table, Value};

/// Every problem found in a spec, one per line, each with its field path.
#[derive(Debug, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<String>);

/// A message shows this many problems of a spec, then how many more there are: 10,000
/// bad node names make one screen, not 10,000 lines (nor a status too big to send).
pub const PROBLEMS_SHOWN: usize = 20;

/// One problem line is cut past this many bytes (a huge key in its field path, say).
const PROBLEM_MAX: usize = 512;

impl std::fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", first_problems(&self.0, PROBLEMS_SHOWN))
    }
}

/// Walks a table, collecting problems under a path prefix.
pub(crate) struct Checker {
    pub(crate) errors: Vec<String>,
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

pub(crate) fn is_name(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

/// Checks an app, server or adapter name; the error states a length before any
/// echo, so a huge value reads "app name is 1048576 bytes; the limit is 63".
pub(crate) fn check_name(what: &str, value: &str, extra: &[char]) -> Result<(), String> {
    if value.len() > 63 {
        return Err(format!(
            "{what} name is {} bytes; the limit is 63",
            value.len()
        ));
    }
    if !is_name(value, extra) {
        return Err(format!("{what} {value:?} must match [A-Za-z0-9_-]{{1,63}}"));
    }
    Ok(())
}

impl Checker {
    pub(crate) fn err(&mut self, path: &str, msg: impl std::fmt::Display) {
        let line = format!("{path}: {msg}");
        self.errors
            .push(corral_proto::text::cap(&line, PROBLEM_MAX).into_owned());
    }

    pub(crate) fn unknown_keys(&mut self, table: &Table, prefix: &str, known: &[&str]) {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                self.err(
                    &path,
                    format!("unknown field; expected one of: {}", known.join(", ")),
                );
            }
        }
    }

    pub(crate) fn string(&mut self, table: &Table, key: &str, path: &str) -> Option<String> {
        match table.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.err(path, format!("must be a string, not {}", type_name(other)));
                None
            }
        }
    }

    pub(crate) fn required_string(
        &mut self,
        table: &Table,
        key: &str,
        path: &str,
    ) -> Option<String> {
        if !table.contains_key(key) {
            self.err(path, "is required");
            return None;
        }
        self.string(table, key, path)
    }

    pub(crate) fn name_field(&mut self, table: &Table, key: &str, what: &str) -> String {
        let Some(value) = self.required_string(table, key, key) else {
            return String::new();
        };
        if let Err(e) = check_name(what, &value, &['_', '-']) {
            self.err(key, e);
        }
        value
    }

    pub(crate) fn string_array(
        &mut self,
        table: &Table,
        key: &str,
        path: &str,
    ) -> Option<Vec<String>> {
        match table.get(key)? {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => self.err(
                            &format!("{path}[{i}]"),
                            format!("must be a string, not {}", type_name(other)),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                self.err(
                    path,
                    format!("must be an array of strings, not {}", type_name(other)),
                );
                None
            }
        }
    }

    pub(crate) fn duration(
        &mut self,
        table: &Table,
        key: &str,
        path: &str,
        default: Duration,
    ) -> Duration {
        let Some(text) = self.string(table, key, path) else {
            return default;
        };
        match humantime::parse_duration(&text) {
            Ok(d) => d,
            Err(e) => {
                self.err(
                    path,
                    format!(
                        "{} is not a duration ({e}); write e.g. \"5s\" or \"500ms\"",
                        quoted(&text)
                    ),
                );
                default
            }
        }
    }

    pub(crate) fn integer(
        &mut self,
        table: &Table,
        key: &str,
        path: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        match table.get(key)? {
            Value::Integer(n) if range.contains(n) => Some(*n),
            Value::Integer(n) => {
                self.err(
                    path,
                    format!(
                        "must be between {} and {}, not {n}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
            other => {
                self.err(
                    path,
                    format!("must be an integer, not {}", type_name(other)),
                );
                None
            }
        }
    }

    pub(crate) fn subtable<'a>(&mut self, table: &'a Table, key: &str) -> Option<&'a Table> {
        match table.get(key)? {
            Value::Table(t) => Some(t),
            other => {
                self.err(key, format!("must be a table, not {}", type_name(other)));
                None
            }
        }
    }
}
