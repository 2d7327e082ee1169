//! Wires the stages into threads joined by bounded channels and runs a source to its end.
//!
//! ```text
//! capture (GStreamer threads) ─video─▶ face thread ─crops─▶ encoder thread ─faces─┐
//!                             ─audio─▶ audio thread ───────────────voice──────────┴▶ fusion ─records─▶ sink
//!                             ─layout───────────────────────────────────────────────▶
//! ```

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::audio::vad::SileroVad;
use crate::audio::{AudioConfig, AudioError, AudioStage, ProsodyHeads};
use crossbeam_channel::{Receiver, Sender};

use crate::audio::speech::SpeechEncoder;
use crate::capture::{Capture, CaptureError, CaptureOptions, CaptureOutputs, Source};
use crate::encode::ClassHead;
use crate::encode::expression::{EncodeError, ExpressionConfig, ExpressionEncoder};
use crate::face::{FaceConfig, FaceError, FaceStage, load_detector};
use crate::fusion::params::FusionParamError;
use crate::fusion::{Fusion, FusionConfig};
use crate::manifest::{Manifest, ManifestError};
use crate::metrics::LatencyStats;
use crate::record::Record;
use crate::runtime::{DeviceRequest, Provider, Runtime, RuntimeError};
use crate::sink::{JsonlSink, JsonlTarget, SinkError, SinkSummary};

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
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Fusion(#[from] FusionParamError),
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
    /// Show a progress bar on stderr.
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
    /// Records written.
    pub records: u64,
    /// Records with at least one face.
    pub records_with_faces: u64,
    /// Frames decoded.
    pub frames: u64,
    /// Wall time from pipeline start to the last record written.
    pub wall: Duration,
    /// Execution provider used.
    pub provider: Provider,
    /// Face detector used.
    pub detector: &'static str,
    /// Latency statistics.
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

/// The loaded models, ready to be moved into stage threads.
pub struct Models {
    /// Execution provider in use.
    pub provider: Provider,
    /// Face detection, tracking and crops.
    pub face: FaceStage,
    /// Expression encoder (the face ensemble).
    pub expression: ExpressionEncoder,
    /// Voice activity and speech emotion.
    pub audio: AudioStage,
}

impl Models {
    /// Loads and checks every model the manifest lists for the pipeline.
    pub fn load(opts: &RunOptions) -> Result<Self, PipelineError> {
        let manifest = Manifest::load(&opts.manifest, &opts.model_dir)?;
        let runtime = Runtime::new(opts.device)?;
        let detector = load_detector(&runtime, &manifest, opts.face.detector)?;
        let expression = ExpressionEncoder::from_manifest(
            &runtime,
            &manifest,
            opts.expression.clone(),
            opts.face.crop_margin,
        )?;
        let vad = SileroVad::new(&runtime, &manifest.verified_path("vad")?)?;
        let heads_path = manifest
            .prosody_head_path()
            .ok_or_else(|| ManifestError::Invalid {
                role: "prosody_head".into(),
                message: "the manifest names no prosody_head file".into(),
            })?;
        let heads = ProsodyHeads::load(&heads_path).map_err(|message| ManifestError::Invalid {
            role: "prosody_head".into(),
            message,
        })?;
        // The speech-emotion CNN is optional: a weak placeholder the voice can do without, also
        // when its file could not be had (setup could not reach its source).
        let speech = match manifest.entry("speech_emotion") {
            Ok(entry) if opts.audio.cnn_weight > 0.0 => {
                match manifest.optional_path("speech_emotion")? {
                    Some(path) => Some(SpeechEncoder::new(
                        &runtime,
                        &path,
                        ClassHead::from_entry("speech_emotion", entry)?,
                    )?),
                    None => None,
                }
            }
            _ => None,
        };
        Ok(Self {
            provider: runtime.provider(),
            face: FaceStage::new(detector, opts.face),
            expression,
            audio: AudioStage::new(vad, speech, heads, opts.audio),
        })
    }
}

fn join<T>(handle: thread::JoinHandle<T>, name: &'static str) -> Result<T, PipelineError> {
    handle.join().map_err(|_| PipelineError::StageCrashed(name))
}

/// Runs `opts.source` to its end and writes every record. On a decode error the records of
/// what decoded are written and flushed before the error is returned.
pub fn run(opts: &RunOptions) -> Result<RunSummary, PipelineError> {
    let source = Source::parse(&opts.source)?;
    let models = Models::load(opts)?;
    run_with_models(opts, &source, models, |_| {}).map(|(summary, _)| summary)
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
    let (capture, outputs) = Capture::start_with(source, opts.capture)?;
    run_capture(opts, source, sink, capture, outputs, models, observe)
}

/// [`run_with_models`] on a capture already started, whose outputs the caller may have
/// tapped or replaced (the live demo: a camera with a microphone's audio, a display tap on
/// the video).
pub fn run_capture(
    opts: &RunOptions,
    source: &Source,
    sink: JsonlSink,
    capture: Capture,
    outputs: CaptureOutputs,
    models: Models,
    mut observe: impl FnMut(&Record) + Send + 'static,
) -> Result<(RunSummary, Models), PipelineError> {
    let started = Instant::now();
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    if let Some(limit) = opts.max_duration {
        let stop = capture.stop_handle();
        thread::Builder::new()
            .name("affectstream-timer".into())
            .spawn(move || {
                // Wakes at the limit, or earlier when the run ends (the sender is dropped).
                if done_rx.recv_timeout(limit).is_err() {
                    stop.stop();
                }
            })
            .map_err(|_| PipelineError::StageCrashed("timer"))?;
    }
    let counters = capture.counters.clone();
    let progress = opts
        .progress
        .then(|| progress_bar(capture.duration()))
        .flatten();

    let mut fusion_config = opts.fusion.clone();
    fusion_config.wait_for_voice &= !(opts.capture.paced || source.is_live());
    let (stages, records_rx) = Stages::spawn(models, outputs, fusion_config, &source.name, None)?;
    let bar = progress.clone();
    let sink = thread::Builder::new()
        .name("affectstream-sink".into())
        .spawn(move || {
            sink.run(records_rx, |r| {
                if let Some(bar) = &bar {
                    bar.set_position((r.t * 1000.0) as u64);
                }
                observe(r);
            })
        })
        .map_err(|_| PipelineError::StageCrashed("sink"))?;

    let captured = capture.wait();
    drop(done_tx);
    let models = stages.join();
    let summary = join(sink, "sink")?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    // A stage's own error explains a capture failure it caused (its channel closed), so it
    // comes first.
    let models = models?;
    let summary = summary?;
    captured?;
    let frames = counters.frames.load(std::sync::atomic::Ordering::Relaxed);
    Ok((RunSummary::new(summary, frames, started, &models), models))
}

/// The stage threads of one source: face, expression encoder, audio and fusion, joined by
/// bounded channels, fed by a capture's outputs and producing records.
pub struct Stages {
    provider: Provider,
    face: thread::JoinHandle<Result<FaceStage, FaceError>>,
    encode: thread::JoinHandle<Result<ExpressionEncoder, EncodeError>>,
    audio: thread::JoinHandle<Result<AudioStage, AudioError>>,
    fusion: thread::JoinHandle<()>,
}

impl Stages {
    /// Starts the stage threads on `inputs`; records of `source_name` come out of the
    /// returned channel, which closes once the inputs have closed and everything drained.
    pub fn spawn(
        models: Models,
        inputs: CaptureOutputs,
        fusion: FusionConfig,
        source_name: &str,
        stream_name: Option<String>,
    ) -> Result<(Self, Receiver<Record>), PipelineError> {
        let (records_tx, records_rx) = crossbeam_channel::bounded::<Record>(STAGE_QUEUE);
        let stages =
            Self::spawn_into(models, inputs, fusion, source_name, stream_name, records_tx)?;
        Ok((stages, records_rx))
    }

    /// [`Stages::spawn`] sending records into `records_tx` (shared by several streams).
    pub fn spawn_into(
        models: Models,
        inputs: CaptureOutputs,
        fusion: FusionConfig,
        source_name: &str,
        stream_name: Option<String>,
        records_tx: Sender<Record>,
    ) -> Result<Self, PipelineError> {
        let (crops_tx, crops_rx) = crossbeam_channel::bounded(STAGE_QUEUE);
        let (faces_tx, faces_rx) = crossbeam_channel::bounded(STAGE_QUEUE);
        let (voice_tx, voice_rx) = crossbeam_channel::bounded(VOICE_QUEUE);
        let spawn = |name: &str| thread::Builder::new().name(format!("affectstream-{name}"));
        let Models {
            provider,
            face,
            expression,
            audio,
        } = models;
        // Invalid fusion parameters fail here, before any stage thread starts.
        let fusion_stage =
            Fusion::new(fusion, source_name.to_owned(), provider.name())?.with_stream(stream_name);
        let video_rx = inputs.video;
        let face = spawn("face")
            .spawn(move || face.run(video_rx, crops_tx))
            .map_err(|_| PipelineError::StageCrashed("face"))?;
        let encode = spawn("encode")
            .spawn(move || expression.run(crops_rx, faces_tx))
            .map_err(|_| PipelineError::StageCrashed("encode"))?;
        let audio_rx = inputs.audio;
        let audio = spawn("audio")
            .spawn(move || audio.run(audio_rx, voice_tx))
            .map_err(|_| PipelineError::StageCrashed("audio"))?;
        let layout_rx = inputs.layout;
        let fusion = spawn("fusion")
            .spawn(move || fusion_stage.run(faces_rx, voice_rx, layout_rx, records_tx))
            .map_err(|_| PipelineError::StageCrashed("fusion"))?;
        Ok(Self {
            provider,
            face,
            encode,
            audio,
            fusion,
        })
    }

    /// True once any stage thread has ended (normally only after its input closed; earlier
    /// means it failed).
    pub fn any_finished(&self) -> bool {
        self.face.is_finished()
            || self.encode.is_finished()
            || self.audio.is_finished()
            || self.fusion.is_finished()
    }

    /// Waits for every stage to end and hands the models back, or the first stage error.
    pub fn join(self) -> Result<Models, PipelineError> {
        let face = join(self.face, "face")?;
        let expression = join(self.encode, "encode")?;
        let audio = join(self.audio, "audio")?;
        join(self.fusion, "fusion")?;
        Ok(Models {
            provider: self.provider,
            face: face?,
            expression: expression?,
            audio: audio?,
        })
    }
}

fn progress_bar(duration: Option<Duration>) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match duration {
        Some(d) => indicatif::ProgressBar::new(d.as_millis() as u64),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {percent}% ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}
