//! The configuration file (`--config FILE`, TOML). Every section is optional and every value
//! has a documented default; unknown keys are errors, so a typo never goes unnoticed.
//!
//! ```toml
//! [fusion]            # gates, reliabilities, smoothing, conflict: docs/fusion.md
//! balance_floor = 0.2
//! [fusion.conflict]
//! on = 0.35
//! [streams]           # defaults for every stream: transport, latency, reconnects
//! retry_budget_s = 60
//! [[stream]]          # streams to run (see streams::settings)
//! name = "lobby"
//! url = "rtsp://user:password@10.0.0.7/stream1"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::fusion::params::FusionParams;
use crate::streams::settings::{SettingsOverrides, StreamEntry, StreamSettings};

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
    /// Defaults for every stream (see [`crate::streams::settings`]).
    #[serde(default)]
    pub streams: SettingsOverrides,
    /// The streams to run, each with a name and a URL.
    #[serde(default, rename = "stream")]
    pub stream: Vec<StreamEntry>,
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
        let defaults = config.stream_defaults()?;
        for (i, entry) in config.stream.iter().enumerate() {
            if entry.name.trim().is_empty() || entry.url.trim().is_empty() {
                return Err(format!("stream #{} needs a name and a url", i + 1));
            }
            if config.stream[..i].iter().any(|e| e.name == entry.name) {
                return Err(format!("two streams are named '{}'", entry.name));
            }
            entry
                .overrides()
                .apply(defaults)
                .map_err(|e| format!("stream '{}': {e}", entry.name))?;
        }
        Ok(config)
    }

    /// The `[streams]` defaults applied to the built-in ones.
    pub fn stream_defaults(&self) -> Result<StreamSettings, String> {
        self.streams
            .apply(StreamSettings::default())
            .map_err(|e| format!("[streams] {e}"))
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
