//! Rules for names that both ends of the wire check.

/// Checks a node name: `[A-Za-z0-9._-]{1,63}`. The error says what is wrong with it.
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("node name is empty".to_string());
    }
    if name.len() > 63 {
        return Err(format!(
            "node name {name:?} is {} characters long; at most 63 are allowed",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "node name {name:?} contains {c:?}; only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_node_name;

    #[test]
    fn node_names() {
        for ok in ["node-a", "a", "host.example_1", &"x".repeat(63)] {
            assert!(check_node_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "with space", "ümlaut", "a/b", &"x".repeat(64)] {
            assert!(check_node_name(bad).is_err(), "{bad}");
        }
    }
}
