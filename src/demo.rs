//! `affectstream demo`: the live overlay on a camera and microphone, or on any source with its
//! own audio. Picks and opens the inputs, runs the pipeline on a background thread with a
//! display tap on the video, runs the overlay window on the main thread, and on quit stops the
//! pipeline, joins it and flushes the recording.
//!
//! ```text
//! camera (v4l2src) ──video──▶ tap (drop-oldest, display copy) ──▶ pipeline ──records──▶ LiveState ◀── overlay (UI thread)
//! microphone (cpal) ─audio──────────────────────────────────────▶    │                  Recorder (r)
//! or --source (file/URI, paced 1x) ─video, audio─▶ tap ─────────────▶
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use crossbeam_channel::Receiver;

use crate::capture::microphone::{Microphone, MicrophoneOptions};
use crate::capture::{
    Capture, CaptureError, CaptureOutputs, CaptureTargets, Layout, Source, VIDEO_QUEUE, VideoFrame,
    deliver,
};
use crate::overlay::{
    DisplayState, LiveState, OverlayError, OverlaySummary, QuitSignal, Recorder, SourceState,
    VoiceInput, check_display, run_overlay,
};
use crate::pipeline::{
    Finished, Input, Pipeline, PipelineError, PipelineHandle, RunOptions, RunSummary,
};
use crate::record::{Record, StatusRecord};
use crate::sink::{JsonlSink, JsonlTarget, SinkError};
use crate::streams::{self, StreamSettings, StreamSpec, StreamState};

/// What the demo shows and where it writes.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Models, device, stage settings (its `source`, `out` and pacing are set by the demo).
    pub run: RunOptions,
    /// A file or URI to show instead of the camera (played at 1x with its own audio).
    pub source: Option<String>,
    /// Camera index (`/dev/video<N>`) when no source is given.
    pub camera: u32,
    /// Microphone name (part of it) or id; None: the default input.
    pub mic: Option<String>,
    /// Where recordings (`r`) and screenshots (`s`) go.
    pub output_dir: PathBuf,
    /// Closes the window from outside (the binary raises it on Ctrl-C and SIGTERM).
    pub quit: QuitSignal,
}

/// Why the demo could not run. Each message names what is missing and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "no camera found ({device} missing); choose a source with --source file.mp4 \
         (or an rtsp:// URI), or another camera with --camera N"
    )]
    NoCamera { device: String },
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("the {0} thread stopped unexpectedly")]
    Crashed(&'static str),
}

/// What a finished demo reports.
pub struct DemoSummary {
    /// What the overlay measured (shown fps, the last latencies it displayed).
    pub overlay: OverlaySummary,
    /// The pipeline's own summary (None when it failed).
    pub pipeline: Option<RunSummary>,
    /// The recording written with `r`, if one was open at quit: file and record count.
    pub recording: Option<(PathBuf, u64)>,
}

/// Runs the demo until the window is closed.
pub fn run(opts: &DemoOptions) -> Result<DemoSummary, DemoError> {
    // Cheap checks first: no display or no camera fail before models load.
    check_display()?;
    if opts.source.is_none() {
        let device = crate::capture::camera::camera_device(opts.camera);
        if !device.exists() {
            return Err(DemoError::NoCamera {
                device: device.display().to_string(),
            });
        }
    }
    let source = match &opts.source {
        Some(text) => Source::parse(text)?,
        None => Source::camera(opts.camera),
    };
    let mut run = opts.run.clone();
    run.source = source.name.clone();
    run.out = JsonlTarget::Discard;
    run.progress = false;
    // Files play at 1x like a camera; live sources are paced by nature.
    run.capture.paced = true;
    // Network sources drop their oldest frame when the pipeline is behind, like the camera.
    run.capture.live = source.is_live();
    let pipeline = Pipeline::load(&run)?;

    // A file shows by its name; URIs and cameras as given.
    let shown = source
        .path
        .as_deref()
        .and_then(std::path::Path::file_name)
        .map_or_else(|| source.name.clone(), |n| n.to_string_lossy().into_owned());
    let mut display = DisplayState {
        conflict_threshold: run.fusion.params.conflict.on,
        ..DisplayState::new(shown)
    };
    display.stats.provider = pipeline.provider().name().to_owned();
    let live = LiveState::new(display);
    let recorder = Arc::new(Recorder::new(&opts.output_dir));

    let (feed, mut outputs, microphone) = match &opts.source {
        // A network source is kept connected by the stream supervisor: it reconnects after
        // a drop, and the overlay shows "reconnecting" meanwhile.
        Some(_) if source.is_live() => {
            let (targets, outputs) = CaptureTargets::channels(true);
            (Feed::Supervised(targets), outputs, None)
        }
        Some(_) => {
            let (capture, outputs) = Capture::start_with(&source, run.capture)?;
            (Feed::Capture(capture), outputs, None)
        }
        None => {
            let (capture, video) = Capture::start_camera(opts.camera)?;
            let mic_options = MicrophoneOptions {
                device: opts.mic.clone(),
                ..MicrophoneOptions::default()
            };
            let (microphone, audio) = match Microphone::start(&mic_options, capture.stream_clock())
            {
                Ok((mic, audio)) => {
                    live.set_voice_input(VoiceInput::Present);
                    (Some(mic), audio)
                }
                Err(e) => {
                    tracing::warn!("{e}: running face-only");
                    live.set_voice_input(VoiceInput::Absent(e.to_string()));
                    // A closed audio channel: the audio stage ends at once.
                    (None, crossbeam_channel::bounded(1).1)
                }
            };
            let (layout_tx, layout) = crossbeam_channel::bounded(1);
            layout_tx
                .try_send(Layout {
                    has_video: true,
                    has_audio: microphone.is_some(),
                })
                .ok();
            let outputs = CaptureOutputs {
                video,
                audio,
                layout,
            };
            (Feed::Capture(capture), outputs, microphone)
        }
    };
    if let Some(mic) = &microphone {
        live.set_audio_dropped(mic.stats.dropped_blocks.clone());
    }
    // When the video ends, the microphone stops too (so the audio stage can finish).
    let mic_stop = microphone.as_ref().map(Microphone::stop_flag);
    outputs.video = tap_video(outputs.video, live.clone(), mic_stop)?;

    let (input, supervised) = match feed {
        Feed::Capture(capture) => (Input::Capture(capture, outputs), None),
        Feed::Supervised(targets) => {
            let input = Input::Fed {
                outputs,
                counters: targets.counters.clone(),
                source_name: source.name.clone(),
                live: true,
            };
            (input, Some(targets))
        }
    };
    let mut handle = pipeline.spawn(input)?;
    let observe = {
        let live = live.clone();
        let recorder = recorder.clone();
        move |record: &Record| {
            live.push_record(record);
            recorder.write(record);
        }
    };
    handle.sink(JsonlSink::open(&run.out)?, observe)?;
    let stop = handle.stop_signal();
    let pipeline = {
        let live = live.clone();
        thread::Builder::new()
            .name("affectstream-demo".into())
            .spawn(move || {
                let result = match supervised {
                    None => handle.join(),
                    Some(targets) => supervise_into(handle, source, targets, live.clone()),
                };
                live.set_source_state(match &result {
                    Ok(_) => SourceState::Ended,
                    Err(e) => SourceState::Failed(e.to_string()),
                });
                result.map(|finished| finished.summary)
            })
            .map_err(|_| DemoError::Crashed("demo pipeline"))?
    };

    let title = format!("affectstream: {}", live.snapshot().source);
    let overlay = run_overlay(
        &title,
        live.clone(),
        recorder.clone(),
        opts.output_dir.clone(),
        opts.quit.clone(),
    );
    // Window closed (or failed to open): stop the source, then everything drains.
    stop.stop();
    if let Some(mic) = microphone {
        mic.stop();
    }
    let pipeline = pipeline
        .join()
        .map_err(|_| DemoError::Crashed("demo pipeline"))?;
    let recording = recorder.finish()?;
    if let Some((path, n)) = &recording {
        tracing::info!("{n} records written to {}", path.display());
    }
    let overlay = overlay?;
    let pipeline = pipeline?;
    Ok(DemoSummary {
        overlay,
        pipeline: Some(pipeline),
        recording,
    })
}

/// Where the demo's frames come from.
enum Feed {
    /// A capture that runs to its end (file, camera).
    Capture(Capture),
    /// The channels a stream supervisor keeps feeding across reconnects (network sources).
    Supervised(CaptureTargets),
}

/// Keeps a network source connected into `targets`, which feed the running pipeline
/// (reconnecting with backoff) until the pipeline is stopped, and shows the supervisor's state
/// changes in the overlay; then joins the pipeline.
fn supervise_into(
    handle: PipelineHandle,
    source: Source,
    targets: CaptureTargets,
    live: Arc<LiveState>,
) -> Result<Finished, PipelineError> {
    let (status_tx, status_rx) = crossbeam_channel::bounded::<StatusRecord>(16);
    let states = thread::Builder::new()
        .name("affectstream-states".into())
        .spawn(move || {
            for status in status_rx {
                live.set_source_state(match status.state {
                    StreamState::Connecting => SourceState::Starting,
                    StreamState::Live => SourceState::Live,
                    StreamState::Reconnecting => SourceState::Reconnecting,
                    StreamState::Ended => SourceState::Ended,
                    StreamState::Failed => SourceState::Failed(status.reason.unwrap_or_default()),
                });
            }
        })
        .map_err(|_| PipelineError::StageCrashed("states"))?;
    let spec = StreamSpec {
        name: source.name.clone(),
        source: source.name.clone(),
        settings: StreamSettings::default(),
    };
    let stop = handle.stop_signal().flag();
    // The supervisor drops the targets when it returns, so the stages drain and end.
    let outcome = streams::supervise(spec, source.clone(), targets, status_tx, stop, &|| {
        handle.stages_finished()
    });
    let finished = handle.join();
    states.join().ok();
    let finished = finished?;
    if outcome.state == StreamState::Failed {
        return Err(CaptureError::Open {
            source_name: source.name,
            message: outcome.reason.unwrap_or_default(),
        }
        .into());
    }
    Ok(finished)
}

/// Puts a display tap and a drop-oldest queue between capture and the face stage: the UI
/// gets a shrunk copy of a frame whenever it is ready for one, and a stage that falls behind
/// loses the oldest frame (counted) instead of stalling the camera.
fn tap_video(
    input: Receiver<VideoFrame>,
    live: Arc<LiveState>,
    on_end: Option<Arc<AtomicBool>>,
) -> Result<Receiver<VideoFrame>, DemoError> {
    let (tx, rx) = crossbeam_channel::bounded(VIDEO_QUEUE);
    let oldest = rx.clone();
    thread::Builder::new()
        .name("affectstream-tap".into())
        .spawn(move || {
            for frame in input {
                live.offer_frame(&frame);
                if deliver(&tx, Some(&oldest), frame, &live.dropped_frames).is_err() {
                    break; // the face stage is gone
                }
            }
            if let Some(flag) = on_end {
                flag.store(true, Ordering::SeqCst);
            }
        })
        .map_err(|_| DemoError::Crashed("video tap"))?;
    Ok(rx)
}
