//! Capture: GStreamer decodes a source (file or URI) into video frames (the decoder's planes:
//! I420, NV12, ...; no full-resolution RGB) and mono F32 audio
//! (16 kHz for the VAD, 44.1 kHz for speech-emotion features), delivered from appsink callbacks
//! into bounded crossbeam channels. Every frame carries its stream timestamp and the instant it
//! was decoded.
//!
//! ```text
//! uridecodebin ─┬─ video pad ─▶ pipelines/video-branch.txt ─▶ appsink ─▶ video channel
//!               └─ audio pad ─▶ pipelines/audio-branch.txt ─┬▶ appsink 16 kHz ─┐
//!                                                           └▶ appsink 44.1 kHz ┴▶ audio channel
//! ```
//!
//! This file builds a [`Capture`]; the parts live beside it: `source` (what to open),
//! `frame` (what comes out), `color` (Y'CbCr → RGB for crops and small images), `delivery`
//! (how it reaches a stage: blocking or drop-oldest),
//! `appsink` (the callbacks), `bus` (end of stream, errors, stopping), `rtsp` (rtspsrc
//! options), `mp4` (the truncation check GStreamer does not make).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

mod appsink;
mod bus;
pub mod color;
mod delivery;
mod frame;
mod mp4;
mod redact;
mod rtsp;
mod source;

pub mod camera;
#[cfg(feature = "microphone")]
pub mod microphone;
#[cfg(feature = "microphone")]
pub mod resample;

use appsink::{attach_audio_sinks, attach_video_sink, link_branch};
pub use bus::StopHandle;
use bus::first_bus_error;
use delivery::TargetSlot;
#[cfg(feature = "overlay")]
pub(crate) use delivery::deliver;
pub use delivery::{
    AUDIO_QUEUE, CaptureCounters, CaptureOutputs, CaptureTargets, Closed, Delivery, Layout,
    VIDEO_QUEUE,
};
pub use frame::{AudioBlock, Chroma, FrameImage, FrameMeta, PixelFormat, Plane, VideoFrame};
pub use mp4::iso_bmff_truncation;
pub use redact::redact_url;
pub use rtsp::{RtspSettings, RtspTransport, rtsp_server_address};
pub use source::{Source, is_live_uri};

const VIDEO_BRANCH: &str = include_str!("../../pipelines/video-branch.txt");
const AUDIO_BRANCH: &str = include_str!("../../pipelines/audio-branch.txt");

/// Errors opening or decoding a source. Each names the source and says what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot open '{source_name}': no such file")]
    NotFound { source_name: String },
    #[error("cannot open '{source_name}': {message}")]
    Open {
        source_name: String,
        message: String,
    },
    #[error("cannot decode '{source_name}': {message}")]
    Decode {
        source_name: String,
        message: String,
    },
    #[error("GStreamer setup failed: {0}")]
    Setup(String),
}

/// How a capture delivers its source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptureOptions {
    /// Release frames at their timestamps (1x real time), like a camera, instead of as fast
    /// as they decode.
    pub paced: bool,
    /// A live source: when a stage is behind, the oldest decoded frame (or audio block) in
    /// the queue is dropped and counted instead of blocking the streaming thread (the
    /// channels must come from `CaptureTargets::channels(true)`). Offline sources block
    /// instead, so every frame is processed.
    pub live: bool,
    /// Added to every timestamp, so a stream that reconnects continues its timeline instead
    /// of starting again at zero.
    pub pts_offset: Duration,
    /// Settings for `rtspsrc` when the source is an RTSP URL.
    pub rtsp: RtspSettings,
    /// Threads of each libav video decoder (`max-threads`; 0: libav's choice, one per core).
    /// One by default: a second thread for 720p H.264 cost 23 % more decoder CPU here and
    /// delays each frame, and the pipeline's stages (or other streams) use the other cores.
    pub decode_threads: u32,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self {
            paced: false,
            live: false,
            pts_offset: Duration::ZERO,
            rtsp: RtspSettings::default(),
            decode_threads: 1,
        }
    }
}

/// A running GStreamer capture. Dropping it stops the pipeline.
pub struct Capture {
    pipeline: gst::Pipeline,
    source: Source,
    /// Frames delivered and dropped so far.
    pub counters: Arc<CaptureCounters>,
    stopping: Arc<AtomicBool>,
    slot: TargetSlot,
    live: bool,
}

/// Sets `max-threads` on a libav video decoder (`avdec_*`) as decodebin adds it; other
/// elements are left alone.
fn limit_decoder_threads(element: &gst::Element, threads: u32) {
    let is_libav_video = element.factory().is_some_and(|f| {
        f.name().starts_with("avdec_")
            && f.metadata(gst::ELEMENT_METADATA_KLASS)
                .is_some_and(|k| k.contains("Video"))
    });
    if is_libav_video && element.find_property("max-threads").is_some() {
        element.set_property("max-threads", threads as i32);
        tracing::debug!(decoder = %element.name(), threads, "decoder threads set");
    }
}

/// Which branches `uridecodebin`'s pads have been linked to (one of each at most).
#[derive(Default)]
struct LinkState {
    video: bool,
    audio: bool,
}

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), CaptureError> {
    gst::init().map_err(|e| CaptureError::Setup(e.to_string()))
}

impl Capture {
    /// Builds the pipeline for `source` and starts it, as fast as it decodes, once. Offline
    /// sources block the streaming threads when a channel is full (every frame is processed).
    pub fn start(source: &Source) -> Result<(Self, CaptureOutputs), CaptureError> {
        Self::start_with(source, CaptureOptions::default())
    }

    /// [`Capture::start`] with pacing and looping options.
    pub fn start_with(
        source: &Source,
        options: CaptureOptions,
    ) -> Result<(Self, CaptureOutputs), CaptureError> {
        let (targets, outputs) = CaptureTargets::channels(options.live);
        let capture = Self::start_into(source, options, &targets)?;
        Ok((capture, outputs))
    }

    /// Starts a capture of `source` that delivers into `targets` (channels that may outlive
    /// it: see [`CaptureTargets`]).
    pub fn start_into(
        source: &Source,
        options: CaptureOptions,
        targets: &CaptureTargets,
    ) -> Result<Self, CaptureError> {
        init()?;
        let setup = |e: &dyn std::fmt::Display| CaptureError::Setup(e.to_string());
        let pipeline = gst::Pipeline::with_name("affectstream-capture");
        let decode = gst::ElementFactory::make("uridecodebin")
            .property("uri", &source.uri)
            .build()
            .map_err(|e| setup(&e))?;
        pipeline.add(&decode).map_err(|e| setup(&e))?;
        let rtsp = options.rtsp;
        decode.connect("source-setup", false, move |args| {
            if let Some(element) = args.get(1).and_then(|v| v.get::<gst::Element>().ok()) {
                rtsp::configure_rtspsrc(&element, rtsp);
            }
            None
        });

        let decode_threads = options.decode_threads;
        pipeline.connect_deep_element_added(move |_, _, element| {
            limit_decoder_threads(element, decode_threads);
        });

        let layout_tx = targets.layout.clone();
        let slot: TargetSlot = Arc::new(Mutex::new(Some(targets.clone())));
        let state = Arc::new(Mutex::new(LinkState::default()));
        let stopping = Arc::new(AtomicBool::new(false));

        {
            let pipeline_weak = pipeline.downgrade();
            let state = state.clone();
            let slot = slot.clone();
            let stopping = stopping.clone();
            decode.connect_pad_added(move |_, pad| {
                let Some(pipeline) = pipeline_weak.upgrade() else {
                    return;
                };
                let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
                let Some(kind) = caps.structure(0).map(|s| s.name().to_string()) else {
                    return;
                };
                let Ok(mut linked) = state.lock() else {
                    return;
                };
                let result = if kind.starts_with("video/") && !linked.video {
                    linked.video = true;
                    link_branch(&pipeline, pad, VIDEO_BRANCH, |bin| {
                        attach_video_sink(bin, slot.clone(), stopping.clone(), options)
                    })
                } else if kind.starts_with("audio/") && !linked.audio {
                    linked.audio = true;
                    link_branch(&pipeline, pad, AUDIO_BRANCH, |bin| {
                        attach_audio_sinks(bin, slot.clone(), stopping.clone(), options)
                    })
                } else {
                    Ok(())
                };
                if let Err(e) = result {
                    tracing::error!("cannot link the {kind} stream: {e}");
                }
            });
        }
        {
            let state = state.clone();
            decode.connect_no_more_pads(move |_| {
                if let Ok(linked) = state.lock() {
                    layout_tx
                        .try_send(Layout {
                            has_video: linked.video,
                            has_audio: linked.audio,
                        })
                        .ok();
                }
            });
        }

        let refused = |pipeline: &gst::Pipeline| CaptureError::Open {
            source_name: source.name.clone(),
            message: source.scrub(
                &first_bus_error(pipeline)
                    .unwrap_or_else(|| "the pipeline refused to start".into()),
            ),
        };
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| refused(&pipeline))?;
        Ok(Self {
            pipeline,
            source: source.clone(),
            counters: targets.counters.clone(),
            stopping,
            slot,
            live: options.live,
        })
    }

    /// The source this capture decodes.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Duration of the source, when the container says.
    pub fn duration(&self) -> Option<Duration> {
        self.pipeline
            .query_duration::<gst::ClockTime>()
            .map(|t| Duration::from_nanos(t.nseconds()))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Detach first: whatever the pipeline does from now on reaches no stage.
        if let Ok(mut targets) = self.slot.lock() {
            targets.take();
        }
        if !self.live {
            self.pipeline.set_state(gst::State::Null).ok();
            return;
        }
        // rtspsrc can take seconds (or, after a lost connection, deadlock inside GStreamer
        // 1.22) to reach NULL; a live stream's supervisor must not wait for it.
        let pipeline = self.pipeline.clone();
        let source = self.source.name.clone();
        let spawned = std::thread::Builder::new()
            .name("affectstream-teardown".into())
            .spawn(move || {
                let started = Instant::now();
                pipeline.set_state(gst::State::Null).ok();
                if started.elapsed() > Duration::from_secs(2) {
                    tracing::debug!(source = %source, "pipeline took {:?} to stop", started.elapsed());
                }
            });
        if spawned.is_err() {
            self.pipeline.set_state(gst::State::Null).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libav_video_decoders_get_the_thread_limit_and_other_elements_are_left_alone() {
        init().unwrap();
        let decoder = gst::ElementFactory::make("avdec_h264").build().unwrap();
        limit_decoder_threads(&decoder, 1);
        assert_eq!(decoder.property::<i32>("max-threads"), 1);
        limit_decoder_threads(&decoder, 0);
        assert_eq!(decoder.property::<i32>("max-threads"), 0);
        let other = gst::ElementFactory::make("identity").build().unwrap();
        limit_decoder_threads(&other, 1);
        assert_eq!(CaptureOptions::default().decode_threads, 1);
    }
}
