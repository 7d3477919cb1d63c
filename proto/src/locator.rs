//! The locator: the registry addresses an agent or a client starts from, written as
//! comma-separated URLs (`http://10.0.0.1:17890,10.0.0.2:17890`). An entry without a
//! scheme is `http://`. Here so that the agent and the client library read it alike; each
//! adds its own checks of what an entry must hold.

use tonic::transport::Uri;

/// Each non-empty entry of `locator`, trimmed, with the URI it stands for (None when it
/// does not parse as one).
pub fn entries(locator: &str) -> impl Iterator<Item = (&str, Option<Uri>)> {
    locator
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let uri = if entry.contains("://") {
                entry.parse()
            } else {
                format!("http://{entry}").parse()
            };
            (entry, uri.ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_get_a_scheme_and_blanks_are_skipped() {
        let all: Vec<(&str, Option<String>)> = entries(" http://a:1, ,b:2,https://c:3,")
            .map(|(e, u)| (e, u.map(|u| u.to_string())))
            .collect();
        assert_eq!(
            all,
            [
                ("http://a:1", Some("http://a:1/".to_string())),
                ("b:2", Some("http://b:2/".to_string())),
                ("https://c:3", Some("https://c:3/".to_string())),
            ]
        );
        let (entry, uri) = entries("not a url:x").next().expect("one entry");
        assert_eq!((entry, uri), ("not a url:x", None));
    }
}
