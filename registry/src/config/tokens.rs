//! The tokens callers present, named and with a role: from `--admin-token` and
//! `--viewer-token` (each `NAME:SECRET` or a bare `SECRET`), the config file's
//! `admin_tokens` / `viewer_tokens`, and a tokens file (`--tokens-file`).
//!
//! A flag value that holds a `:` is `NAME:SECRET`, split at the first `:` (so a secret
//! may hold further colons: `ci:a:b` is token `ci` with secret `a:b`); a value without
//! one is a bare secret, named after its role (`admin`, then `admin-2`, ... for the
//! next bare ones). A bare secret cannot hold a `:`: give it a name.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::{NamedToken, Role};

/// The longest token name.
const MAX_NAME: usize = 64;

/// What is wrong with one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    EmptySecret,
    BadName(String),
    UnknownRole(String),
    DuplicateName { first: String },
    DuplicateSecret { first: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::EmptySecret => f.write_str("the secret is empty"),
            Problem::BadName(name) => write!(
                f,
                "the name {} is not valid: 1 to {MAX_NAME} letters, digits, '-', '_', '.' or '@', \
                 starting with a letter or digit",
                corral_proto::text::quoted(name)
            ),
            Problem::UnknownRole(role) => write!(
                f,
                "unknown role {} (expected \"admin\" or \"viewer\")",
                corral_proto::text::quoted(role)
            ),
            Problem::DuplicateName { first } => {
                write!(f, "the name is already taken by {first}")
            }
            Problem::DuplicateSecret { first } => {
                write!(f, "the secret is the same as {first}'s")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read the tokens file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the tokens file {} is not valid: {message}", .path.display())]
    Parse { path: PathBuf, message: String },
    /// `at` names the token: "--admin-token #2", "tokens file F, entry 3 (\"alice\")".
    #[error("{at}: {problem}")]
    Entry { at: String, problem: Problem },
}

/// One entry of a tokens file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    role: String,
    secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<FileEntry>,
}

/// Where the tokens come from, before they are checked.
#[derive(Default)]
pub struct Sources {
    pub admin: Vec<String>,
    pub viewer: Vec<String>,
    pub file: Option<PathBuf>,
}

fn valid_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@');
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(allowed)
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// Every token of every source, checked: names and secrets unique, names valid, no
/// secret empty. The first problem found is reported, naming its source.
pub fn collect(sources: &Sources) -> Result<Vec<NamedToken>, TokensError> {
    let mut found: Vec<(String, NamedToken)> = Vec::new();
    for (role, values, flag) in [
        (Role::Admin, &sources.admin, "--admin-token"),
        (Role::Viewer, &sources.viewer, "--viewer-token"),
    ] {
        let mut bare = 0;
        for (i, value) in values.iter().enumerate() {
            let at = format!("{flag} #{}", i + 1);
            let (name, secret) = match value.split_once(':') {
                Some((name, secret)) => (name.to_string(), secret.to_string()),
                None => {
                    bare += 1;
                    let name = match bare {
                        1 => role.name().to_string(),
                        n => format!("{}-{n}", role.name()),
                    };
                    (name, value.clone())
                }
            };
            let token = check(name, role, secret).map_err(|p| (at.clone(), p))?;
            found.push((at, token));
        }
    }
    if let Some(path) = &sources.file {
        found.extend(read_file(path)?);
    }
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut secrets: HashMap<&str, &str> = HashMap::new();
    for (at, t) in &found {
        let err = |problem| TokensError::Entry {
            at: at.clone(),
            problem,
        };
        if let Some(first) = names.insert(&t.name, at) {
            return Err(err(Problem::DuplicateName {
                first: first.to_string(),
            }));
        }
        if let Some(first) = secrets.insert(&t.secret, at) {
            return Err(err(Problem::DuplicateSecret {
                first: first.to_string(),
            }));
        }
    }
    Ok(found.into_iter().map(|(_, t)| t).collect())
}

/// A token whose name and secret are checked; Err(problem) without its source.
fn check(name: String, role: Role, secret: String) -> Result<NamedToken, Problem> {
    if !valid_name(&name) {
        return Err(Problem::BadName(name));
    }
    if secret.is_empty() {
        return Err(Problem::EmptySecret);
    }
    Ok(NamedToken { name, role, secret })
}

impl From<(String, Problem)> for TokensError {
    fn from((at, problem): (String, Problem)) -> TokensError {
        TokensError::Entry { at, problem }
    }
}

/// Secrets in a file others can read are not secret: said, not refused (the operator may
/// have reasons, e.g. a group of its own).
fn warn_if_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the tokens file can be read by others than its owner: chmod 600 it"
        );
    }
}

fn read_file(path: &Path) -> Result<Vec<(String, NamedToken)>, TokensError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    warn_if_readable(path);
    let file: TokensFile = toml::from_str(&text).map_err(|e| TokensError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', " "),
    })?;
    let mut out = Vec::new();
    for (i, e) in file.token.into_iter().enumerate() {
        let at = format!(
            "tokens file {}, entry {} ({})",
            path.display(),
            i + 1,
            corral_proto::text::quoted(&e.name)
        );
        let role = Role::parse(&e.role).ok_or_else(|| TokensError::Entry {
            at: at.clone(),
            problem: Problem::UnknownRole(e.role.clone()),
        })?;
        let token = check(e.name, role, e.secret).map_err(|p| (at.clone(), p))?;
        out.push((at, token));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(admin: &[&str], viewer: &[&str]) -> Sources {
        Sources {
            admin: admin.iter().map(|s| s.to_string()).collect(),
            viewer: viewer.iter().map(|s| s.to_string()).collect(),
            file: None,
        }
    }

    fn names(t: &[NamedToken]) -> Vec<(String, Role, String)> {
        t.iter()
            .map(|t| (t.name.clone(), t.role, t.secret.clone()))
            .collect()
    }

    #[test]
    fn named_and_bare() {
        let t = collect(&flags(&["s1", "ci:a:b", "s2"], &["ro", "bob:x"])).expect("valid");
        assert_eq!(
            names(&t),
            [
                ("admin".into(), Role::Admin, "s1".into()),
                ("ci".into(), Role::Admin, "a:b".into()),
                ("admin-2".into(), Role::Admin, "s2".into()),
                ("viewer".into(), Role::Viewer, "ro".into()),
                ("bob".into(), Role::Viewer, "x".into()),
            ]
        );
    }

    #[test]
    fn problems_name_their_token() {
        let err = |admin: &[&str], viewer: &[&str]| {
            collect(&flags(admin, viewer))
                .expect_err("invalid")
                .to_string()
        };
        assert_eq!(
            err(&["a:x", "a:y"], &[]),
            "--admin-token #2: the name is already taken by --admin-token #1"
        );
        assert_eq!(
            err(&["a:x"], &["b:x"]),
            "--viewer-token #1: the secret is the same as --admin-token #1's"
        );
        assert_eq!(err(&["a:"], &[]), "--admin-token #1: the secret is empty");
        assert!(err(&[":x"], &[]).starts_with("--admin-token #1: the name \"\" is not valid"));
        assert!(err(&["a b:x"], &[]).contains("the name \"a b\" is not valid"));
    }

    #[test]
    fn file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.toml");
        let with = |text: &str| {
            std::fs::write(&path, text).expect("write");
            collect(&Sources {
                admin: vec!["ops:s0".into()],
                file: Some(path.clone()),
                ..Sources::default()
            })
        };
        let ok = with(
            "[[token]]\nname = \"alice\"\nrole = \"admin\"\nsecret = \"s1\"\n\
             [[token]]\nname = \"bob\"\nrole = \"viewer\"\nsecret = \"s2\"\n",
        )
        .expect("valid");
        assert_eq!(ok.len(), 3);
        assert_eq!(ok[2].role, Role::Viewer);
        let shown = path.display().to_string();
        let err = with("[[token]]\nname = \"alice\"\nrole = \"root\"\nsecret = \"s1\"\n")
            .expect_err("role")
            .to_string();
        assert_eq!(
            err,
            format!(
                "tokens file {shown}, entry 1 (\"alice\"): unknown role \"root\" (expected \"admin\" or \"viewer\")"
            )
        );
        let err = with("[[token]]\nname = \"ops\"\nrole = \"admin\"\nsecret = \"s1\"\n")
            .expect_err("dup")
            .to_string();
        assert!(
            err.contains("entry 1 (\"ops\"): the name is already taken by --admin-token #1"),
            "{err}"
        );
        let err = with("[[token]]\nname = \"x\"\nrole = \"admin\"\n")
            .expect_err("missing")
            .to_string();
        assert!(
            err.starts_with(&format!("the tokens file {shown} is not valid"))
                && err.contains("secret"),
            "{err}"
        );
        std::fs::remove_file(&path).expect("rm");
        let err = with_missing(&path);
        assert!(
            err.starts_with(&format!("cannot read the tokens file {shown}")),
            "{err}"
        );
    }

    fn with_missing(path: &Path) -> String {
        collect(&Sources {
            file: Some(path.to_path_buf()),
            ..Sources::default()
        })
        .expect_err("missing file")
        .to_string()
    }
}
