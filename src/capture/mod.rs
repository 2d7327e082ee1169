//! Capture: GStreamer decodes a source (file or URI) into RGB video frames and mono F32 audio
//! (16 kHz for the VAD, 44.1 kHz for speech-emotion features), delivered from appsink callbacks
//! into bounded crossbeam channels. Every frame carries its stream timestamp and the instant it
//! was decoded.
//!
//! ```text
//! uridecodebin ─┬─ video pad ─▶ pipelines/video-branch.txt ─▶ appsink ─▶ video channel
//!               └─ audio pad ─▶ pipelines/audio-branch.txt ─┬▶ appsink 16 kHz ─┐
//!                                                           └▶ appsink 44.1 kHz ┴▶ audio channel
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::metrics::Stamps;

mod redact;
pub use redact::redact_url;
pub mod camera;
#[cfg(feature = "microphone")]
pub mod microphone;
#[cfg(feature = "microphone")]
pub mod resample;

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

/// Where media comes from: a file path or any URI `uridecodebin` takes.
#[derive(Clone)]
pub struct Source {
    /// What the user typed with any password replaced by `***` (used in messages, logs and
    /// records: credentials never leave this struct).
    pub name: String,
    /// The URI handed to GStreamer (may hold credentials: never print it).
    pub uri: String,
    /// The local file, when the source is one.
    pub path: Option<PathBuf>,
    /// Secrets found in the URI (the password, raw and percent-decoded), scrubbed from any
    /// text that leaves the capture.
    secrets: Vec<String>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Source {
    /// Parses a path or URI; a path must exist.
    pub fn parse(text: &str) -> Result<Self, CaptureError> {
        if text.contains("://") {
            let path = text
                .strip_prefix("file://")
                .map(|p| PathBuf::from(p.to_owned()));
            let redacted = redact::redact_url(text);
            if let Some(p) = &path {
                check_file(&redacted.text, p)?;
            }
            return Ok(Self {
                name: redacted.text,
                uri: text.to_owned(),
                path,
                secrets: redacted.secrets,
            });
        }
        let path = PathBuf::from(text);
        check_file(text, &path)?;
        let absolute = std::fs::canonicalize(&path).map_err(|e| CaptureError::Open {
            source_name: text.to_owned(),
            message: e.to_string(),
        })?;
        let uri = gst::glib::filename_to_uri(&absolute, None)
            .map_err(|e| CaptureError::Open {
                source_name: text.to_owned(),
                message: e.to_string(),
            })?
            .to_string();
        Ok(Self {
            name: text.to_owned(),
            uri,
            path: Some(absolute),
            secrets: Vec::new(),
        })
    }

    /// `text` with every secret of this source's URI replaced by `***`: apply to anything
    /// that came from GStreamer before it reaches a log, a record or an error.
    pub fn scrub(&self, text: &str) -> String {
        redact::scrub(text, &self.secrets)
    }

    /// True for sources whose frames arrive in real time (network streams, devices).
    pub fn is_live(&self) -> bool {
        is_live_uri(&self.uri)
    }
}

/// True for URIs of sources whose frames arrive in real time (network streams).
pub fn is_live_uri(uri: &str) -> bool {
    ["rtsp://", "rtsps://", "rtmp://", "udp://", "srt://"]
        .iter()
        .any(|p| uri.starts_with(p))
}

fn check_file(text: &str, path: &Path) -> Result<(), CaptureError> {
    match std::fs::metadata(path) {
        Err(_) => Err(CaptureError::NotFound {
            source_name: text.to_owned(),
        }),
        Ok(m) if m.is_dir() => Err(CaptureError::Open {
            source_name: text.to_owned(),
            message: "is a directory, not a media file".into(),
        }),
        Ok(m) if m.len() == 0 => Err(CaptureError::Decode {
            source_name: text.to_owned(),
            message: "the file is empty".into(),
        }),
        Ok(_) => Ok(()),
    }
}

/// Pixels of a decoded frame: the mapped GStreamer buffer when rows are tightly packed
/// (no copy), else a packed copy.
enum Pixels {
    Mapped(Box<gst_video::VideoFrame<gst_video::video_frame::Readable>>),
    Owned(Vec<u8>),
}

/// A [`VideoFrame`]'s header: what the frame was, carried through the stages without its pixels.
#[derive(Debug, Clone, Copy)]
pub struct FrameMeta {
    /// Frame number in decode order.
    pub index: u64,
    /// Stream time of the frame.
    pub pts: Duration,
    /// Display duration of the frame.
    pub duration: Duration,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Decode instant and stage stamps.
    pub stamps: Stamps,
}

/// One decoded video frame, packed RGB (3 bytes per pixel, rows without padding).
pub struct VideoFrame {
    /// Frame number in decode order, from 0.
    pub index: u64,
    /// Stream time of the frame (presentation timestamp).
    pub pts: Duration,
    /// How long the frame is shown (from the buffer, else from the caps' frame rate).
    pub duration: Duration,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Decode instant and stage stamps.
    pub stamps: Stamps,
    pixels: Pixels,
}

impl VideoFrame {
    /// A frame from packed RGB bytes (tests, benches, still images).
    pub fn from_rgb(index: u64, pts: Duration, width: u32, height: u32, rgb: Vec<u8>) -> Self {
        Self {
            index,
            pts,
            duration: Duration::from_millis(40),
            width,
            height,
            stamps: Stamps::new(Instant::now()),
            pixels: Pixels::Owned(rgb),
        }
    }

    /// Packed RGB bytes, `width * height * 3` long.
    pub fn rgb(&self) -> &[u8] {
        match &self.pixels {
            Pixels::Mapped(f) => f.plane_data(0).unwrap_or(&[]),
            Pixels::Owned(v) => v,
        }
    }
}

/// Mono F32 audio decoded from the source.
pub struct AudioBlock {
    /// Sample rate: 16 000 (VAD branch) or 44 100 (speech-emotion branch).
    pub rate: u32,
    /// Stream time of the first sample.
    pub pts: Option<Duration>,
    /// The samples, in [-1, 1].
    pub samples: Vec<f32>,
}

/// Which elementary streams the source turned out to have (sent once, when known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// A video stream is being decoded.
    pub has_video: bool,
    /// An audio stream is being decoded.
    pub has_audio: bool,
}

/// Channels a running capture feeds.
pub struct CaptureOutputs {
    /// Decoded video frames.
    pub video: Receiver<VideoFrame>,
    /// Decoded audio blocks (both rates interleaved in arrival order).
    pub audio: Receiver<AudioBlock>,
    /// The stream layout, once known.
    pub layout: Receiver<Layout>,
}

/// How a capture delivers its source.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
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
}

/// Lower transports `rtspsrc` may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RtspTransport {
    /// Interleaved in the RTSP TCP connection: works through NAT and firewalls; the default.
    #[default]
    Tcp,
    /// RTP over UDP unicast: lowest latency on a clean LAN, loses packets otherwise.
    Udp,
    /// UDP first, TCP when UDP gets nothing.
    UdpTcp,
}

impl std::str::FromStr for RtspTransport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "udp-tcp" => Ok(Self::UdpTcp),
            _ => Err(format!(
                "unknown RTSP transport '{s}' (tcp, udp or udp-tcp)"
            )),
        }
    }
}

impl RtspTransport {
    /// The names `FromStr` accepts (as in the config file), for help texts.
    pub const NAMES: &'static [&'static str] = &["tcp", "udp", "udp-tcp"];

    /// The value of rtspsrc's `protocols` flags property.
    fn flags(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::UdpTcp => "udp+tcp",
        }
    }
}

/// `rtspsrc` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RtspSettings {
    /// Lower transport.
    pub transport: RtspTransport,
    /// Jitter buffer size: the latency rtspsrc adds to absorb network jitter.
    pub latency: Duration,
}

impl Default for RtspSettings {
    fn default() -> Self {
        Self {
            transport: RtspTransport::Tcp,
            latency: Duration::from_millis(200),
        }
    }
}

/// Counters a capture updates from its streaming threads (shared across the reconnects of
/// one stream).
#[derive(Debug)]
pub struct CaptureCounters {
    /// Video frames decoded.
    pub frames: AtomicU64,
    /// Video frames dropped because the face stage was behind (live sources only).
    pub dropped_frames: AtomicU64,
    /// Audio blocks dropped because the audio stage was behind (live sources only).
    pub dropped_audio: AtomicU64,
    /// Milliseconds since `epoch` at which the last buffer (video or audio) arrived.
    last_buffer_ms: AtomicU64,
    epoch: Instant,
}

impl Default for CaptureCounters {
    fn default() -> Self {
        Self {
            frames: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
            dropped_audio: AtomicU64::new(0),
            last_buffer_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl CaptureCounters {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_buffer_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// When the last buffer arrived; None before the first one.
    pub fn last_buffer(&self) -> Option<Instant> {
        match self.last_buffer_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.epoch + Duration::from_millis(ms)),
        }
    }
}

/// The sending ends a capture delivers into. A stream that reconnects hands the same targets
/// to each new capture, so the stages behind it keep running across reconnects.
#[derive(Clone)]
pub struct CaptureTargets {
    video: Sender<VideoFrame>,
    /// Live only: the receiving end the capture drops the oldest frame from. Offline
    /// captures hold no receiver, so a stage that dies closes its channel and the capture
    /// stops instead of blocking forever.
    video_oldest: Option<Receiver<VideoFrame>>,
    audio: Sender<AudioBlock>,
    audio_oldest: Option<Receiver<AudioBlock>>,
    layout: Sender<Layout>,
    /// Counters of everything delivered and dropped.
    pub counters: Arc<CaptureCounters>,
}

impl CaptureTargets {
    /// Bounded channels for a capture and the receiving ends for the stages; `live` makes
    /// a full channel drop its oldest item instead of blocking.
    pub fn channels(live: bool) -> (Self, CaptureOutputs) {
        let (video_tx, video_rx) = crossbeam_channel::bounded(VIDEO_QUEUE);
        let (audio_tx, audio_rx) = crossbeam_channel::bounded(AUDIO_QUEUE);
        let (layout_tx, layout_rx) = crossbeam_channel::bounded(1);
        (
            Self {
                video: video_tx,
                video_oldest: live.then(|| video_rx.clone()),
                audio: audio_tx,
                audio_oldest: live.then(|| audio_rx.clone()),
                layout: layout_tx,
                counters: Arc::default(),
            },
            CaptureOutputs {
                video: video_rx,
                audio: audio_rx,
                layout: layout_rx,
            },
        )
    }
}

/// Hands `item` to a stage. Offline: blocks until there is room (no frame lost). Live: when
/// the queue is full, takes the oldest item out and counts it, so the newest always gets in
/// and the streaming thread never waits. (Also the demo's display tap.)
pub(crate) fn deliver<T>(
    tx: &Sender<T>,
    oldest: Option<&Receiver<T>>,
    item: T,
    dropped: &AtomicU64,
) -> Result<(), gst::FlowError> {
    let Some(oldest) = oldest else {
        return tx.send(item).map_err(|_| gst::FlowError::Flushing);
    };
    let mut item = item;
    loop {
        match tx.try_send(item) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(back)) => {
                if oldest.try_recv().is_ok() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                item = back;
            }
            Err(TrySendError::Disconnected(_)) => return Err(gst::FlowError::Flushing),
        }
    }
}

/// Ends a running capture from any thread: the appsinks refuse further buffers, the
/// demuxer ends its streams, and the capture reports end of stream.
#[derive(Clone)]
pub struct StopHandle {
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl StopHandle {
    /// Asks the capture to end: what was delivered so far is processed, then end of stream.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }
}

/// A running GStreamer capture. Dropping it stops the pipeline.
pub struct Capture {
    pipeline: gst::Pipeline,
    source: Source,
    /// Frames delivered and dropped so far.
    pub counters: Arc<CaptureCounters>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    slot: TargetSlot,
    live: bool,
}

/// The targets as the streaming threads see them: emptied when the capture is dropped, so a
/// pipeline that is slow to shut down no longer holds the stages' channels open.
type TargetSlot = Arc<Mutex<Option<CaptureTargets>>>;

/// The targets, unless the capture has been detached from them.
fn current_targets(slot: &TargetSlot) -> Option<CaptureTargets> {
    slot.lock().ok().and_then(|targets| targets.clone())
}

#[derive(Default)]
struct LinkState {
    video: bool,
    audio: bool,
}

/// Capacity of the video channel (decoded frames waiting for the face stage).
pub const VIDEO_QUEUE: usize = 4;
/// Capacity of the audio channel (blocks waiting for the audio stage).
pub const AUDIO_QUEUE: usize = 64;

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
                configure_rtspsrc(&element, rtsp);
            }
            None
        });

        let layout_tx = targets.layout.clone();
        let slot: TargetSlot = Arc::new(Mutex::new(Some(targets.clone())));
        let state = Arc::new(Mutex::new(LinkState::default()));
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));

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

    /// A handle that ends this capture from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            stopping: self.stopping.clone(),
        }
    }

    /// Duration of the source, when the container says.
    pub fn duration(&self) -> Option<Duration> {
        self.pipeline
            .query_duration::<gst::ClockTime>()
            .map(|t| Duration::from_nanos(t.nseconds()))
    }

    /// Blocks until the source ends (Ok) or fails (the decode error, naming the source).
    /// Then stops the pipeline, which closes the output channels.
    pub fn wait(self) -> Result<(), CaptureError> {
        let result = self.wait_inner();
        self.pipeline.set_state(gst::State::Null).ok();
        result?;
        // GStreamer ends a truncated MP4 with a plain EOS; the box sizes tell.
        let stopped = self.stopping.load(Ordering::SeqCst);
        if let Some(problem) = (!stopped)
            .then_some(self.source.path.as_deref())
            .flatten()
            .and_then(iso_bmff_truncation)
        {
            return Err(CaptureError::Decode {
                source_name: self.source.name.clone(),
                message: problem,
            });
        }
        Ok(())
    }

    fn wait_inner(&self) -> Result<(), CaptureError> {
        loop {
            if let Some(outcome) = self.poll(None) {
                return outcome;
            }
        }
    }

    /// Waits up to `timeout` (None: forever) for the source to end: Some(Ok) at end of
    /// stream, Some(Err) on a decode or connection error (secrets scrubbed), None when it is
    /// still running. The pipeline keeps running either way; drop the capture to stop it.
    pub fn poll(&self, timeout: Option<Duration>) -> Option<Result<(), CaptureError>> {
        use gst::MessageType;
        let Some(bus) = self.pipeline.bus() else {
            return Some(Err(CaptureError::Setup("pipeline has no bus".into())));
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let wait = match deadline {
                None => gst::ClockTime::NONE,
                Some(d) => Some(gst::ClockTime::from_nseconds(
                    d.saturating_duration_since(Instant::now()).as_nanos() as u64,
                )),
            };
            let msg = bus.timed_pop_filtered(
                wait,
                &[MessageType::Eos, MessageType::Error, MessageType::Warning],
            )?;
            use gst::MessageView;
            match msg.view() {
                MessageView::Eos(..) => return Some(Ok(())),
                MessageView::Error(err) => {
                    tracing::debug!(
                        debug = ?err.debug().map(|d| self.source.scrub(&d)),
                        "GStreamer error"
                    );
                    let source_name = self.source.name.clone();
                    let message = self
                        .source
                        .scrub(&describe_error(&err.error(), err.debug().as_deref()));
                    // Connection problems (refused, unauthorized, unreachable) are about
                    // opening the source, not decoding it.
                    return Some(Err(if err.error().is::<gst::ResourceError>() {
                        CaptureError::Open {
                            source_name,
                            message,
                        }
                    } else {
                        CaptureError::Decode {
                            source_name,
                            message,
                        }
                    }));
                }
                MessageView::Warning(w) => {
                    let text = self.source.scrub(&w.error().to_string());
                    tracing::warn!(source = %self.source.name, "GStreamer: {text}");
                }
                _ => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
        }
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

/// For an ISO base media file (MP4, MOV, M4A: starts with an `ftyp` box), says whether a
/// top-level box claims more bytes than the file has, i.e. the file was cut short.
pub fn iso_bmff_truncation(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut offset = 0u64;
    let mut first = true;
    while offset + 8 <= len {
        let mut header = [0u8; 16];
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut header[..8]).ok()?;
        let kind = String::from_utf8_lossy(&header[4..8]).into_owned();
        if first && kind != "ftyp" {
            return None;
        }
        first = false;
        let mut size = u64::from(u32::from_be_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        if size == 1 {
            file.read_exact(&mut header[8..16]).ok()?;
            size = u64::from_be_bytes(header[8..16].try_into().ok()?);
        } else if size == 0 {
            return None; // the box runs to the end of the file by definition
        }
        if size < 8 {
            return Some(format!(
                "the file is corrupt: box '{kind}' at byte {offset} has size {size}"
            ));
        }
        if offset + size > len {
            return Some(format!(
                "the file is truncated: box '{kind}' needs {} bytes past byte {offset}, the file ends after {len}",
                size
            ));
        }
        offset += size;
    }
    None
}

/// Turns GStreamer's error into one line a user understands.
fn describe_error(error: &gst::glib::Error, debug: Option<&str>) -> String {
    let text = error.to_string();
    if error.matches(gst::StreamError::TypeNotFound) {
        return "not a media file GStreamer can read (could not determine the type of stream)"
            .into();
    }
    if error.matches(gst::StreamError::CodecNotFound)
        || error.matches(gst::CoreError::MissingPlugin)
    {
        return format!("{text} (install the GStreamer plugins: scripts/setup.sh)");
    }
    if error.matches(gst::StreamError::Demux) || error.matches(gst::StreamError::Decode) {
        let detail = debug
            .and_then(|d| d.lines().last())
            .map(|l| format!(" ({})", l.trim()))
            .unwrap_or_default();
        return format!("the file is corrupt or truncated: {text}{detail}");
    }
    text
}

fn first_bus_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Error(err) = msg.view() {
            return Some(describe_error(&err.error(), err.debug().as_deref()));
        }
    }
    None
}

fn link_branch(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    description: &str,
    attach: impl FnOnce(&gst::Bin) -> Result<(), String>,
) -> Result<(), String> {
    let bin = gst::parse::bin_from_description(description, true).map_err(|e| e.to_string())?;
    attach(&bin)?;
    pipeline.add(&bin).map_err(|e| e.to_string())?;
    bin.sync_state_with_parent().map_err(|e| e.to_string())?;
    let sink = bin.static_pad("sink").ok_or("branch has no sink pad")?;
    pad.link(&sink).map_err(|e| e.to_string())?;
    Ok(())
}

fn appsink(bin: &gst::Bin, name: &str) -> Result<gst_app::AppSink, String> {
    bin.by_name(name)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| format!("branch has no appsink named {name}"))
}

/// Running time of a buffer: stream time mapped through its segment (equals the timestamp
/// for a plain file).
fn running_time(sample: &gst::Sample, pts: Option<gst::ClockTime>) -> Option<Duration> {
    let pts = pts?;
    let running = sample
        .segment()
        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
        .and_then(|s| s.to_running_time(pts))
        .unwrap_or(pts);
    Some(Duration::from_nanos(running.nseconds()))
}

/// Sets the user's transport and latency on an `rtspsrc` (other sources are left alone).
fn configure_rtspsrc(element: &gst::Element, rtsp: RtspSettings) {
    let is_rtsp = element
        .factory()
        .is_some_and(|f| f.name().as_str() == "rtspsrc");
    if !is_rtsp {
        return;
    }
    element.set_property_from_str("protocols", rtsp.transport.flags());
    element.set_property(
        "latency",
        rtsp.latency.as_millis().min(u32::MAX as u128) as u32,
    );
    // Late packets are dropped rather than queued: live means bounded.
    element.set_property("drop-on-latency", true);
    // A dead TCP connection is noticed within seconds, not the default 20 s.
    element.set_property("tcp-timeout", 5_000_000u64);
}

fn attach_video_sink(
    bin: &gst::Bin,
    slot: TargetSlot,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    options: CaptureOptions,
) -> Result<(), String> {
    let sink = appsink(bin, "sink")?;
    sink.set_property("sync", options.paced);
    let info: Mutex<Option<gst_video::VideoInfo>> = Mutex::new(None);
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if stopping.load(Ordering::Relaxed) {
                    return Err(gst::FlowError::Eos);
                }
                let decoded = Instant::now();
                let mut info_slot = info.lock().map_err(|_| gst::FlowError::Error)?;
                if info_slot.is_none() {
                    let caps = sample.caps().ok_or(gst::FlowError::NotNegotiated)?;
                    *info_slot = Some(
                        gst_video::VideoInfo::from_caps(caps)
                            .map_err(|_| gst::FlowError::NotNegotiated)?,
                    );
                }
                let Some(info) = info_slot.clone() else {
                    return Err(gst::FlowError::NotNegotiated);
                };
                drop(info_slot);
                let Some(targets) = current_targets(&slot) else {
                    return Err(gst::FlowError::Eos);
                };
                let buffer = sample.buffer_owned().ok_or(gst::FlowError::Error)?;
                let pts = running_time(&sample, buffer.pts());
                let counters = &targets.counters;
                counters.touch();
                let index = counters.frames.fetch_add(1, Ordering::Relaxed);
                let mut frame =
                    to_video_frame(buffer, &info, index).ok_or(gst::FlowError::Error)?;
                if let Some(pts) = pts {
                    frame.pts = pts;
                }
                frame.pts += options.pts_offset;
                frame.stamps = Stamps::new(decoded);
                deliver(
                    &targets.video,
                    targets.video_oldest.as_ref(),
                    frame,
                    &counters.dropped_frames,
                )?;
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(())
}

fn to_video_frame(
    buffer: gst::Buffer,
    info: &gst_video::VideoInfo,
    index: u64,
) -> Option<VideoFrame> {
    let pts = buffer.pts().map(|t| Duration::from_nanos(t.nseconds()));
    let fps = info.fps();
    let nominal = if fps.numer() > 0 {
        Duration::from_secs_f64(fps.denom() as f64 / fps.numer() as f64)
    } else {
        Duration::from_millis(40)
    };
    let duration = buffer
        .duration()
        .map(|t| Duration::from_nanos(t.nseconds()))
        .unwrap_or(nominal);
    let (width, height) = (info.width(), info.height());
    let row = width as usize * 3;
    let frame = gst_video::VideoFrame::from_buffer_readable(buffer, info).ok()?;
    let stride = usize::try_from(*info.stride().first()?).ok()?;
    let pixels = if stride == row {
        Pixels::Mapped(Box::new(frame))
    } else {
        let data = frame.plane_data(0).ok()?;
        let mut packed = Vec::with_capacity(row * height as usize);
        for y in 0..height as usize {
            packed.extend_from_slice(data.get(y * stride..y * stride + row)?);
        }
        Pixels::Owned(packed)
    };
    Some(VideoFrame {
        index,
        pts: pts.unwrap_or(nominal * index as u32),
        duration,
        width,
        height,
        stamps: Stamps::new(Instant::now()),
        pixels,
    })
}

fn attach_audio_sinks(
    bin: &gst::Bin,
    slot: TargetSlot,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    options: CaptureOptions,
) -> Result<(), String> {
    for (name, rate) in [("sink16k", 16_000u32), ("sink44k", 44_100u32)] {
        let sink = appsink(bin, name)?;
        sink.set_property("sync", options.paced);
        let slot = slot.clone();
        let stopping = stopping.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if stopping.load(Ordering::Relaxed) {
                        return Err(gst::FlowError::Eos);
                    }
                    let Some(targets) = current_targets(&slot) else {
                        return Err(gst::FlowError::Eos);
                    };
                    let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                    let pts = running_time(&sample, buffer.pts()).map(|p| p + options.pts_offset);
                    targets.counters.touch();
                    let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let samples: Vec<f32> = map
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    deliver(
                        &targets.audio,
                        targets.audio_oldest.as_ref(),
                        AudioBlock { rate, pts, samples },
                        &targets.counters.dropped_audio,
                    )?;
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    Ok(())
}
