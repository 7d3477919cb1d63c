//! Aligned tables and JSON for listings.

use std::time::{Duration, UNIX_EPOCH};

/// The widest a table cell gets, in characters; longer values end in "…" (`-o json`
/// has them whole).
pub const MAX_CELL: usize = 80;

/// Prints rows as a table whose columns are as wide as their widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", render_table(headers, rows));
}

/// What a value shows in a table cell: its first line, control characters as spaces,
/// at most [`MAX_CELL`] characters; "…" says something was left out. An empty value
/// shows as "-", so every column of every row has a value.
pub fn cell(value: &str) -> String {
    let value = value.trim();
    if value.is_empty() {
        return "-".to_string();
    }
    let mut lines = value.lines();
    let first = lines.next().unwrap_or_default().trim_end();
    let more = lines.next().is_some();
    let mut out: String = first
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_CELL)
        .collect();
    if more || first.chars().count() > MAX_CELL {
        if out.chars().count() >= MAX_CELL {
            out.pop();
        }
        out.push('…');
    }
    out
}

pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c)).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            text.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(cell.chars().count()),
            ));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// RFC 3339 time of a Unix-milliseconds value; empty for zero.
pub fn time_ms(ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// "3s ago", "5m ago" for a Unix-milliseconds value.
pub fn ago_ms(ms: i64, now_ms: i64) -> String {
    if ms <= 0 {
        return "never".to_string();
    }
    let secs = ((now_ms - ms).max(0) / 1000) as u64;
    let d = Duration::from_secs(secs);
    format!("{} ago", humantime::format_duration(d))
}

/// Bytes in binary units, e.g. "15.6 GiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The CPU, MEMORY and PIDS cells of an instance: CPU seconds, memory now (and at its
/// peak), processes; empty without a cgroup, `-` for what is not measured (an instance
/// without `[resources]` on a hybrid v1 host has no memory or pids cgroup).
pub fn usage_cells(i: &corral_proto::v1::InstanceInfo) -> [String; 3] {
    match &i.usage {
        Some(u) => [
            format!("{:.2}s", u.cpu_seconds),
            match (u.memory_bytes, u.memory_peak_bytes) {
                (Some(now), Some(peak)) => format!("{} (peak {})", bytes(now), bytes(peak)),
                (Some(now), None) => bytes(now),
                _ => "-".into(),
            },
            u.pids.map_or_else(|| "-".into(), |p| p.to_string()),
        ],
        None => [String::new(), String::new(), String::new()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let out = render_table(
            &["NAME", "STATE"],
            &[
                vec!["node-a".into(), "up".into()],
                vec!["n".into(), "down".into()],
            ],
        );
        assert_eq!(out, "NAME    STATE\nnode-a  up\nn       down\n");
    }

    #[test]
    fn long_and_multi_line_values_keep_the_columns() {
        let long = "x".repeat(200);
        let out = render_table(
            &["NODE", "ERROR", "STATE"],
            &[
                vec!["a".into(), "line one\nline two".into(), "up".into()],
                vec!["b".into(), long.clone(), "down".into()],
                vec!["c".into(), "tab\there".into(), String::new()],
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "one line per row: {out}");
        let state_at = lines[0].find("STATE").expect("header");
        for (line, state) in lines[1..].iter().zip(["up", "down", "-"]) {
            assert_eq!(
                &line[line.char_indices().nth(state_at).map_or(0, |(i, _)| i)..],
                state,
                "{out}"
            );
        }
        assert!(lines[1].contains("line one…"), "{out}");
        let cut = format!("{}…", "x".repeat(MAX_CELL - 1));
        assert!(
            lines[2].contains(&cut) && !lines[2].contains(&long),
            "{out}"
        );
        assert!(lines[3].contains("tab here"), "{out}");
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }
}
