//! The model manifest (`models/models.toml`): which file fills each model role, its sha256, how
//! to feed it and how to read its output. Models are data: a user swaps one by editing the
//! manifest, not the code.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Errors reading the manifest or resolving a model file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read model manifest {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model manifest {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("model manifest has no entry for role '{0}'")]
    MissingRole(String),
    #[error("model file {path} ({role}) is missing; run scripts/setup.sh to fetch the models")]
    MissingFile { role: String, path: PathBuf },
    #[error(
        "model file {path} ({role}) has sha256 {actual}, the manifest expects {expected}; run scripts/setup.sh to fetch it again"
    )]
    Checksum {
        role: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("model '{role}' in the manifest: {message}")]
    Invalid { role: String, message: String },
}

/// The whole manifest: one entry per model role.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// Entries by role (face_detector, face_expression, vad, speech_emotion, ...).
    pub models: BTreeMap<String, ModelEntry>,
    /// Prosody head file, relative to the manifest's directory.
    #[serde(default)]
    pub prosody_head: Option<String>,
    /// Directory of the manifest file (set by [`Manifest::load`]).
    #[serde(skip)]
    pub manifest_dir: PathBuf,
    /// Directory holding the model files (set by [`Manifest::load`], not read from the file).
    #[serde(skip)]
    pub model_dir: PathBuf,
}

/// One model: where it comes from and how to use it.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    /// File name inside the model directory.
    pub file: String,
    /// Expected sha256 of the file, lowercase hex.
    pub sha256: String,
    /// Human-readable provenance.
    #[serde(default)]
    pub source: String,
    /// Licence of the weights.
    #[serde(default)]
    pub licence: String,
    /// How to build the model's input.
    #[serde(default)]
    pub input: InputSpec,
    /// How to read the model's output.
    pub head: HeadSpec,
}

/// Input layout and normalisation of a model.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InputSpec {
    /// Tensor layout: NCHW, NHWC (images), NT / NTC (audio).
    #[serde(default)]
    pub layout: String,
    /// Colour order for images: RGB, BGR or GRAY.
    #[serde(default)]
    pub color: String,
    /// Image size as [width, height]; [0, 0] means dynamic.
    #[serde(default)]
    pub size: [u32; 2],
    /// Per-channel mean, applied as (x/255 - mean) / std for classifiers, (x - mean) / std for
    /// raw 0..255 detectors.
    #[serde(default)]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation (see `mean`).
    #[serde(default)]
    pub std: Vec<f32>,
    /// Audio sample rate in Hz.
    #[serde(default)]
    pub sample_rate: u32,
    /// Audio samples per call (VAD).
    #[serde(default)]
    pub chunk: usize,
    /// Samples of context prepended to each call (VAD).
    #[serde(default)]
    pub context: usize,
    /// Audio window in seconds (speech emotion).
    #[serde(default)]
    pub window_s: f32,
}

/// How a model's output is interpreted.
#[derive(Debug, Clone, Deserialize)]
pub struct HeadSpec {
    /// yunet, haar, classes or vad.
    pub kind: String,
    /// Class labels in output order (`classes`).
    #[serde(default)]
    pub labels: Vec<String>,
    /// softmax when the output is logits, none when it is already probabilities.
    #[serde(default)]
    pub activation: String,
    /// Label → [valence, arousal] on Russell's circumplex, both in [-1, 1] (`classes`).
    #[serde(default)]
    pub va: BTreeMap<String, [f32; 2]>,
    /// Feature-map strides (`yunet`).
    #[serde(default)]
    pub strides: Vec<u32>,
}

impl Manifest {
    /// Reads `models.toml` in `manifest_dir`; model files are looked up in `model_dir`.
    pub fn load(manifest_path: &Path, model_dir: &Path) -> Result<Self, ManifestError> {
        let text =
            std::fs::read_to_string(manifest_path).map_err(|source| ManifestError::Read {
                path: manifest_path.to_owned(),
                source,
            })?;
        let mut manifest = Self::parse(&text).map_err(|e| match e {
            ManifestError::Parse { message, .. } => ManifestError::Parse {
                path: manifest_path.to_owned(),
                message,
            },
            other => other,
        })?;
        manifest.model_dir = model_dir.to_owned();
        manifest.manifest_dir = manifest_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Ok(manifest)
    }

    /// Parses and validates manifest text (file locations left empty).
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| ManifestError::Parse {
            path: PathBuf::new(),
            message: e.message().to_owned(),
        })?;
        for (role, entry) in &manifest.models {
            entry.validate(role)?;
        }
        Ok(manifest)
    }

    /// Path of the prosody head file, when the manifest names one.
    pub fn prosody_head_path(&self) -> Option<PathBuf> {
        self.prosody_head
            .as_ref()
            .map(|f| self.manifest_dir.join(f))
    }

    /// The entry for `role`.
    pub fn entry(&self, role: &str) -> Result<&ModelEntry, ManifestError> {
        self.models
            .get(role)
            .ok_or_else(|| ManifestError::MissingRole(role.to_owned()))
    }

    /// Path of the model file for `role`, after checking it exists and its sha256 matches.
    pub fn verified_path(&self, role: &str) -> Result<PathBuf, ManifestError> {
        let entry = self.entry(role)?;
        let path = self.model_dir.join(&entry.file);
        if !path.is_file() {
            return Err(ManifestError::MissingFile {
                role: role.to_owned(),
                path,
            });
        }
        let actual = sha256_file(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        if !actual.eq_ignore_ascii_case(&entry.sha256) {
            return Err(ManifestError::Checksum {
                role: role.to_owned(),
                path,
                expected: entry.sha256.clone(),
                actual,
            });
        }
        Ok(path)
    }
}

impl ModelEntry {
    fn validate(&self, role: &str) -> Result<(), ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            role: role.to_owned(),
            message,
        };
        if self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "sha256 '{}' is not 64 hex digits",
                self.sha256
            )));
        }
        match self.head.kind.as_str() {
            "classes" => {
                if self.head.labels.is_empty() {
                    return Err(invalid("a classes head needs labels".into()));
                }
                for label in &self.head.labels {
                    let Some([v, a]) = self.head.va.get(label) else {
                        return Err(invalid(format!(
                            "label '{label}' has no [valence, arousal] in head.va"
                        )));
                    };
                    if !(-1.0..=1.0).contains(v) || !(-1.0..=1.0).contains(a) {
                        return Err(invalid(format!(
                            "label '{label}': valence/arousal must lie in [-1, 1]"
                        )));
                    }
                }
            }
            "yunet" | "haar" | "vad" => {}
            other => return Err(invalid(format!("unknown head kind '{other}'"))),
        }
        Ok(())
    }
}

/// Lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut block)?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Repository root of this build: default home of `models/` and `.venv/`.
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Default manifest path (`models/models.toml`), overridable with `AFFECTSTREAM_MODELS_TOML`.
pub fn default_manifest_path() -> PathBuf {
    std::env::var_os("AFFECTSTREAM_MODELS_TOML")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("models").join("models.toml"))
}

/// Default model directory (`models/cache`), overridable with `AFFECTSTREAM_MODEL_DIR`.
pub fn default_model_dir() -> PathBuf {
    std::env::var_os("AFFECTSTREAM_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("models").join("cache"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_manifest_is_valid() {
        let m = Manifest::load(&default_manifest_path(), &default_model_dir()).unwrap();
        let fer = m.entry("face_expression").unwrap();
        assert_eq!(fer.head.labels.len(), 7);
        assert_eq!(fer.input.size, [64, 64]);
        assert!(m.entry("nope").is_err());
    }

    #[test]
    fn bad_manifests_are_rejected_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("afs-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.toml");
        std::fs::write(
            &path,
            "[models.x]\nfile='a'\nsha256='zz'\n[models.x.head]\nkind='vad'\n",
        )
        .unwrap();
        let err = Manifest::load(&path, &dir).unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        std::fs::write(&path, "[models.x\n").unwrap();
        let err = Manifest::load(&path, &dir).unwrap_err().to_string();
        assert!(err.contains("invalid"), "{err}");
        let sha = "0".repeat(64);
        std::fs::write(
            &path,
            format!("[models.x]\nfile='a.onnx'\nsha256='{sha}'\n[models.x.head]\nkind='vad'\n"),
        )
        .unwrap();
        let m = Manifest::load(&path, &dir).unwrap();
        assert!(matches!(
            m.verified_path("x"),
            Err(ManifestError::MissingFile { .. })
        ));
        std::fs::write(dir.join("a.onnx"), b"not a model").unwrap();
        assert!(matches!(
            m.verified_path("x"),
            Err(ManifestError::Checksum { .. })
        ));
    }
}
