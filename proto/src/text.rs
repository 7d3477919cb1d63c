//! Showing user input in error messages without echoing it whole.
//!
//! An error goes back to the user in a gRPC status, whose message travels in an HTTP/2
//! header: a message that repeats a 1 MiB value does not fit, and the user gets a
//! transport error instead of the message. Messages therefore show long values cut, with
//! their size, and long messages are capped as a whole.

use std::borrow::Cow;

/// At most this many bytes of a value are shown in a message.
pub const SHOWN_MAX: usize = 64;

/// A value as a message shows it: `"node-a"`, or for a long one its start and its size,
/// `"xxxxxxxx…" (1048576 bytes)`.
pub fn quoted(value: &str) -> String {
    if value.len() <= SHOWN_MAX {
        format!("{value:?}")
    } else {
        format!(
            "{:?} ({} bytes)",
            format!("{}…", prefix(value, 32)),
            value.len()
        )
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `message` cut to at most about `max` bytes, saying how much was left out.
pub fn cap(message: &str, max: usize) -> Cow<'_, str> {
    if message.len() <= max {
        return Cow::Borrowed(message);
    }
    let kept = prefix(message, max);
    Cow::Owned(format!(
        "{kept}… (message cut: {} more bytes)",
        count(message.len() - kept.len())
    ))
}

/// A count with thousands separators: `9,990`.
pub fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Problems, one per line: the first `shown` of them, then "… and 9,990 more problems".
pub fn first_problems(problems: &[String], shown: usize) -> String {
    let mut lines: Vec<&str> = problems.iter().take(shown).map(String::as_str).collect();
    let more = problems.len().saturating_sub(shown);
    let tail = format!(
        "… and {} more problem{}",
        count(more),
        if more == 1 { "" } else { "s" }
    );
    if more > 0 {
        lines.push(&tail);
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_shown_whole() {
        assert_eq!(quoted("node-a"), "\"node-a\"");
    }

    #[test]
    fn long_values_are_cut_with_their_size() {
        let shown = quoted(&"é".repeat(1000));
        assert!(shown.ends_with("(2000 bytes)"), "{shown}");
        assert!(shown.len() < 60, "{shown}");
    }

    #[test]
    fn messages_are_capped() {
        assert_eq!(cap("short", 10), "short");
        let long = "x".repeat(10_000);
        let capped = cap(&long, 100);
        assert!(capped.len() < 150, "{capped}");
        assert!(
            capped.ends_with("(message cut: 9,900 more bytes)"),
            "{capped}"
        );
    }

    #[test]
    fn counts_have_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(9990), "9,990");
        assert_eq!(count(1_048_576), "1,048,576");
    }

    #[test]
    fn problems_beyond_the_first_are_counted() {
        let problems: Vec<String> = (0..10_000).map(|i| format!("p{i}")).collect();
        let text = first_problems(&problems, 3);
        assert_eq!(text, "p0\np1\np2\n… and 9,997 more problems");
        assert_eq!(first_problems(&problems[..2], 3), "p0\np1");
    }
}
