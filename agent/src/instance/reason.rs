//! Which transition an event's reason belongs to. Performing a transition's actions can
//! lead to the next transition at once (a start that spawned, or failed to): what the
//! actions added to the reason ("started pid 42", the spawn error) is the next
//! transition's reason, so `starting -> failed` says why it failed.

/// Splits the reason a transition's actions left (`after`) into the transition's own
/// (`before`, what it had when they began) and the rest, for the transition they led to.
/// Without a next transition, or when the actions added nothing, all of it stays.
pub fn split(before: &str, after: String, leads_on: bool) -> (String, String) {
    if !leads_on || after == before {
        return (after, String::new());
    }
    match after.strip_prefix(before) {
        // Appended: "deployed" + "; started pid 42".
        Some(rest) if !before.is_empty() => (
            before.to_string(),
            rest.trim_start_matches("; ").to_string(),
        ),
        Some(rest) => (String::new(), rest.to_string()),
        // Replaced (a spawn error): the transition keeps what it had.
        None => (before.to_string(), after),
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn reasons_go_with_their_transition() {
        let s = |b: &str, a: &str, on| split(b, a.to_string(), on);
        #[rustfmt::skip]
        let table = [
            ("appended", s("deployed", "deployed; started pid 42", true), ("deployed", "started pid 42")),
            ("replaced", s("deployed", "cannot start x: not found", true), ("deployed", "cannot start x: not found")),
            ("nothing before", s("", "started pid 42", true), ("", "started pid 42")),
            ("nothing added", s("deployed", "deployed", true), ("deployed", "")),
            ("no next transition", s("stop requested", "stop requested; x", false), ("stop requested; x", "")),
        ];
        for (name, got, (this, next)) in table {
            assert_eq!(got, (this.to_string(), next.to_string()), "{name}");
        }
    }
}
