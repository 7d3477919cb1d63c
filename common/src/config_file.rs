//! Reading a daemon's TOML config file (`/etc/corral/agent.toml`, `registry.toml`) with
//! the `config` crate. Unknown keys are errors (the structs read say
//! `#[serde(deny_unknown_fields)]`), and every error names the file.

use std::path::Path;

use serde::de::DeserializeOwned;

/// A config file that cannot be read or has a key or value at fault.
#[derive(Debug, thiserror::Error)]
#[error("config file {path}: {source}")]
pub struct ConfigFileError {
    pub path: String,
    pub source: Box<config::ConfigError>,
}

/// Reads the TOML file at `path`. A missing file is an error only when `required` (a
/// file named by `--config`); otherwise it reads as `T::default()`.
pub fn read<T: DeserializeOwned + Default>(
    path: &Path,
    required: bool,
) -> Result<T, ConfigFileError> {
    if !required && !path.exists() {
        return Ok(T::default());
    }
    config::Config::builder()
        .add_source(config::File::from(path.to_path_buf()).format(config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|source| ConfigFileError {
            path: path.display().to_string(),
            source: Box::new(source),
        })
}

/// The name of the first of `settings` that is zero (a count of 0, a zero duration): for
/// settings where zero cannot work, which are refused rather than quietly taken as 1.
pub fn first_zero<T: Default + PartialEq + Copy>(
    settings: &[(&'static str, T)],
) -> Option<&'static str> {
    settings
        .iter()
        .find(|(_, value)| *value == T::default())
        .map(|(what, _)| *what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Keys {
        name: Option<String>,
    }

    #[test]
    fn unknown_keys_and_missing_required_files_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.toml");
        let missing: Keys = read(&path, false).expect("an optional file may be missing");
        assert!(missing.name.is_none());
        let err = read::<Keys>(&path, true).expect_err("required").to_string();
        assert!(
            err.starts_with("config file ") && err.contains("x.toml"),
            "{err}"
        );
        std::fs::write(&path, "name = \"a\"\nnmae = \"b\"\n").expect("write");
        let err = read::<Keys>(&path, true)
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("nmae") && err.contains("x.toml"), "{err}");
        std::fs::write(&path, "name = \"a\"\n").expect("write");
        let keys: Keys = read(&path, true).expect("read");
        assert_eq!(keys.name.as_deref(), Some("a"));
    }

    #[test]
    fn the_first_zero_is_named() {
        assert_eq!(first_zero(&[("a", 1u64), ("b", 0), ("c", 0)]), Some("b"));
        assert_eq!(first_zero(&[("a", std::time::Duration::ZERO)]), Some("a"));
        assert_eq!(first_zero::<u64>(&[("a", 1)]), None);
    }
}
