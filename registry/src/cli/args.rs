//! Checks of the admin CLI's flag values, run before anything is sent, so a value that
//! cannot work is a usage error (exit 2) whose message names the flag and the value:
//! `--addr (or CORRAL_ADDR) "ftp://x": scheme "ftp" is not supported …`. The value
//! parsers among them run in clap (`invalid value '' for '--node <NODE>': …`).

use std::time::Duration;

/// A registry address: `http://` or `https://`, a host, a port 1-65535 when one is given,
/// and nothing after it.
pub fn registry_addr(text: &str) -> Result<String, String> {
    const EXAMPLE: &str = "e.g. http://127.0.0.1:17890";
    let bad = || format!("not a valid URL; expected {EXAMPLE}");
    if !text.contains("://") {
        // host:port alone: say what to write instead.
        return match format!("http://{text}").parse::<http::Uri>() {
            Ok(uri) if uri.host().is_some() && uri.path() == "/" => Err(format!(
                "no scheme; write http://{text} (or https:// with TLS)"
            )),
            _ => Err(bad()),
        };
    }
    let uri: http::Uri = text.parse().map_err(|_| bad())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "scheme {other:?} is not supported; use http:// or https://, {EXAMPLE}"
            ));
        }
        None => return Err(format!("no scheme; expected {EXAMPLE}")),
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("no host; expected {EXAMPLE}"));
    }
    // The text after the host's last ':' (outside an IPv6 literal's brackets) is the port.
    let host_end = authority.rfind(']').unwrap_or(0);
    if let Some((_, port)) = authority[host_end..].rsplit_once(':') {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("port {port:?} is not a port (1-65535)")),
        }
    }
    if !(uri.path() == "/" || uri.path().is_empty()) || uri.query().is_some() {
        return Err(format!(
            "a registry address has no path; expected {EXAMPLE}"
        ));
    }
    Ok(text.to_string())
}

/// A value that must not be empty: an empty `--node ""` (an unset shell variable, say)
/// would otherwise mean "every node".
pub fn non_empty(text: &str) -> Result<String, String> {
    if text.is_empty() {
        Err("must not be empty (leave the flag out to mean all)".to_string())
    } else {
        Ok(text.to_string())
    }
}

/// Milliseconds of a duration, rounded up: `500us` is 1 ms, never 0.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_addresses() {
        for ok in [
            "http://127.0.0.1:17890",
            "https://registry.example:17890",
            "http://[::1]:17890",
            "http://localhost",
            "http://127.0.0.1:17890/",
        ] {
            assert_eq!(registry_addr(ok).as_deref(), Ok(ok));
        }
    }

    #[test]
    fn bad_addresses_say_why() {
        for (bad, why) in [
            ("ftp://x", "scheme \"ftp\""),
            ("http://127.0.0.1:99999", "port \"99999\""),
            ("http://127.0.0.1:0", "port \"0\""),
            ("127.0.0.1:17890", "no scheme"),
            ("::not a url::", "not a valid URL"),
            ("http://h:1/path", "no path"),
            ("http://", "not a valid URL"),
        ] {
            let err = registry_addr(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn sub_millisecond_durations_round_up() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_micros(500)), 1);
        assert_eq!(millis(Duration::from_secs(5)), 5000);
    }
}
