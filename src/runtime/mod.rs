//! ONNX Runtime: finding the shared library, the execution provider, and session creation with
//! the settings this pipeline relies on (one intra-op thread, no spinning: stages run in
//! parallel on their own threads instead, which measured twice as fast on 2 cores). Every
//! model is loaded once per process and shared by the streams: the face models behind a
//! cross-stream batcher ([`batch`], [`batched_session`]), the audio models behind a lock
//! ([`SharedSession`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use ort::ep::ExecutionProvider as _;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use crate::manifest::ManifestError;

pub mod batch;
pub mod batched_session;
pub mod head;

/// Errors setting up ONNX Runtime or loading a model into it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found at {looked}; {hint}, or set ORT_DYLIB_PATH to a libonnxruntime.so of version >= 1.24",
        hint = crate::home::INSTALL_HINT
    )]
    LibraryMissing { looked: String },
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    LibraryLoad { path: PathBuf, message: String },
    #[error(
        "execution provider {provider} could not be registered: {message} (use --device cpu, or run scripts/setup.sh --gpu on a machine with CUDA)"
    )]
    Provider { provider: String, message: String },
    #[error("cannot load model {path}: {message}")]
    Model { path: PathBuf, message: String },
}

/// Errors loading or running a model (expression, speech, voice activity): the runtime's error,
/// the manifest's, or what the model itself got wrong.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("model {path} ({role}): {message}")]
    Member {
        role: String,
        path: PathBuf,
        message: String,
    },
    #[error("expression model inference failed: {0}")]
    Inference(#[from] ort::Error),
    #[error(transparent)]
    Batch(#[from] batch::BatchError),
    #[error("cutting a face crop failed: {0}")]
    Crop(#[from] opencv::Error),
    #[error("model {path} does not fit its role: {message}")]
    WrongModel {
        path: std::path::PathBuf,
        message: String,
    },
}

/// Where inference runs, as asked on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceRequest {
    /// CUDA when ONNX Runtime offers it, else CPU (logged).
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA or an error.
    Cuda,
}

impl DeviceRequest {
    /// The names `FromStr` accepts, for help texts.
    pub const NAMES: &'static [&'static str] = &["auto", "cpu", "cuda"];
}

impl std::str::FromStr for DeviceRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            _ => Err(format!("unknown device '{s}' (auto, cpu or cuda)")),
        }
    }
}

/// The execution provider actually in use; written into every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// ONNX Runtime's CPU execution provider.
    Cpu,
    /// ONNX Runtime's CUDA execution provider.
    Cuda,
}

impl Provider {
    /// Lowercase name, as in the records.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
        }
    }
}

/// A loaded ONNX Runtime with a chosen execution provider; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    env: ort::environment::Environment,
    provider: Provider,
}

/// The process-wide ONNX Runtime environment (the library can be loaded once per process).
static ORT_ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Path of the ONNX Runtime library: `ORT_DYLIB_PATH`, else `lib/libonnxruntime.so` in the
/// data directory, where `scripts/setup.sh` copies it (see [`crate::home`]).
pub fn find_library() -> Result<PathBuf, RuntimeError> {
    library_at(crate::home::Environment::from_process().ort_library(None))
}

/// The library at `located`, when it is a file; else the error saying where it looked.
fn library_at(located: crate::home::Located) -> Result<PathBuf, RuntimeError> {
    if located.path.is_file() {
        Ok(located.path)
    } else {
        Err(RuntimeError::LibraryMissing {
            looked: located.to_string(),
        })
    }
}

impl Runtime {
    /// Loads the ONNX Runtime library (once per process) and picks the execution provider.
    pub fn new(device: DeviceRequest) -> Result<Self, RuntimeError> {
        let path = find_library()?;
        let loaded = ORT_ENVIRONMENT.get_or_init(|| match ort::init_from(&path) {
            Ok(builder) => builder
                .with_name("affectstream")
                .with_telemetry(false)
                .build()
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        });
        let env = match loaded {
            Ok(env) => env.clone(),
            Err(message) => {
                return Err(RuntimeError::LibraryLoad {
                    path,
                    message: message.clone(),
                });
            }
        };
        let cuda_offered = ort::ep::CUDA::is_available().unwrap_or(false);
        let provider = match device {
            DeviceRequest::Cpu => Provider::Cpu,
            DeviceRequest::Cuda if !cuda_offered => {
                return Err(RuntimeError::Provider {
                    provider: "cuda".into(),
                    message: "this ONNX Runtime library has no CUDA execution provider".into(),
                });
            }
            DeviceRequest::Cuda => Provider::Cuda,
            DeviceRequest::Auto if cuda_offered => Provider::Cuda,
            DeviceRequest::Auto => Provider::Cpu,
        };
        tracing::info!(library = %path.display(), provider = provider.name(), "ONNX Runtime ready");
        Ok(Self { env, provider })
    }

    /// The execution provider every session of this runtime uses.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Loads `path` into a session: one intra-op thread, no spinning, full graph optimisation,
    /// on this runtime's provider (registration failure is an error, never a silent fallback).
    pub fn session(&self, path: &Path) -> Result<Session, RuntimeError> {
        let model_err = |message: String| RuntimeError::Model {
            path: path.to_owned(),
            message,
        };
        let opt = |e: ort::Error<ort::session::builder::SessionBuilder>| model_err(e.to_string());
        let mut builder = Session::builder(&self.env)
            .map_err(|e| model_err(e.to_string()))?
            .with_intra_threads(1)
            .map_err(opt)?
            .with_inter_threads(1)
            .map_err(opt)?
            .with_intra_op_spinning(false)
            .map_err(opt)?
            .with_inter_op_spinning(false)
            .map_err(opt)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(opt)?;
        if self.provider == Provider::Cuda {
            builder = builder
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| RuntimeError::Provider {
                    provider: "cuda".into(),
                    message: e.to_string(),
                })?;
        }
        builder
            .commit_from_file(path)
            .map_err(|e| model_err(e.to_string()))
    }
}

/// A session several streams use in turn (`ort` runs a session from one thread at a time):
/// the audio models, whose calls are short and carry per-stream state as inputs. Cheap to
/// clone.
#[derive(Clone)]
pub struct SharedSession {
    session: Arc<Mutex<Session>>,
}

impl SharedSession {
    /// Shares `session`.
    pub fn new(session: Session) -> Self {
        Self {
            session: Arc::new(Mutex::new(session)),
        }
    }

    /// The session, for one call. A lock poisoned by a panicking user is taken over: the
    /// session holds no state between calls.
    pub fn lock(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::{DataDirOrigin, Environment, Located, Origin};

    #[test]
    fn a_missing_library_names_where_it_looked_and_setup() {
        let env = Environment {
            affectstream_home: Some("/nonexistent/afs-home".into()),
            ..Environment::default()
        };
        let located = env.ort_library(None);
        assert_eq!(
            located.origin,
            Origin::DataDir(DataDirOrigin::AffectstreamHome)
        );
        let err = library_at(located).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/afs-home/lib/libonnxruntime.so (in the data directory, from AFFECTSTREAM_HOME)")
                && err.contains("scripts/setup.sh")
                && err.contains("ORT_DYLIB_PATH"),
            "{err}"
        );
        let this_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/runtime/mod.rs");
        let found = library_at(Located {
            path: this_file.clone(),
            origin: Origin::Env(crate::home::ORT_VAR),
        });
        assert_eq!(found.unwrap(), this_file);
    }
}
