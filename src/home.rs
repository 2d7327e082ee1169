//! Where the program finds what `scripts/setup.sh` installed: the model manifest, the model
//! files and the ONNX Runtime library. One rule for each, first match wins:
//!
//! 1. an explicit flag (`--models`, `--model-dir`);
//! 2. the environment (`AFFECTSTREAM_MODELS_TOML`, `AFFECTSTREAM_MODEL_DIR`, `ORT_DYLIB_PATH`);
//! 3. the per-user data directory: `$AFFECTSTREAM_HOME`, else `$XDG_DATA_HOME/affectstream`,
//!    else `~/.local/share/affectstream`, laid out as
//!    `models.toml` (+ the files it names, e.g. `prosody_head.json`), `models/` (the model
//!    files and their `.sha256` records), `lib/libonnxruntime.so`.
//!
//! Nothing is looked up relative to the source tree, so a binary installed with
//! `cargo install` (its clone deleted), a crate depending on this one and `cargo run` in a clone
//! all find the same files. The lookup is pure ([`Environment`] holds the values it reads), so
//! it is tested without touching the process environment.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// Environment variable naming the data directory.
pub const HOME_VAR: &str = "AFFECTSTREAM_HOME";
/// Environment variable naming the model manifest.
pub const MANIFEST_VAR: &str = "AFFECTSTREAM_MODELS_TOML";
/// Environment variable naming the model directory.
pub const MODEL_DIR_VAR: &str = "AFFECTSTREAM_MODEL_DIR";
/// Environment variable naming the ONNX Runtime shared library (ort's own name for it).
pub const ORT_VAR: &str = "ORT_DYLIB_PATH";

/// The manifest's file name in the data directory.
pub const MANIFEST_FILE: &str = "models.toml";
/// The model directory inside the data directory.
pub const MODELS_SUBDIR: &str = "models";
/// The ONNX Runtime library inside the data directory (a link to the versioned file setup
/// copied out of the `onnxruntime` wheel).
pub const ORT_LIBRARY: &str = "lib/libonnxruntime.so";

/// What to do when something the data directory should hold is missing.
pub const INSTALL_HINT: &str = "run scripts/setup.sh in a clone of affectstream (with the same \
     AFFECTSTREAM_HOME, if set): it installs the manifest, the models and ONNX Runtime into the \
     data directory ($AFFECTSTREAM_HOME, else $XDG_DATA_HOME/affectstream, else \
     ~/.local/share/affectstream; README: Install)";

/// The environment values the lookup reads; an empty value counts as unset.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `$AFFECTSTREAM_HOME`.
    pub affectstream_home: Option<OsString>,
    /// `$XDG_DATA_HOME` (ignored unless absolute, as the XDG specification says).
    pub xdg_data_home: Option<OsString>,
    /// The user's home directory (`$HOME`, else the password database).
    pub home: Option<PathBuf>,
    /// `$AFFECTSTREAM_MODELS_TOML`.
    pub models_toml: Option<OsString>,
    /// `$AFFECTSTREAM_MODEL_DIR`.
    pub model_dir: Option<OsString>,
    /// `$ORT_DYLIB_PATH`.
    pub ort_dylib_path: Option<OsString>,
}

/// Why the data directory is where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirOrigin {
    /// `$AFFECTSTREAM_HOME`.
    AffectstreamHome,
    /// `$XDG_DATA_HOME/affectstream`.
    XdgDataHome,
    /// `~/.local/share/affectstream`.
    Home,
    /// No home directory could be determined: the path is the unexpanded `~/...` form, which
    /// never exists, so every lookup fails with [`INSTALL_HINT`].
    NoHome,
}

/// Where a located path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// The named environment variable.
    Env(&'static str),
    /// The data directory.
    DataDir(DataDirOrigin),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => write!(f, "from the command line"),
            Origin::Env(var) => write!(f, "from {var}"),
            Origin::DataDir(DataDirOrigin::AffectstreamHome) => {
                write!(f, "in the data directory, from {HOME_VAR}")
            }
            Origin::DataDir(DataDirOrigin::XdgDataHome) => {
                write!(f, "in the data directory, from XDG_DATA_HOME")
            }
            Origin::DataDir(DataDirOrigin::Home) => {
                write!(f, "in the data directory ~/.local/share/affectstream")
            }
            Origin::DataDir(DataDirOrigin::NoHome) => write!(
                f,
                "in the data directory, but no home directory is known: set {HOME_VAR}"
            ),
        }
    }
}

/// A path and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The path.
    pub path: PathBuf,
    /// Why this path.
    pub origin: Origin,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.origin)
    }
}

fn set(value: &Option<OsString>) -> Option<&OsString> {
    value.as_ref().filter(|v| !v.is_empty())
}

impl Environment {
    /// The values of this process's environment.
    pub fn from_process() -> Self {
        Self {
            affectstream_home: std::env::var_os(HOME_VAR),
            xdg_data_home: std::env::var_os("XDG_DATA_HOME"),
            home: std::env::home_dir().filter(|h| !h.as_os_str().is_empty()),
            models_toml: std::env::var_os(MANIFEST_VAR),
            model_dir: std::env::var_os(MODEL_DIR_VAR),
            ort_dylib_path: std::env::var_os(ORT_VAR),
        }
    }

    /// The data directory: `$AFFECTSTREAM_HOME`, else `$XDG_DATA_HOME/affectstream` (when
    /// absolute), else `~/.local/share/affectstream`.
    pub fn data_dir(&self) -> (PathBuf, DataDirOrigin) {
        if let Some(dir) = set(&self.affectstream_home) {
            return (PathBuf::from(dir), DataDirOrigin::AffectstreamHome);
        }
        if let Some(xdg) = set(&self.xdg_data_home).map(Path::new)
            && xdg.is_absolute()
        {
            return (xdg.join("affectstream"), DataDirOrigin::XdgDataHome);
        }
        match &self.home {
            Some(home) => (home.join(".local/share/affectstream"), DataDirOrigin::Home),
            None => (
                PathBuf::from("~/.local/share/affectstream"),
                DataDirOrigin::NoHome,
            ),
        }
    }

    /// `flag`, else the variable's value, else `relative` inside the data directory.
    fn locate(
        &self,
        flag: Option<&Path>,
        var: &'static str,
        value: &Option<OsString>,
        relative: &str,
    ) -> Located {
        if let Some(path) = flag {
            return Located {
                path: path.to_owned(),
                origin: Origin::Flag,
            };
        }
        if let Some(value) = set(value) {
            return Located {
                path: PathBuf::from(value),
                origin: Origin::Env(var),
            };
        }
        let (dir, origin) = self.data_dir();
        Located {
            path: dir.join(relative),
            origin: Origin::DataDir(origin),
        }
    }

    /// The model manifest: `--models`, else `$AFFECTSTREAM_MODELS_TOML`, else
    /// `models.toml` in the data directory.
    pub fn manifest_path(&self, flag: Option<&Path>) -> Located {
        self.locate(flag, MANIFEST_VAR, &self.models_toml, MANIFEST_FILE)
    }

    /// The model directory: `--model-dir`, else `$AFFECTSTREAM_MODEL_DIR`, else `models/` in
    /// the data directory.
    pub fn model_dir(&self, flag: Option<&Path>) -> Located {
        self.locate(flag, MODEL_DIR_VAR, &self.model_dir, MODELS_SUBDIR)
    }

    /// The ONNX Runtime library: `flag`, else `$ORT_DYLIB_PATH`, else
    /// `lib/libonnxruntime.so` in the data directory.
    pub fn ort_library(&self, flag: Option<&Path>) -> Located {
        self.locate(flag, ORT_VAR, &self.ort_dylib_path, ORT_LIBRARY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        };
        Environment {
            affectstream_home: get("AFFECTSTREAM_HOME"),
            xdg_data_home: get("XDG_DATA_HOME"),
            home: get("HOME").map(PathBuf::from),
            models_toml: get("AFFECTSTREAM_MODELS_TOML"),
            model_dir: get("AFFECTSTREAM_MODEL_DIR"),
            ort_dylib_path: get("ORT_DYLIB_PATH"),
        }
    }

    #[test]
    fn the_data_directory_is_affectstream_home_then_xdg_then_home() {
        let all = [
            ("AFFECTSTREAM_HOME", "/srv/afs"),
            ("XDG_DATA_HOME", "/x/data"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(
            env(&all).data_dir(),
            ("/srv/afs".into(), DataDirOrigin::AffectstreamHome)
        );
        assert_eq!(
            env(&all[1..]).data_dir(),
            ("/x/data/affectstream".into(), DataDirOrigin::XdgDataHome)
        );
        assert_eq!(
            env(&all[2..]).data_dir(),
            (
                "/home/u/.local/share/affectstream".into(),
                DataDirOrigin::Home
            )
        );
        // Empty values count as unset; a relative XDG_DATA_HOME is ignored (XDG spec).
        for skipped in [("AFFECTSTREAM_HOME", ""), ("XDG_DATA_HOME", "")] {
            assert_eq!(
                env(&[skipped, ("HOME", "/home/u")]).data_dir().1,
                DataDirOrigin::Home
            );
        }
        assert_eq!(
            env(&[("XDG_DATA_HOME", "rel/data"), ("HOME", "/home/u")])
                .data_dir()
                .1,
            DataDirOrigin::Home
        );
        let (path, origin) = env(&[]).data_dir();
        assert_eq!(origin, DataDirOrigin::NoHome);
        assert!(!path.is_absolute(), "{}", path.display());
    }

    #[test]
    fn a_flag_beats_the_environment_which_beats_the_data_directory() {
        let e = env(&[
            ("AFFECTSTREAM_HOME", "/srv/afs"),
            ("AFFECTSTREAM_MODELS_TOML", "/etc/m.toml"),
            ("AFFECTSTREAM_MODEL_DIR", "/opt/models"),
            ("ORT_DYLIB_PATH", "/opt/libonnxruntime.so.1.32.0"),
        ]);
        let flag = Path::new("/cli/path");
        for located in [
            e.manifest_path(Some(flag)),
            e.model_dir(Some(flag)),
            e.ort_library(Some(flag)),
        ] {
            assert_eq!(located.path, flag);
            assert_eq!(located.origin, Origin::Flag);
        }
        assert_eq!(
            e.manifest_path(None),
            Located {
                path: "/etc/m.toml".into(),
                origin: Origin::Env(MANIFEST_VAR)
            }
        );
        assert_eq!(e.model_dir(None).path, Path::new("/opt/models"));
        assert_eq!(e.model_dir(None).origin, Origin::Env(MODEL_DIR_VAR));
        assert_eq!(
            e.ort_library(None).path,
            Path::new("/opt/libonnxruntime.so.1.32.0")
        );
        assert_eq!(e.ort_library(None).origin, Origin::Env(ORT_VAR));

        // Without (or with empty) overrides: the data directory's layout.
        for e in [
            env(&[("AFFECTSTREAM_HOME", "/srv/afs")]),
            env(&[
                ("AFFECTSTREAM_HOME", "/srv/afs"),
                ("AFFECTSTREAM_MODELS_TOML", ""),
                ("AFFECTSTREAM_MODEL_DIR", ""),
                ("ORT_DYLIB_PATH", ""),
            ]),
        ] {
            let home = Origin::DataDir(DataDirOrigin::AffectstreamHome);
            assert_eq!(
                e.manifest_path(None),
                Located {
                    path: "/srv/afs/models.toml".into(),
                    origin: home
                }
            );
            assert_eq!(e.model_dir(None).path, Path::new("/srv/afs/models"));
            assert_eq!(
                e.ort_library(None).path,
                Path::new("/srv/afs/lib/libonnxruntime.so")
            );
            assert_eq!(e.ort_library(None).origin, home);
        }
        let xdg = env(&[("XDG_DATA_HOME", "/x"), ("HOME", "/home/u")]);
        assert_eq!(
            xdg.model_dir(None).path,
            Path::new("/x/affectstream/models")
        );
        let home = env(&[("HOME", "/home/u")]);
        assert_eq!(
            home.manifest_path(None).path,
            Path::new("/home/u/.local/share/affectstream/models.toml")
        );
    }

    #[test]
    fn located_paths_say_where_they_came_from() {
        let e = env(&[("AFFECTSTREAM_HOME", "/tmp/empty")]);
        let text = e.manifest_path(None).to_string();
        assert_eq!(
            text,
            "/tmp/empty/models.toml (in the data directory, from AFFECTSTREAM_HOME)"
        );
        let e = env(&[("ORT_DYLIB_PATH", "/x.so")]);
        assert_eq!(
            e.ort_library(None).to_string(),
            "/x.so (from ORT_DYLIB_PATH)"
        );
        assert!(env(&[]).model_dir(None).to_string().contains(HOME_VAR));
    }
}
