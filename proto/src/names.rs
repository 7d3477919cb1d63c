//! Rules for names that both ends of the wire check, and the one parser of the dotted
//! names: `APP.SERVER` (a server, an instance's directory) and `APP.SERVER.ADAPTER` (a
//! service name, as discovery and templates know it).

use crate::text::quoted;

/// The longest node name: a DNS label.
pub const NODE_NAME_MAX: usize = 63;

/// Checks a node name: a DNS label (RFC 1123): letters, digits and '-', 1 to 63 of them,
/// not starting or ending with '-'. A node name is used as a host name, in DNS answers
/// of the `corral.` domain and in paths, so `.`, `..`, dots and underscores are refused.
/// The error says what is wrong with it and never echoes a huge value.
pub fn check_node_name(name: &str) -> Result<(), String> {
    const RULE: &str = "a node name is a DNS label: letters, digits and '-'";
    if name.is_empty() {
        return Err("node name is empty".to_string());
    }
    if name.len() > NODE_NAME_MAX {
        return Err(format!(
            "node name {} is {} bytes; the limit is {NODE_NAME_MAX}",
            quoted(name),
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(format!("node name {name:?} contains {c:?}; {RULE}"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "node name {name:?} starts or ends with '-'; {RULE}, not first or last"
        ));
    }
    Ok(())
}

/// The parts of a dotted name: `APP.SERVER` or `APP.SERVER.ADAPTER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Name<'a> {
    pub app: &'a str,
    pub server: &'a str,
    pub adapter: Option<&'a str>,
}

impl<'a> Name<'a> {
    /// Splits `APP.SERVER` or `APP.SERVER.ADAPTER`: two or three parts, none empty. The
    /// characters of each part are the spec's to check.
    pub fn parse(name: &'a str) -> Option<Name<'a>> {
        let mut parts = name.split('.');
        let (app, server) = (parts.next()?, parts.next()?);
        let adapter = parts.next();
        let empty = [Some(app), Some(server), adapter].contains(&Some(""));
        if empty || parts.next().is_some() {
            return None;
        }
        Some(Name {
            app,
            server,
            adapter,
        })
    }
}

/// `APP.SERVER` split into app and server; None for anything else.
pub fn split_server(name: &str) -> Option<(&str, &str)> {
    match Name::parse(name)? {
        Name {
            app,
            server,
            adapter: None,
        } => Some((app, server)),
        _ => None,
    }
}

/// `APP.SERVER.ADAPTER` split into its three parts; None for anything else.
pub fn split_service(name: &str) -> Option<(&str, &str, &str)> {
    let n = Name::parse(name)?;
    Some((n.app, n.server, n.adapter?))
}

/// The environment variable that carries an adapter's port to the service:
/// `CORRAL_PORT_<NAME>`, upper-cased, '-' as '_'. Two adapters whose names map to the same
/// variable (`Main` and `MAIN`, `a-b` and `a_b`) would hide one port, so a spec refuses them.
pub fn port_env_var(adapter: &str) -> String {
    format!(
        "CORRAL_PORT_{}",
        adapter.to_ascii_uppercase().replace('-', "_")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_dns_labels() {
        for ok in ["node-a", "a", "A1", "web-01", "x1-y2", &"x".repeat(63)] {
            assert!(check_node_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "host.example",
            "under_score",
            "-lead",
            "trail-",
            "with space",
            "ümlaut",
            "a/b",
            &"x".repeat(64),
        ] {
            assert!(check_node_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_huge_node_name_is_not_echoed() {
        let err = check_node_name(&"n".repeat(1 << 20)).expect_err("too long");
        assert!(err.len() < 200, "{err}");
        assert!(err.contains("1048576 bytes; the limit is 63"), "{err}");
    }

    #[test]
    fn dotted_names_split() {
        assert_eq!(split_server("demo.echo"), Some(("demo", "echo")));
        assert_eq!(
            split_service("demo.echo.Main"),
            Some(("demo", "echo", "Main"))
        );
        let server = Name::parse("demo.echo").expect("server");
        assert_eq!(
            (server.app, server.server, server.adapter),
            ("demo", "echo", None)
        );
        for bad in ["", "demo", "demo.", ".echo", "a..b", "a.b.c.d", "a.b."] {
            assert_eq!(Name::parse(bad), None, "{bad}");
        }
        assert_eq!(split_server("demo.echo.Main"), None);
        assert_eq!(split_service("demo.echo"), None);
    }

    #[test]
    fn port_variables() {
        assert_eq!(port_env_var("Main"), "CORRAL_PORT_MAIN");
        assert_eq!(port_env_var("p2p-rpc"), "CORRAL_PORT_P2P_RPC");
        assert_eq!(port_env_var("a_b"), port_env_var("A-B"));
    }
}
