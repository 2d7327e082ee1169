//! The output record: one per video frame (or per voice-window hop for audio-only sources).
//! This is the stable contract every sink writes and README.md documents field by field.

use serde::Serialize;

/// One output record.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Source name as given on the command line.
    pub source: String,
    /// Name of the stream (runs of several streams or a streams config); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Frame number in decode order; null for audio-only records.
    pub frame: Option<u64>,
    /// Stream time in seconds (frame timestamp, or end of the voice chunk).
    pub t: f64,
    /// Wall-clock milliseconds from frame decoded to record ready; null for audio-only records.
    pub latency_ms: Option<f64>,
    /// Milliseconds each stage worked on this frame.
    pub stages_ms: StageTimes,
    /// Execution provider the models ran on (cpu or cuda).
    pub device: &'static str,
    /// Faces in the frame, best detector score first.
    pub faces: Vec<FaceRecord>,
    /// The voice at this time; null when the source has no audio (or it has ended).
    pub voice: Option<VoiceRecord>,
    /// Fused estimate of the main face (or the voice alone when no face); null when neither
    /// modality is present.
    pub fused: Option<Fused>,
    /// Conflict events that happened at this record (start, end), per face track.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<ConflictEventRecord>,
}

/// A conflict event of one face track.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictEventRecord {
    /// Face track id (0 for the voice-only track).
    pub face: u64,
    /// The event: start (with `t`, `dimension`) or end (with `t`, `peak`, `peak_t`,
    /// `duration`, `dimension`), times in stream seconds.
    #[serde(flatten)]
    pub event: ConflictEvent,
}

/// Per-stage working time in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageTimes {
    /// Face detection, tracking and crops.
    pub detect: Option<f64>,
    /// Expression encoder.
    pub encode: Option<f64>,
    /// Fusion.
    pub fuse: Option<f64>,
}

/// One face.
#[derive(Debug, Clone, Serialize)]
pub struct FaceRecord {
    /// Track id, stable while the face stays in view.
    pub id: u64,
    /// Box [x, y, width, height] in frame pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Detector score in [0, 1].
    pub score: f32,
    /// Five landmarks [[x, y]; 5] in frame pixels (right eye, left eye, nose, right and left
    /// mouth corner); null with the Haar fallback.
    pub landmarks: Option<[[f32; 2]; 5]>,
    /// Expression probabilities in the manifest's label order.
    pub probs: Vec<f32>,
    /// Valence from the face in [-1, 1], calibrated against this face's own baseline (the
    /// raw value when calibration is off).
    pub valence: f32,
    /// Arousal from the face in [-1, 1], calibrated like `valence`.
    pub arousal: f32,
    /// Valence straight from the face model, before calibration.
    pub valence_raw: f32,
    /// Arousal straight from the face model, before calibration.
    pub arousal_raw: f32,
    /// This face's calibration: baseline, seconds observed, warmed up; null when off.
    pub calibration: Option<CalibrationState>,
    /// Sharpness of the crop: variance of its Laplacian (gray levels 0..255).
    pub blur: f32,
    /// This face fused with the voice.
    pub fused: Option<Fused>,
}

/// The voice.
#[derive(Debug, Clone, Serialize)]
pub struct VoiceRecord {
    /// Speech probability of the latest 32 ms chunk, [0, 1].
    pub speech_prob: f32,
    /// Mean speech probability over the last speech-emotion window, [0, 1].
    pub speech_fraction: f32,
    /// Speech-emotion CNN probabilities in the manifest's label order; null before the first
    /// window or when the CNN is off.
    pub probs: Option<Vec<f32>>,
    /// Valence from the voice in [-1, 1] (prosody, mixed with the CNN), calibrated against
    /// the voice's own baseline; null before the first window.
    pub valence: Option<f32>,
    /// Arousal from the voice in [-1, 1], calibrated; null before the first window.
    pub arousal: Option<f32>,
    /// Valence from the voice before calibration; null before the first window.
    pub valence_raw: Option<f32>,
    /// Arousal from the voice before calibration; null before the first window.
    pub arousal_raw: Option<f32>,
    /// The voice's calibration; null when off or before the first window.
    pub calibration: Option<CalibrationState>,
    /// [valence, arousal] from prosody alone; null without voiced speech in the window.
    pub prosody: Option<[f32; 2]>,
    /// Speech-to-noise ratio estimate, dB.
    pub snr_db: Option<f32>,
    /// Share of clipped samples in the window.
    pub clipping: Option<f32>,
}

/// A fused estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fused {
    /// Valence in [-1, 1], smoothed over time.
    pub valence: f32,
    /// Arousal in [-1, 1], smoothed over time.
    pub arousal: f32,
    /// Audio-visual conflict in [0, 1]: disagreement of face and voice weighted by how
    /// reliable both are, smoothed.
    pub conflict: f32,
    /// Conflict on valence alone and on arousal alone, smoothed.
    pub conflict_valence: f32,
    /// See `conflict_valence`.
    pub conflict_arousal: f32,
    /// A conflict event is in progress (hysteresis on `conflict`).
    pub conflict_active: bool,
    /// Gates [face, voice] for valence; sum to 1.
    pub gates_valence: [f32; 2],
    /// Gates [face, voice] for arousal; sum to 1.
    pub gates_arousal: [f32; 2],
    /// Reliability of the face and of the voice at this time, [0, 1].
    pub reliability: [f32; 2],
}

/// A change of a stream's state (runs of live streams): written to the JSONL and WebSocket
/// sinks between the records, recognisable by its `state` field.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRecord {
    /// Name of the stream.
    pub stream: String,
    /// The source (credentials redacted).
    pub source: String,
    /// The state entered: connecting, live, reconnecting, failed or ended.
    pub state: StreamState,
    /// Why (for reconnecting and failed: the error; for live after a reconnect: how long
    /// the outage lasted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Times the stream has come back after being lost.
    pub reconnects: u64,
    /// Video frames decoded so far.
    pub frames: u64,
    /// Video frames dropped so far because a stage was behind.
    pub dropped_frames: u64,
    /// Wall-clock time of the change, milliseconds since the Unix epoch.
    pub wall_ms: u64,
}

// ---------------------------------------------------------------------------------------------
// Vocabulary shared by the stages and the sinks (this module imports nothing of the crate)
// ---------------------------------------------------------------------------------------------

/// Which dimension an audio-visual conflict is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictDimension {
    /// Face and voice disagree mostly on valence.
    Valence,
    /// Face and voice disagree mostly on arousal.
    Arousal,
    /// They disagree on both about equally.
    Both,
}

impl ConflictDimension {
    /// Attribution from per-dimension amounts: `Both` when the smaller is at least
    /// `both_ratio` times the larger (or both are 0), else the larger.
    pub fn classify(valence: f64, arousal: f64, both_ratio: f32) -> ConflictDimension {
        let (v, a) = (valence.max(0.0), arousal.max(0.0));
        let (small, large) = (v.min(a), v.max(a));
        if large <= 0.0 || small >= f64::from(both_ratio) * large {
            ConflictDimension::Both
        } else if v > a {
            ConflictDimension::Valence
        } else {
            ConflictDimension::Arousal
        }
    }
}

/// A change in a face track's audio-visual conflict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ConflictEvent {
    /// The smoothed conflict rose above [`crate::fusion::params::ConflictParams::on`] at `t` and stayed at or above
    /// [`crate::fusion::params::ConflictParams::off`] for [`crate::fusion::params::ConflictParams::min_duration_s`]; reported when that
    /// duration has passed, dated back to the crossing.
    Start {
        /// Time (s) the smoothed conflict crossed the on-threshold.
        t: f64,
        /// Which dimension disagreed most so far.
        dimension: ConflictDimension,
    },
    /// The smoothed conflict fell below [`crate::fusion::params::ConflictParams::off`] (or the track was closed).
    End {
        /// Time (s) of the end.
        t: f64,
        /// Highest smoothed conflict during the event.
        peak: f32,
        /// When the peak was reached.
        peak_t: f64,
        /// `t` minus the start time.
        duration: f64,
        /// Which dimension disagreed most over the whole event (time-integrated).
        dimension: ConflictDimension,
    },
}

/// What a calibrated estimate carries besides its value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CalibrationState {
    /// The baseline (valence, arousal) subtracted from the raw values (after `max_offset`).
    pub baseline: [f32; 2],
    /// Seconds of reliable observation in the window.
    pub observed_s: f32,
    /// True once the person's own observations weigh at least as much as the prior.
    pub warmed_up: bool,
}

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum StreamState {
    /// First connection under way.
    Connecting = 0,
    /// Frames are arriving.
    Live = 1,
    /// Lost; waiting out the backoff or trying again.
    Reconnecting = 2,
    /// Gave up: the retry budget is spent, or the source is broken.
    Failed = 3,
    /// The source ended (a file's end) or the run was stopped.
    Ended = 4,
}

impl StreamState {
    /// Every state, in order.
    pub const ALL: [StreamState; 5] = [
        Self::Connecting,
        Self::Live,
        Self::Reconnecting,
        Self::Failed,
        Self::Ended,
    ];

    /// The state's name in records, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Live => "live",
            Self::Reconnecting => "reconnecting",
            Self::Failed => "failed",
            Self::Ended => "ended",
        }
    }

    /// The inverse of `as u8` (unknown values read as failed).
    pub fn from_u8(v: u8) -> Self {
        Self::ALL
            .into_iter()
            .find(|s| *s as u8 == v)
            .unwrap_or(Self::Failed)
    }
}
