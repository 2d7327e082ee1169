//! The front door: load the models, build a [`Pipeline`] from them and the run's settings,
//! spawn it on an input (a source to open, a capture already started, or channels something
//! else feeds) and hold the [`PipelineHandle`]: its `records()`, `stop()` and `join()`.
//! `run`, `demo`, `streams`, `bench` and `eval` all go through it; so can a program that
//! embeds the library (`examples/embed.rs`).
//!
//! ```text
//! capture (GStreamer threads) ─video─▶ face thread ─crops─▶ encoder thread ─faces─┐
//!                             ─audio─▶ audio thread ───────────────voice──────────┴▶ fusion ─records─▶ records() / sink
//!                             ─layout───────────────────────────────────────────────▶
//! ```

mod handle;
mod models;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use handle::{Finished, Input, Pipeline, PipelineHandle, RecordQueue, StopSignal};
pub use models::{Models, SharedModels};

use crate::audio::AudioConfig;
use crate::capture::{CaptureError, CaptureOptions, Source};
use crate::encode::expression::{EncodeError, ExpressionConfig};
use crate::face::{FaceConfig, FaceError};
use crate::fusion::FusionConfig;
use crate::fusion::params::FusionParamError;
use crate::manifest::ManifestError;
use crate::metrics::LatencyStats;
use crate::record::Record;
use crate::runtime::{DeviceRequest, Provider, RuntimeError};
use crate::sink::{JsonlSink, JsonlTarget, SinkError, SinkSummary};
use crate::stage::StageError;

/// Capacity of the channels between stages after capture.
pub const STAGE_QUEUE: usize = 8;
/// Capacity of the voice channel (one estimate per 32 ms).
pub const VOICE_QUEUE: usize = 256;

/// Any error that ends a run. Each variant's message names what failed and why.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Face(#[from] FaceError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A stage failed while running, at the frame (or stream time) named in the message.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// The fusion parameters are invalid (checked before anything loads).
    #[error(transparent)]
    Fusion(#[from] FusionParamError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("the {0} thread stopped unexpectedly")]
    StageCrashed(&'static str),
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The media to process (path or URI).
    pub source: String,
    /// Where records go.
    pub out: JsonlTarget,
    /// Execution provider request.
    pub device: DeviceRequest,
    /// Model manifest.
    pub manifest: PathBuf,
    /// Directory holding the model files.
    pub model_dir: PathBuf,
    /// Face stage settings.
    pub face: FaceConfig,
    /// Expression encoder settings: which ensemble set, how often it runs.
    pub expression: ExpressionConfig,
    /// Audio stage settings.
    pub audio: AudioConfig,
    /// Fusion settings.
    pub fusion: FusionConfig,
    /// Show a progress bar on stderr (when it is a terminal and the `progress` feature is on).
    pub progress: bool,
    /// Pacing and looping of the source.
    pub capture: CaptureOptions,
    /// Stop after this much wall time (then the source drains and the run ends normally).
    pub max_duration: Option<Duration>,
}

impl RunOptions {
    /// Options for `source` with every setting at its default: records to stdout, models from
    /// the default manifest, CPU or CUDA as available, no progress bar.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            out: JsonlTarget::Stdout,
            device: DeviceRequest::Auto,
            manifest: crate::manifest::default_manifest_path(),
            model_dir: crate::manifest::default_model_dir(),
            face: FaceConfig::default(),
            expression: ExpressionConfig::default(),
            audio: AudioConfig::default(),
            fusion: FusionConfig::default(),
            progress: false,
            capture: CaptureOptions::default(),
            max_duration: None,
        }
    }
}

/// What a finished run reports.
pub struct RunSummary {
    /// Records written by the run's sink (0 when the caller read `records()` itself).
    pub records: u64,
    /// Records with at least one face (as counted by the sink).
    pub records_with_faces: u64,
    /// Frames decoded.
    pub frames: u64,
    /// Wall time from pipeline start to the last record written.
    pub wall: Duration,
    /// Execution provider used.
    pub provider: Provider,
    /// Face detector used.
    pub detector: &'static str,
    /// Latency statistics (as measured by the sink).
    pub latency: LatencyStats,
}

impl RunSummary {
    /// The summary of a finished run: what its sink counted, the frames its capture decoded,
    /// the wall time since `started`, and the provider and detector of its models.
    pub fn new(sink: SinkSummary, frames: u64, started: Instant, models: &Models) -> Self {
        Self {
            records: sink.records,
            records_with_faces: sink.records_with_faces,
            frames,
            wall: started.elapsed(),
            provider: models.provider,
            detector: models.face.detector_name(),
            latency: sink.latency,
        }
    }
}

/// Runs `opts.source` to its end and writes every record. On a decode error the records of
/// what decoded are written and flushed before the error is returned.
pub fn run(opts: &RunOptions) -> Result<RunSummary, PipelineError> {
    let source = Source::parse(&opts.source)?;
    let pipeline = Pipeline::load(opts)?;
    let sink = JsonlSink::open(&opts.out)?;
    let mut handle = pipeline.spawn(Input::Source(source))?;
    handle.sink(sink, |_| {})?;
    Ok(handle.join()?.summary)
}

/// [`run`] with models already loaded; `observe` sees every record as it is written (on the
/// sink thread). Hands the models back, reset, for the next source.
pub fn run_with_models(
    opts: &RunOptions,
    source: &Source,
    models: Models,
    observe: impl FnMut(&Record) + Send + 'static,
) -> Result<(RunSummary, Models), PipelineError> {
    let sink = JsonlSink::open(&opts.out)?;
    let mut handle = Pipeline::new(models, opts)?.spawn(Input::Source(source.clone()))?;
    handle.sink(sink, observe)?;
    let finished = handle.join()?;
    Ok((finished.summary, finished.models))
}
