//! The configuration file (`--config FILE`, TOML). Every section is optional and every value
//! has a documented default; unknown keys are errors, so a typo never goes unnoticed.
//!
//! ```toml
//! [fusion]            # gates, reliabilities, smoothing, conflict: docs/fusion.md
//! balance_floor = 0.2
//! [fusion.conflict]
//! on = 0.35
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::fusion::gates::FusionParams;

/// Errors reading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Fusion parameters (defaults: [`FusionParams::default`]).
    #[serde(default)]
    pub fusion: FusionParams,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        config.fusion.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults_and_values_override_them() {
        let c = Config::parse("").unwrap();
        assert_eq!(
            c.fusion.balance_floor,
            FusionParams::default().balance_floor
        );
        let c = Config::parse("[fusion]\nbalance_floor = 0.1\n").unwrap();
        assert_eq!(c.fusion.balance_floor, 0.1);
    }

    #[test]
    fn typos_and_out_of_range_values_are_errors_that_name_the_key() {
        let e = Config::parse("[fusoin]\n").unwrap_err();
        assert!(e.contains("fusoin"), "{e}");
        let e = Config::parse("[fusion]\nbalance_floor = 3.0\n").unwrap_err();
        assert!(e.contains("balance_floor"), "{e}");
    }
}
