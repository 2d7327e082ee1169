//! The overlay's view of the pipeline: a [`LiveState`] the pipeline side overwrites (latest
//! record, latest video frame shrunk for display, 30 s of history, counters) and the
//! [`DisplayState`] snapshot the UI paints from. Writers hold the lock for a copy at most;
//! nothing here waits on the UI, so a slow paint can never slow the pipeline.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::capture::VideoFrame;
use crate::record::Record;

/// Seconds of history the timelines show.
pub const HISTORY_SECONDS: f64 = 30.0;
/// Points kept per trail in the circumplex (the last ~2 s at 10 points per second).
pub const TRAIL_POINTS: usize = 20;
/// Minimum stream time between two trail points.
const TRAIL_STEP_S: f64 = 0.1;
/// Longest side of the frame kept for display (the pipeline keeps the full frame).
pub const DISPLAY_MAX_SIDE: u32 = 640;
/// Records the latency percentiles are taken over (about 10 s at 30 fps).
const LATENCY_WINDOW: usize = 300;

/// Where the source is in its life, for the status line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SourceState {
    /// Opening the source and loading models; no record yet.
    #[default]
    Starting,
    /// Records are arriving.
    Live,
    /// The source dropped and is being reopened (RTSP).
    Reconnecting,
    /// The source ended (end of file, or stopped).
    Ended,
    /// The pipeline stopped on an error (the message says which).
    Failed(String),
}

impl SourceState {
    /// Word shown in the status line.
    pub fn label(&self) -> &str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Live => "live",
            SourceState::Reconnecting => "reconnecting",
            SourceState::Ended => "ended",
            SourceState::Failed(_) => "failed",
        }
    }
}

/// A video frame shrunk for display: packed RGB.
#[derive(Debug, Clone)]
pub struct DisplayFrame {
    /// Increases with every frame offered (the UI uploads a texture only when it changes).
    pub serial: u64,
    /// Frame number in decode order.
    pub index: u64,
    /// Width of `rgb` in pixels.
    pub width: u32,
    /// Height of `rgb` in pixels.
    pub height: u32,
    /// Width of the frame the pipeline saw (face boxes are in these pixels).
    pub source_width: u32,
    /// Height of the frame the pipeline saw.
    pub source_height: u32,
    /// Packed RGB, `width * height * 3` bytes.
    pub rgb: Arc<Vec<u8>>,
}

impl DisplayFrame {
    /// Shrinks `frame` so its longest side is at most `max_side` (nearest neighbour: cheap,
    /// and the display scales it again anyway), converting only the pixels it keeps from the
    /// frame's planes.
    pub fn from_video(frame: &VideoFrame, serial: u64, max_side: u32) -> Option<Self> {
        let (w, h) = (frame.meta.width, frame.meta.height);
        let image = frame.image();
        if w == 0 || h == 0 || image.check().is_err() {
            return None;
        }
        let step = w.max(h).div_ceil(max_side.max(1)).max(1);
        let (dw, dh, out) = image.sampled_rgb(step);
        Some(Self {
            serial,
            index: frame.meta.index,
            width: dw,
            height: dh,
            source_width: w,
            source_height: h,
            rgb: Arc::new(out),
        })
    }
}

/// One moment of the fused estimate, for the timelines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistoryPoint {
    /// Stream time, s.
    pub t: f64,
    /// Fused valence.
    pub valence: f32,
    /// Fused arousal.
    pub arousal: f32,
    /// Conflict.
    pub conflict: f32,
}

/// Recent circumplex positions of one face track: (valence, arousal) per point, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaceTrail {
    /// The face's own estimate.
    pub face: VecDeque<[f32; 2]>,
    /// The face fused with the voice.
    pub fused: VecDeque<[f32; 2]>,
    /// Stream time of the newest point.
    pub last_t: f64,
}

/// Percentiles of a latency, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencyFigures {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Counters and rates for the status line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Frames per second arriving from capture.
    pub input_fps: f64,
    /// Records per second leaving the pipeline.
    pub output_fps: f64,
    /// Frames the pipeline dropped because a stage was behind (live sources: drop-oldest).
    pub dropped_frames: u64,
    /// Frames never shown because the display was still busy with the previous one.
    pub display_skipped: u64,
    /// Decoded → record ready, over the last records.
    pub end_to_end: LatencyFigures,
    /// Working time per stage (detect, encode, fuse), over the last records.
    pub stages: [(&'static str, LatencyFigures); 3],
    /// Execution provider (cpu / cuda), once known.
    pub provider: String,
    /// Audio blocks the microphone dropped (queue full or ring overflow).
    pub audio_dropped: u64,
}

/// Whether there is a voice to show, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VoiceInput {
    /// The source's own audio, or a microphone (named).
    #[default]
    Present,
    /// No audio input: the reason is shown in place of the voice.
    Absent(String),
}

/// Everything one paint needs: a consistent copy of the live state.
#[derive(Debug, Clone, Default)]
pub struct DisplayState {
    /// The source as given.
    pub source: String,
    /// Source state.
    pub source_state: SourceState,
    /// The latest record.
    pub record: Option<Record>,
    /// The latest frame, shrunk for display.
    pub frame: Option<DisplayFrame>,
    /// Fused valence/arousal/conflict of the main face over the last 30 s, oldest first.
    pub history: VecDeque<HistoryPoint>,
    /// Circumplex trails per face track id.
    pub trails: BTreeMap<u64, FaceTrail>,
    /// Recent voice positions, oldest first.
    pub voice_trail: VecDeque<[f32; 2]>,
    /// Status counters.
    pub stats: Stats,
    /// Voice present or why absent.
    pub voice_input: VoiceInput,
    /// Conflict level at which the meter lights up (the fusion's event threshold).
    pub conflict_threshold: f32,
    /// The JSONL file records are being written to, when recording.
    pub recording: Option<String>,
    /// The display is paused (the pipeline goes on).
    pub paused: bool,
    /// Show each face's raw (uncalibrated) values beside the calibrated ones (`v`).
    pub show_raw: bool,
    /// A short note for the user (screenshot saved, recording stopped, ...).
    pub notice: Option<String>,
    /// Frames painted per second by the overlay.
    pub paint_fps: f64,
}

impl DisplayState {
    /// An empty state for `source` with the default conflict threshold.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            conflict_threshold: crate::fusion::params::ConflictParams::default().on,
            ..Self::default()
        }
    }

    /// Stream time of the newest record (0 before the first).
    pub fn latest_t(&self) -> f64 {
        self.record.as_ref().map_or(0.0, |r| r.t)
    }

    /// Takes `record` as the latest: appends to the history and the trails, drops what is
    /// older than the timeline shows.
    pub fn push_record(&mut self, record: Record) {
        let t = record.t;
        if let Some(f) = &record.fused {
            // Stream time can restart (a looped or reconnected source): start over.
            if self.history.back().is_some_and(|p| p.t > t) {
                self.history.clear();
                self.trails.clear();
                self.voice_trail.clear();
            }
            self.history.push_back(HistoryPoint {
                t,
                valence: f.valence,
                arousal: f.arousal,
                conflict: f.conflict,
            });
        }
        while self
            .history
            .front()
            .is_some_and(|p| p.t < t - HISTORY_SECONDS)
        {
            self.history.pop_front();
        }
        for face in &record.faces {
            let trail = self.trails.entry(face.id).or_default();
            if trail.face.is_empty() || t - trail.last_t >= TRAIL_STEP_S {
                push_bounded(&mut trail.face, [face.valence, face.arousal]);
                if let Some(f) = &face.fused {
                    push_bounded(&mut trail.fused, [f.valence, f.arousal]);
                }
                trail.last_t = t;
            }
        }
        // Tracks gone for more than 2 s leave the circumplex.
        self.trails.retain(|_, trail| t - trail.last_t <= 2.0);
        if let Some((v, a)) = record
            .voice
            .as_ref()
            .and_then(|v| Some((v.valence?, v.arousal?)))
            && self.voice_trail.back() != Some(&[v, a])
        {
            push_bounded(&mut self.voice_trail, [v, a]);
        }
        self.record = Some(record);
    }
}

fn push_bounded(trail: &mut VecDeque<[f32; 2]>, point: [f32; 2]) {
    if trail.len() == TRAIL_POINTS {
        trail.pop_front();
    }
    trail.push_back(point);
}

/// Events per second over the last two seconds.
#[derive(Debug, Default)]
struct RateMeter {
    times: VecDeque<Instant>,
}

impl RateMeter {
    const WINDOW: Duration = Duration::from_secs(2);

    fn tick(&mut self, now: Instant) {
        self.times.push_back(now);
        self.trim(now);
    }

    fn trim(&mut self, now: Instant) {
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > Self::WINDOW)
        {
            self.times.pop_front();
        }
    }

    fn rate(&mut self, now: Instant) -> f64 {
        self.trim(now);
        match (self.times.front(), self.times.len()) {
            (Some(first), n) if n >= 2 => {
                let span = now.duration_since(*first).as_secs_f64();
                (n - 1) as f64 / span.max(1e-3)
            }
            _ => 0.0,
        }
    }
}

/// The last latencies seen, for rolling percentiles.
#[derive(Debug, Default)]
struct LatencyWindow {
    values: VecDeque<f64>,
}

impl LatencyWindow {
    fn push(&mut self, ms: Option<f64>) {
        let Some(ms) = ms else { return };
        if self.values.len() == LATENCY_WINDOW {
            self.values.pop_front();
        }
        self.values.push_back(ms);
    }

    fn figures(&self) -> LatencyFigures {
        if self.values.is_empty() {
            return LatencyFigures::default();
        }
        let mut sorted: Vec<f64> = self.values.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let i = ((sorted.len() - 1) as f64 * q).round() as usize;
            sorted.get(i).copied().unwrap_or_default()
        };
        LatencyFigures {
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    display: DisplayState,
    input: RateMeter,
    output: RateMeter,
    e2e: LatencyWindow,
    stages: [LatencyWindow; 3],
}

/// The state shared between the pipeline (writers) and the overlay (reader).
pub struct LiveState {
    inner: Mutex<Inner>,
    /// The UI took the last display frame and wants another.
    frame_wanted: AtomicBool,
    frame_serial: AtomicU64,
    display_skipped: AtomicU64,
    /// Frames dropped by the pipeline's drop-oldest queues.
    pub dropped_frames: Arc<AtomicU64>,
    audio_dropped: Mutex<Option<Arc<AtomicU64>>>,
    repaint: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

impl std::fmt::Debug for LiveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveState").finish_non_exhaustive()
    }
}

impl LiveState {
    /// A fresh state for `source`.
    pub fn new(display: DisplayState) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                display,
                ..Inner::default()
            }),
            frame_wanted: AtomicBool::new(true),
            frame_serial: AtomicU64::new(0),
            display_skipped: AtomicU64::new(0),
            dropped_frames: Arc::new(AtomicU64::new(0)),
            audio_dropped: Mutex::new(None),
            repaint: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A writer that panicked left a consistent state (every update is a plain overwrite).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets what wakes the UI when new data arrives (the overlay's repaint request).
    pub fn set_repaint(&self, repaint: impl Fn() + Send + Sync + 'static) {
        *self.repaint.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(repaint));
    }

    fn wake(&self) {
        if let Some(repaint) = self
            .repaint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            repaint();
        }
    }

    /// Pipeline side: a record is ready (sink thread).
    pub fn push_record(&self, record: &Record) {
        let now = Instant::now();
        {
            let mut inner = self.lock();
            inner.output.tick(now);
            inner.e2e.push(record.latency_ms);
            let s = record.stages_ms;
            for (window, value) in inner.stages.iter_mut().zip([s.detect, s.encode, s.fuse]) {
                window.push(value);
            }
            let display = &mut inner.display;
            if matches!(display.source_state, SourceState::Starting) {
                display.source_state = SourceState::Live;
            }
            display.stats.provider = record.device.to_owned();
            display.push_record(record.clone());
        }
        self.wake();
    }

    /// Pipeline side: a frame came from capture (before the face stage). Copies a shrunk
    /// version only when the UI has taken the previous one; otherwise counts a display skip.
    pub fn offer_frame(&self, frame: &VideoFrame) {
        self.lock().input.tick(Instant::now());
        if !self.frame_wanted.swap(false, Ordering::AcqRel) {
            self.display_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let serial = self.frame_serial.fetch_add(1, Ordering::Relaxed) + 1;
        match DisplayFrame::from_video(frame, serial, DISPLAY_MAX_SIDE) {
            Some(shrunk) => self.lock().display.frame = Some(shrunk),
            None => self.frame_wanted.store(true, Ordering::Release),
        }
        self.wake();
    }

    /// Sets the source state (pipeline thread, or a reconnecting source).
    pub fn set_source_state(&self, state: SourceState) {
        self.lock().display.source_state = state;
        self.wake();
    }

    /// Sets whether a voice input exists.
    pub fn set_voice_input(&self, voice: VoiceInput) {
        self.lock().display.voice_input = voice;
    }

    /// Counts the microphone's dropped blocks in the status line.
    pub fn set_audio_dropped(&self, counter: Arc<AtomicU64>) {
        *self.audio_dropped.lock().unwrap_or_else(|e| e.into_inner()) = Some(counter);
    }

    /// Sets the recording path shown (None: not recording).
    pub fn set_recording(&self, path: Option<String>) {
        self.lock().display.recording = path;
    }

    /// Sets the short note shown to the user.
    pub fn set_notice(&self, notice: Option<String>) {
        self.lock().display.notice = notice;
    }

    /// UI side: a consistent copy to paint from; marks the frame as taken.
    pub fn snapshot(&self) -> DisplayState {
        let now = Instant::now();
        let mut inner = self.lock();
        let input_fps = inner.input.rate(now);
        let output_fps = inner.output.rate(now);
        let end_to_end = inner.e2e.figures();
        let names = ["detect", "encode", "fuse"];
        let stages = [0, 1, 2].map(|i| (names[i], inner.stages[i].figures()));
        let mut display = inner.display.clone();
        drop(inner);
        self.frame_wanted.store(true, Ordering::Release);
        display.stats.input_fps = input_fps;
        display.stats.output_fps = output_fps;
        display.stats.end_to_end = end_to_end;
        display.stats.stages = stages;
        display.stats.dropped_frames = self.dropped_frames.load(Ordering::Relaxed);
        display.stats.display_skipped = self.display_skipped.load(Ordering::Relaxed);
        display.stats.audio_dropped = self
            .audio_dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, |c| c.load(Ordering::Relaxed));
        display
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FaceRecord, Fused, StageTimes};

    fn record(t: f64, faces: Vec<FaceRecord>) -> Record {
        Record {
            source: "test".into(),
            stream: None,
            frame: Some((t * 30.0) as u64),
            t,
            latency_ms: Some(t),
            stages_ms: StageTimes::default(),
            device: "cpu",
            faces,
            voice: None,
            fused: Some(fused(0.5)),
            events: Vec::new(),
        }
    }

    fn fused(v: f32) -> Fused {
        Fused {
            valence: v,
            arousal: 0.0,
            conflict: 0.1,
            conflict_valence: 0.1,
            conflict_arousal: 0.0,
            conflict_active: false,
            gates_valence: [0.7, 0.3],
            gates_arousal: [0.3, 0.7],
            reliability: [0.9, 0.5],
        }
    }

    fn face(id: u64) -> FaceRecord {
        FaceRecord {
            id,
            bbox: [0.0, 0.0, 10.0, 10.0],
            score: 0.9,
            landmarks: None,
            probs: vec![],
            valence: 0.2,
            arousal: 0.1,
            valence_raw: 0.1,
            arousal_raw: 0.3,
            calibration: None,
            blur: 100.0,
            fused: Some(fused(0.3)),
        }
    }

    #[test]
    fn history_keeps_thirty_seconds_and_trails_are_bounded() {
        let mut s = DisplayState::new("x");
        for i in 0..(40 * 30) {
            s.push_record(record(i as f64 / 30.0, vec![face(1)]));
        }
        let first = s.history.front().unwrap().t;
        let last = s.history.back().unwrap().t;
        assert!(last - first <= HISTORY_SECONDS + 1e-9);
        assert!(last - first > HISTORY_SECONDS - 0.1);
        assert_eq!(s.trails[&1].face.len(), TRAIL_POINTS);
    }

    #[test]
    fn lost_tracks_leave_and_restarting_time_clears() {
        let mut s = DisplayState::new("x");
        s.push_record(record(1.0, vec![face(1)]));
        s.push_record(record(4.0, vec![face(2)]));
        assert!(!s.trails.contains_key(&1));
        s.push_record(record(0.5, vec![face(2)]));
        assert_eq!(s.history.len(), 1);
    }

    #[test]
    fn frames_are_copied_only_when_the_ui_took_the_last_one() {
        let live = LiveState::new(DisplayState::new("x"));
        let frame = VideoFrame::from_rgb(0, Duration::ZERO, 1280, 720, vec![7; 1280 * 720 * 3]);
        live.offer_frame(&frame);
        live.offer_frame(&frame);
        live.offer_frame(&frame);
        let snap = live.snapshot();
        let shown = snap.frame.unwrap();
        assert_eq!((shown.width, shown.height), (640, 360));
        assert_eq!(shown.rgb.len(), 640 * 360 * 3);
        assert_eq!(snap.stats.display_skipped, 2);
        live.offer_frame(&frame);
        assert_eq!(live.snapshot().frame.unwrap().serial, 2);
    }

    #[test]
    fn first_record_makes_the_source_live_with_latency_figures() {
        let live = LiveState::new(DisplayState::new("x"));
        assert_eq!(live.snapshot().source_state, SourceState::Starting);
        for i in 1..=100 {
            live.push_record(&record(i as f64, vec![]));
        }
        let snap = live.snapshot();
        assert_eq!(snap.source_state, SourceState::Live);
        assert!((snap.stats.end_to_end.p50 - 50.0).abs() <= 1.0);
        assert!((snap.stats.end_to_end.p99 - 99.0).abs() <= 1.0);
        assert_eq!(snap.stats.provider, "cpu");
    }
}
