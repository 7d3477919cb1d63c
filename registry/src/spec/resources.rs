//! A spec's `[resources]`: the limits of each instance's cgroup.
//!
//! ```toml
//! [resources]
//! memory = "256MiB"     # hard limit; the instance is OOM-killed past it
//! cpu = 1.5             # cores (cpu.max / CFS quota)
//! cpu_weight = 100      # relative share, 1-10000
//! pids = 512            # processes and threads
//! ```
//!
//! Units and ranges are checked here; whether the nodes have cgroups, that much memory
//! and that many cores is checked at apply (`crate::admin::resources`).

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use super::checker::{Checker, type_name};
use corral_proto::text::quoted;

/// The smallest memory limit: below it hardly any program starts.
pub const MIN_MEMORY: u64 = 4 * 1024 * 1024;
/// The smallest CPU limit the kernel enforces: 1 ms per 100 ms period.
pub const MIN_CPU_MILLIS: u32 = 10;
/// At most this many cores.
pub const MAX_CPU_MILLIS: u32 = 1024 * 1000;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Thousandths of a core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    pub fn to_proto(&self) -> corral_proto::v1::Resources {
        corral_proto::v1::Resources {
            memory_bytes: self.memory.unwrap_or(0),
            cpu_millis: self.cpu_millis.unwrap_or(0),
            cpu_weight: self.cpu_weight.unwrap_or(0),
            pids: self.pids.unwrap_or(0),
        }
    }
}

/// Bytes as the spec writes them: "256MiB", "1.5 GiB", "512MB", or a number of bytes.
pub fn show_bytes(b: u64) -> String {
    bytesize::ByteSize(b).display().iec().to_string()
}

/// The `[resources]` table; None when there is none (or it is empty).
pub(crate) fn parse(c: &mut Checker, table: &Table) -> Option<Resources> {
    let t = c.subtable(table, "resources")?;
    c.unknown_keys(t, "resources", &["memory", "cpu", "cpu_weight", "pids"]);
    let memory = t.get("memory").and_then(|v| memory(c, v));
    let cpu_millis = t.get("cpu").and_then(|v| cpu(c, v));
    let cpu_weight = c
        .integer(t, "cpu_weight", "resources.cpu_weight", 1..=10_000)
        .map(|n| n as u32);
    let pids = c
        .integer(t, "pids", "resources.pids", 1..=4_194_304)
        .map(|n| n as u32);
    let r = Resources {
        memory,
        cpu_millis,
        cpu_weight,
        pids,
    };
    (!r.is_empty()).then_some(r)
}

fn memory(c: &mut Checker, v: &Value) -> Option<u64> {
    let path = "resources.memory";
    let bytes = match v {
        Value::String(s) => match s.trim().parse::<bytesize::ByteSize>() {
            Ok(b) => b.as_u64(),
            Err(_) => {
                c.err(
                    path,
                    format!(
                        "{} is not a size; write e.g. \"256MiB\", \"1.5GiB\" or \"512MB\"",
                        quoted(s)
                    ),
                );
                return None;
            }
        },
        Value::Integer(n) if *n >= 0 => *n as u64,
        other => {
            c.err(
                path,
                format!(
                    "must be a size such as \"256MiB\", not {}",
                    type_name(other)
                ),
            );
            return None;
        }
    };
    if bytes < MIN_MEMORY {
        c.err(
            path,
            format!(
                "{} is less than the smallest limit, {}",
                show_bytes(bytes),
                show_bytes(MIN_MEMORY)
            ),
        );
        return None;
    }
    Some(bytes)
}

fn cpu(c: &mut Checker, v: &Value) -> Option<u32> {
    let path = "resources.cpu";
    let cores = match v {
        Value::Float(f) => *f,
        Value::Integer(n) => *n as f64,
        other => {
            c.err(
                path,
                format!(
                    "must be a number of cores such as 1.5, not {}",
                    type_name(other)
                ),
            );
            return None;
        }
    };
    let millis = (cores * 1000.0).round();
    if !cores.is_finite()
        || millis < f64::from(MIN_CPU_MILLIS)
        || millis > f64::from(MAX_CPU_MILLIS)
    {
        c.err(
            path,
            format!(
                "{cores} cores is out of range: between {} and {}",
                f64::from(MIN_CPU_MILLIS) / 1000.0,
                MAX_CPU_MILLIS / 1000
            ),
        );
        return None;
    }
    Some(millis as u32)
}

/// The `[resources]` table as `export` writes it.
pub fn export(r: &Resources) -> String {
    let mut out = String::from("\n[resources]\n");
    if let Some(m) = r.memory {
        let text = if m % (1024 * 1024) == 0 {
            format!("\"{}MiB\"", m / (1024 * 1024))
        } else {
            m.to_string()
        };
        out.push_str(&format!("memory = {text}\n"));
    }
    if let Some(c) = r.cpu_millis {
        out.push_str(&format!("cpu = {:?}\n", f64::from(c) / 1000.0));
    }
    if let Some(w) = r.cpu_weight {
        out.push_str(&format!("cpu_weight = {w}\n"));
    }
    if let Some(p) = r.pids {
        out.push_str(&format!("pids = {p}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> (Option<Resources>, Vec<String>) {
        let table: Table = toml::from_str(text).expect("toml");
        let mut c = Checker { errors: Vec::new() };
        let r = parse(&mut c, &table);
        (r, c.errors)
    }

    #[test]
    fn units_and_ranges() {
        let (r, errors) =
            run("[resources]\nmemory = \"256MiB\"\ncpu = 1.5\ncpu_weight = 100\npids = 512\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            r,
            Some(Resources {
                memory: Some(256 << 20),
                cpu_millis: Some(1500),
                cpu_weight: Some(100),
                pids: Some(512),
            })
        );
        assert_eq!(
            run("[resources]\ncpu = 2\n").0.and_then(|r| r.cpu_millis),
            Some(2000)
        );
        assert_eq!(run("[resources]\n").0, None);
        #[rustfmt::skip]
        let table = [
            ("[resources]\nmemory = \"lots\"\n", "resources.memory: \"lots\" is not a size"),
            ("[resources]\nmemory = \"1KiB\"\n", "resources.memory: 1.0 KiB is less than the smallest limit"),
            ("[resources]\nmemory = true\n", "resources.memory: must be a size"),
            ("[resources]\ncpu = 0\n", "resources.cpu: 0 cores is out of range"),
            ("[resources]\ncpu = \"1\"\n", "resources.cpu: must be a number of cores"),
            ("[resources]\ncpu_weight = 0\n", "resources.cpu_weight: must be between 1 and 10000, not 0"),
            ("[resources]\npids = -1\n", "resources.pids: must be between 1 and 4194304, not -1"),
            ("[resources]\nswap = 1\n", "resources.swap"),
            ("resources = 3\n", "resources: must be a table"),
        ];
        for (text, want) in table {
            let (_, errors) = run(text);
            assert!(
                errors.iter().any(|e| e.starts_with(want)),
                "{text}: {errors:?}"
            );
        }
    }

    #[test]
    fn export_parses_back() {
        for r in [
            Resources {
                memory: Some(256 << 20),
                cpu_millis: Some(500),
                cpu_weight: Some(50),
                pids: Some(64),
            },
            Resources {
                memory: Some((64 << 20) + 1),
                ..Resources::default()
            },
        ] {
            assert_eq!(run(&export(&r)).0, Some(r));
        }
    }
}
