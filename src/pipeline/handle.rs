//! [`Pipeline`] (models + settings, ready to run) and [`PipelineHandle`] (the running stage
//! threads): the one place that spawns the stages, starts a sink thread and joins everything
//! in the right order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::audio::AudioStage;
use crate::capture::{
    Capture, CaptureCounters, CaptureError, CaptureOptions, CaptureOutputs, Source, StopHandle,
};
use crate::encode::expression::ExpressionEncoder;
use crate::face::FaceStage;
use crate::fusion::{Fusion, FusionConfig};
use crate::record::Record;
use crate::runtime::Provider;
use crate::sink::{JsonlSink, SinkError, SinkSummary};
use crate::stage::StageError;

use super::{Models, PipelineError, RunOptions, RunSummary, STAGE_QUEUE, VOICE_QUEUE};

/// What a pipeline runs on.
pub enum Input {
    /// A source to open, with the pipeline's capture options (pacing, looping, live delivery).
    Source(Source),
    /// A capture the caller started, with its outputs (which the caller may have tapped or
    /// replaced: the live demo puts a display tap on the video and a microphone's audio in).
    Capture(Capture, CaptureOutputs),
    /// Channels something else feeds, such as a stream supervisor that reconnects a network
    /// camera into the same channels. The stages end when the feeder drops its senders; the
    /// feeder should watch [`PipelineHandle::stop_signal`] to know when to.
    Fed {
        /// The receiving ends the stages read.
        outputs: CaptureOutputs,
        /// The feeder's counters (frames decoded, dropped).
        counters: Arc<CaptureCounters>,
        /// Name of the source, for the records' `source` field.
        source_name: String,
        /// True for a live source (fusion does not wait for the voice of a frame then).
        live: bool,
    },
}

/// A channel several pipelines send their records into (the multi-stream hub reads it).
#[derive(Clone)]
pub struct RecordQueue {
    tx: Sender<Record>,
    rx: Receiver<Record>,
}

impl RecordQueue {
    /// A queue holding at most `capacity` records (a full queue holds the fusion threads back).
    pub fn bounded(capacity: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        Self { tx, rx }
    }

    /// The receiving end (shared by every clone).
    pub fn receiver(&self) -> Receiver<Record> {
        self.rx.clone()
    }
}

/// Loaded models with the settings of a run, ready to be spawned on an input.
pub struct Pipeline {
    models: Models,
    fusion: FusionConfig,
    capture: CaptureOptions,
    max_duration: Option<Duration>,
    progress: bool,
    stream: Option<String>,
    queue: Option<RecordQueue>,
}

impl Pipeline {
    /// Loads the models `opts` names (after checking its fusion parameters) and builds the
    /// pipeline.
    pub fn load(opts: &RunOptions) -> Result<Self, PipelineError> {
        Self::new(Models::load(opts)?, opts)
    }

    /// A pipeline running `models` with the stage, capture and time-limit settings of `opts`
    /// (its source and sink are given to [`Pipeline::spawn`] and [`PipelineHandle::sink`]).
    /// Invalid fusion parameters are an error here, before any thread starts.
    pub fn new(models: Models, opts: &RunOptions) -> Result<Self, PipelineError> {
        opts.fusion.params.validate()?;
        Ok(Self {
            models,
            fusion: opts.fusion.clone(),
            capture: opts.capture,
            max_duration: opts.max_duration,
            progress: opts.progress,
            stream: None,
            queue: None,
        })
    }

    /// Names the stream the records belong to (their `stream` field).
    pub fn stream_name(mut self, name: impl Into<String>) -> Self {
        self.stream = Some(name.into());
        self
    }

    /// Sends the records into `queue` (shared with other pipelines) instead of a queue of
    /// their own.
    pub fn records_into(mut self, queue: RecordQueue) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Runs without the wall-time limit of the options (a supervisor keeps its own).
    pub fn without_time_limit(mut self) -> Self {
        self.max_duration = None;
        self
    }

    /// Execution provider of the models.
    pub fn provider(&self) -> Provider {
        self.models.provider
    }

    /// Starts the stage threads on `input` (opening the source first for [`Input::Source`]).
    pub fn spawn(self, input: Input) -> Result<PipelineHandle, PipelineError> {
        let Self {
            models,
            mut fusion,
            capture: capture_options,
            max_duration,
            progress,
            stream,
            queue,
        } = self;
        let (capture, outputs, counters, source_name, live) = match input {
            Input::Source(source) => {
                let (capture, outputs) = Capture::start_with(&source, capture_options)?;
                let counters = capture.counters.clone();
                let live = source.is_live();
                (Some(capture), outputs, counters, source.name, live)
            }
            Input::Capture(capture, outputs) => {
                let counters = capture.counters.clone();
                let source = capture.source();
                let (name, live) = (source.name.clone(), source.is_live());
                (Some(capture), outputs, counters, name, live)
            }
            Input::Fed {
                outputs,
                counters,
                source_name,
                live,
            } => (None, outputs, counters, source_name, live),
        };
        // Paced and live sources run at the source's speed: a frame does not wait for the
        // voice that follows it.
        fusion.wait_for_voice &= !(capture_options.paced || live);
        let stop = StopSignal {
            flag: Arc::new(AtomicBool::new(false)),
            capture: capture.as_ref().map(Capture::stop_handle),
        };
        let duration = capture.as_ref().and_then(Capture::duration);
        let queue = queue.unwrap_or_else(|| RecordQueue::bounded(STAGE_QUEUE));
        let detector = models.face.detector_name();
        let provider = models.provider;
        let threads = StageThreads::spawn(models, outputs, fusion, &source_name, stream, queue.tx)?;
        let timer = match max_duration {
            Some(limit) => Some(spawn_timer(limit, stop.clone())?),
            None => None,
        };
        // The capture's bus is watched on a thread of its own, so the records channel closes
        // by itself at the end of the source, whether or not anyone has called `join` yet.
        let capture = capture
            .map(|capture| spawn_stage("capture", move || capture.wait()))
            .transpose()?;
        Ok(PipelineHandle {
            records: queue.rx,
            threads,
            capture,
            stop,
            counters,
            started: Instant::now(),
            provider,
            detector,
            sink: None,
            timer,
            progress: progress.then(|| progress_bar(duration)).flatten(),
        })
    }
}

/// Ends a running pipeline from any thread: stops its capture (what was delivered is still
/// processed) and raises the flag a feeder of [`Input::Fed`] watches.
#[derive(Clone)]
pub struct StopSignal {
    flag: Arc<AtomicBool>,
    capture: Option<StopHandle>,
}

impl StopSignal {
    /// Asks the pipeline to end.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Some(capture) = &self.capture {
            capture.stop();
        }
    }

    /// True once [`StopSignal::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The flag itself, for a feeder that polls an `AtomicBool`.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }
}

/// The running pipeline. Read its records from [`PipelineHandle::records`] (or attach a sink
/// with [`PipelineHandle::sink`]), end it early with [`PipelineHandle::stop`], and wait for it
/// with [`PipelineHandle::join`], which hands the models back.
pub struct PipelineHandle {
    records: Receiver<Record>,
    threads: StageThreads,
    /// The thread watching the capture's bus until its end (None for a fed input).
    capture: Option<thread::JoinHandle<Result<(), CaptureError>>>,
    stop: StopSignal,
    counters: Arc<CaptureCounters>,
    started: Instant,
    provider: Provider,
    detector: &'static str,
    sink: Option<thread::JoinHandle<Result<SinkSummary, SinkError>>>,
    /// Dropping the sender wakes the time-limit thread, which then ends.
    timer: Option<Sender<()>>,
    progress: Option<ProgressBar>,
}

/// What a joined pipeline hands back.
pub struct Finished {
    /// The models, reset, for the next source.
    pub models: Models,
    /// What the run did.
    pub summary: RunSummary,
}

impl PipelineHandle {
    /// The records, in order per stream; the channel closes once every stage has finished
    /// (after the source ended or [`PipelineHandle::stop`]). For a pipeline spawned into a
    /// shared [`RecordQueue`], these are the records of every pipeline on it.
    pub fn records(&self) -> &Receiver<Record> {
        &self.records
    }

    /// Asks the pipeline to end: the source stops, what it delivered is still processed, and
    /// the records channel closes.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// A handle that stops this pipeline from another thread.
    pub fn stop_signal(&self) -> StopSignal {
        self.stop.clone()
    }

    /// True once any stage thread has ended (normally only after its input closed; earlier
    /// means it failed, and [`PipelineHandle::join`] says why).
    pub fn stages_finished(&self) -> bool {
        self.threads.any_finished()
    }

    /// The capture's counters (frames decoded and dropped).
    pub fn counters(&self) -> &Arc<CaptureCounters> {
        &self.counters
    }

    /// Writes every record into `sink` on a thread of its own; `observe` sees each record as
    /// it is written. [`PipelineHandle::join`] then reports what the sink counted.
    pub fn sink(
        &mut self,
        sink: JsonlSink,
        mut observe: impl FnMut(&Record) + Send + 'static,
    ) -> Result<(), PipelineError> {
        let records = self.records.clone();
        let bar = self.progress.clone();
        let handle = thread::Builder::new()
            .name("affectstream-sink".into())
            .spawn(move || {
                sink.run(records, |r| {
                    if let Some(bar) = &bar {
                        bar.set_position((r.t * 1000.0) as u64);
                    }
                    observe(r);
                })
            })
            .map_err(|_| PipelineError::StageCrashed("sink"))?;
        self.sink = Some(handle);
        Ok(())
    }

    /// Waits until the source has ended and every stage has finished, then hands the models
    /// back with the run's summary. Records nobody reads (no sink, and no clone of
    /// `records()` held) are discarded. For [`Input::Fed`], the feeder must have dropped its
    /// senders first. A stage's own error comes before the capture error it caused (its
    /// channel closed); on a decode error, the records of what decoded are written first.
    pub fn join(self) -> Result<Finished, PipelineError> {
        let Self {
            records,
            threads,
            capture,
            stop: _,
            counters,
            started,
            provider,
            detector,
            sink,
            timer,
            progress,
        } = self;
        drop(records);
        let captured = capture
            .map(|h| h.join().map_err(|_| PipelineError::StageCrashed("capture")))
            .transpose()?;
        drop(timer);
        let models = threads.join();
        let sink = sink
            .map(|h| h.join().map_err(|_| PipelineError::StageCrashed("sink")))
            .transpose()?;
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        let models = models?;
        let sink = sink.transpose()?.unwrap_or_default();
        if let Some(captured) = captured {
            captured?;
        }
        let summary = RunSummary {
            records: sink.records,
            records_with_faces: sink.records_with_faces,
            frames: counters.frames.load(Ordering::Relaxed),
            wall: started.elapsed(),
            provider,
            detector,
            latency: sink.latency,
        };
        Ok(Finished { models, summary })
    }
}

fn spawn_timer(limit: Duration, stop: StopSignal) -> Result<Sender<()>, PipelineError> {
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    thread::Builder::new()
        .name("affectstream-timer".into())
        .spawn(move || {
            // Wakes at the limit, or earlier when the run ends (the sender is dropped).
            if let Err(crossbeam_channel::RecvTimeoutError::Timeout) = done_rx.recv_timeout(limit) {
                stop.stop();
            }
        })
        .map_err(|_| PipelineError::StageCrashed("timer"))?;
    Ok(done_tx)
}

/// The stage threads of one source: face, expression encoder, audio and fusion, joined by
/// bounded channels, fed by a capture's outputs and producing records.
struct StageThreads {
    provider: Provider,
    face: thread::JoinHandle<Result<FaceStage, StageError>>,
    encode: thread::JoinHandle<Result<ExpressionEncoder, StageError>>,
    audio: thread::JoinHandle<Result<AudioStage, StageError>>,
    fusion: thread::JoinHandle<()>,
}

impl StageThreads {
    fn spawn(
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
        let Models {
            provider,
            face,
            expression,
            audio,
        } = models;
        // Invalid fusion parameters fail here, before any stage thread starts.
        let fusion_stage =
            Fusion::new(fusion, source_name.to_owned(), provider.name())?.with_stream(stream_name);
        let CaptureOutputs {
            video,
            audio: audio_rx,
            layout,
        } = inputs;
        Ok(Self {
            provider,
            face: spawn_stage("face", move || face.run(video, crops_tx))?,
            encode: spawn_stage("encode", move || expression.run(crops_rx, faces_tx))?,
            audio: spawn_stage("audio", move || audio.run(audio_rx, voice_tx))?,
            fusion: spawn_stage("fusion", move || {
                fusion_stage.run(faces_rx, voice_rx, layout, records_tx)
            })?,
        })
    }

    fn any_finished(&self) -> bool {
        self.face.is_finished()
            || self.encode.is_finished()
            || self.audio.is_finished()
            || self.fusion.is_finished()
    }

    /// Waits for every stage to end and hands the models back, or the first stage error.
    fn join(self) -> Result<Models, PipelineError> {
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

fn spawn_stage<T: Send + 'static>(
    name: &'static str,
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<thread::JoinHandle<T>, PipelineError> {
    thread::Builder::new()
        .name(format!("affectstream-{name}"))
        .spawn(body)
        .map_err(|_| PipelineError::StageCrashed(name))
}

fn join<T>(handle: thread::JoinHandle<T>, name: &'static str) -> Result<T, PipelineError> {
    handle.join().map_err(|_| PipelineError::StageCrashed(name))
}

#[cfg(feature = "progress")]
type ProgressBar = indicatif::ProgressBar;

/// Without the `progress` feature there is no bar; this type has no values.
#[cfg(not(feature = "progress"))]
#[derive(Clone)]
enum ProgressBar {}

#[cfg(not(feature = "progress"))]
impl ProgressBar {
    fn set_position(&self, _: u64) {}
    fn finish_and_clear(self) {}
}

#[cfg(not(feature = "progress"))]
fn progress_bar(_duration: Option<Duration>) -> Option<ProgressBar> {
    None
}

#[cfg(feature = "progress")]
fn progress_bar(duration: Option<Duration>) -> Option<ProgressBar> {
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
