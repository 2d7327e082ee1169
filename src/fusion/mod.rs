//! Fusion: joins face results and voice estimates by stream time (not arrival order),
//! calibrates each face track and the voice against their own running baseline
//! ([`calibration`]), and combines them per face into valence, arousal and an
//! uncertainty-scaled conflict. One module per concept: the parameters and their validation
//! ([`params`]), each modality's reliability ([`reliability`]), the mixing weights
//! ([`gates`]), the one-euro smoother ([`smoothing`]), the conflict and its events
//! ([`conflict`]), each modality's uncertainty ([`uncertainty`]) and the per-track state that
//! runs them ([`track`]). The math is in `docs/fusion.md`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use crate::audio::VoiceEstimate;
use crate::capture::Layout;
use crate::encode::expression::FaceFrame;
use crate::metrics::Stage;
use crate::record::{ConflictEventRecord, FaceRecord, Fused, Record, StageTimes, VoiceRecord};

pub mod calibration;
pub mod conflict;
pub mod gates;
pub mod params;
pub mod reliability;
pub mod smoothing;
#[cfg(test)]
mod test_support;
pub mod track;
pub mod uncertainty;

use std::collections::HashMap;

use calibration::{CalibrationState, Calibrator};
use gates::Estimate;
use params::{FusionParamError, FusionParams};
use reliability::{FaceQuality, VoiceQuality, face_reliability, voice_reliability};
use track::{FaceTrackFusion, FusedOutput};
use uncertainty::{Spread, normalized_entropy};

/// Fusion settings: how the two streams are joined here; the math is in [`FusionParams`].
#[derive(Debug, Clone)]
pub struct FusionConfig {
    /// Gates, reliabilities, smoothing and conflict parameters (docs/fusion.md).
    pub params: FusionParams,
    /// Frames held while waiting for the voice to catch up; beyond this they go out with the
    /// voice known so far.
    pub max_pending_frames: usize,
    /// Hold each frame until the voice has reached its end time (files: exact alignment).
    /// Live and paced sources do not wait: a frame takes the latest voice estimate at or
    /// before its time, so the voice never adds latency.
    pub wait_for_voice: bool,
    /// A face track unseen for this long (stream time) is closed.
    pub track_timeout: Duration,
}

impl Default for FusionConfig {
    fn default() -> Self {
        Self {
            params: FusionParams::default(),
            max_pending_frames: 96,
            wait_for_voice: true,
            track_timeout: Duration::from_secs(2),
        }
    }
}

/// Track id of the voice-only fusion (frames without a face, audio-only sources).
pub const VOICE_ONLY_TRACK: u64 = 0;

fn fused_record(out: &FusedOutput, reliability: [f32; 2]) -> Option<Fused> {
    Some(Fused {
        valence: out.valence?,
        arousal: out.arousal?,
        conflict: out.conflict.total,
        conflict_valence: out.conflict.valence,
        conflict_arousal: out.conflict.arousal,
        conflict_active: out.conflict_active,
        gates_valence: out.gates.valence,
        gates_arousal: out.gates.arousal,
        reliability,
    })
}

/// The fusion thread's state.
pub struct Fusion {
    config: FusionConfig,
    source: String,
    stream: Option<String>,
    device: &'static str,
    pending: VecDeque<FaceFrame>,
    voice_queue: VecDeque<VoiceEstimate>,
    voice_now: Option<VoiceEstimate>,
    voice_done: bool,
    layout: Option<Layout>,
    frames_seen: u64,
    audio_only_backlog: VecDeque<VoiceEstimate>,
    tracks: HashMap<u64, Track>,
    voice_calibration: Calibrator,
    voice_spread: Spread,
}

/// Per face track: its fusion state, its calibration and its spread, and when it was last seen.
struct Track {
    fusion: FaceTrackFusion,
    calibration: Calibrator,
    spread: Spread,
    seen: Duration,
}

/// The voice at one time, calibrated, with its reliability.
struct VoiceInput {
    estimate: Option<Estimate>,
    reliability: f32,
    calibrated: Option<[f32; 2]>,
    calibration: Option<CalibrationState>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Fusion {
    /// Fusion for records of `source`, run on `device`.
    ///
    /// # Errors
    ///
    /// The [`FusionParams::validate`] error, naming the field, when `config.params` are out of
    /// range: a run with invalid parameters fails at start-up instead of fusing with others.
    pub fn new(
        config: FusionConfig,
        source: String,
        device: &'static str,
    ) -> Result<Self, FusionParamError> {
        config.params.validate()?;
        let calibration = config.params.calibration;
        let spread_s = config.params.conflict.spread_s;
        Ok(Self {
            config,
            source,
            stream: None,
            device,
            pending: VecDeque::new(),
            voice_queue: VecDeque::new(),
            voice_now: None,
            voice_done: false,
            layout: None,
            frames_seen: 0,
            audio_only_backlog: VecDeque::new(),
            tracks: HashMap::new(),
            voice_calibration: Calibrator::voice(calibration),
            voice_spread: Spread::new(spread_s),
        })
    }

    fn voice_watermark(&self) -> Option<Duration> {
        self.voice_queue
            .back()
            .or(self.voice_now.as_ref())
            .map(|v| v.t_end)
    }

    fn has_audio(&self) -> bool {
        self.layout.is_none_or(|l| l.has_audio)
    }

    fn audio_only(&self, video_done: bool) -> bool {
        match self.layout {
            Some(l) => !l.has_video,
            None => video_done && self.frames_seen == 0,
        }
    }

    /// A face-frame arrived.
    pub fn push_frame(&mut self, frame: FaceFrame) {
        self.frames_seen += 1;
        self.audio_only_backlog.clear();
        self.pending.push_back(frame);
    }

    /// A voice estimate arrived.
    pub fn push_voice(&mut self, voice: VoiceEstimate) {
        if self.frames_seen == 0
            && voice.emotion_updated
            && self.layout.is_none_or(|l| !l.has_video)
        {
            if self.audio_only_backlog.len() == self.config.max_pending_frames {
                self.audio_only_backlog.pop_front();
            }
            self.audio_only_backlog.push_back(voice.clone());
        }
        self.voice_queue.push_back(voice);
        // Keep the queue bounded even when no video consumes it.
        while self.voice_queue.len() > 4096 {
            self.voice_now = self.voice_queue.pop_front();
        }
    }

    /// Names the stream every record of this fusion carries (multi-stream runs).
    pub fn with_stream(mut self, name: Option<String>) -> Self {
        self.stream = name;
        self
    }

    /// The source's stream layout became known.
    pub fn set_layout(&mut self, layout: Layout) {
        self.layout = Some(layout);
        if layout.has_video {
            self.audio_only_backlog.clear();
        }
    }

    /// The voice ended (or there is none).
    pub fn voice_done(&mut self) {
        self.voice_done = true;
    }

    /// Records that are ready; `video_done` says no more frames will come.
    pub fn ready(&mut self, video_done: bool) -> Vec<Record> {
        let mut out = Vec::new();
        if self.audio_only(video_done) {
            while let Some(v) = self.audio_only_backlog.pop_front() {
                out.push(self.audio_only_record(v));
            }
            return out;
        }
        while let Some(front) = self.pending.front() {
            let frame_end = front.meta.pts + front.meta.duration;
            let voice_caught_up = self.voice_watermark().is_some_and(|w| w >= frame_end);
            let release = self.voice_done
                || !self.config.wait_for_voice
                || !self.has_audio()
                || voice_caught_up
                || self.pending.len() > self.config.max_pending_frames;
            if !release {
                break;
            }
            let Some(frame) = self.pending.pop_front() else {
                break;
            };
            while self
                .voice_queue
                .front()
                .is_some_and(|v| v.t_end <= frame_end)
            {
                self.voice_now = self.voice_queue.pop_front();
            }
            out.push(self.frame_record(frame));
        }
        out
    }

    fn fresh_voice(&self, at: Duration) -> Option<&VoiceEstimate> {
        let stale = Duration::from_secs_f64(self.config.params.stale_after_s.max(0.0));
        self.voice_now
            .as_ref()
            .filter(|v| at.saturating_sub(v.t_end) <= stale)
    }

    /// The voice's calibrated estimate and reliability at stream time `at`. A new voice window
    /// (a later `t_end`) also feeds the voice's baseline and spread.
    fn voice_input(&mut self, voice: Option<&VoiceEstimate>, at: Duration) -> VoiceInput {
        let Some((v, e)) = voice.and_then(|v| Some((v, v.emotion.as_ref()?))) else {
            return VoiceInput {
                estimate: None,
                reliability: 0.0,
                calibrated: None,
                calibration: self.voice_calibration.state(),
            };
        };
        let quality = VoiceQuality {
            present: true,
            since_update_s: at.saturating_sub(v.t_end).as_secs_f64(),
            speech_prob: v.speech_fraction,
            snr_db: e.snr_db,
            clipping: e.clipping,
        };
        let reliability = voice_reliability(&quality, &self.config.params);
        let t = v.t_end.as_secs_f64();
        let raw = [e.valence, e.arousal];
        self.voice_calibration.observe(t, raw, reliability);
        let calibrated = self.voice_calibration.apply(raw);
        let spread = if reliability > 0.0 {
            self.voice_spread.update(t, calibrated)
        } else {
            self.voice_spread.std()
        };
        VoiceInput {
            estimate: Some(Estimate {
                valence: calibrated[0],
                arousal: calibrated[1],
                reliability,
                spread,
            }),
            reliability,
            calibrated: Some(calibrated),
            calibration: self.voice_calibration.state(),
        }
    }

    /// The state of track `id`, created on first sight (parameters were validated in
    /// [`Fusion::new`]).
    fn track(&mut self, id: u64, at: Duration) -> Option<&mut Track> {
        if !self.tracks.contains_key(&id) {
            let params = self.config.params;
            let track = Track {
                fusion: FaceTrackFusion::new(params).ok()?,
                calibration: Calibrator::face(params.calibration),
                spread: Spread::new(params.conflict.spread_s),
                seen: at,
            };
            self.tracks.insert(id, track);
        }
        let track = self.tracks.get_mut(&id)?;
        track.seen = at;
        Some(track)
    }

    /// One fusion step of track `id`; no output when the track cannot be created.
    fn step(
        &mut self,
        id: u64,
        at: Duration,
        face: Option<Estimate>,
        voice: Option<Estimate>,
    ) -> Option<FusedOutput> {
        let t = at.as_secs_f64();
        Some(self.track(id, at)?.fusion.update(t, face, voice))
    }

    /// Calibrates one face of track `id` at `at`: feeds its baseline and spread, returns the
    /// calibrated estimate (its spread includes the classifier's entropy) and the state.
    fn face_input(
        &mut self,
        id: u64,
        at: Duration,
        raw: [f32; 2],
        reliability: f32,
        probs: &[f32],
    ) -> (Estimate, Option<CalibrationState>) {
        let entropy_sigma = self.config.params.conflict.entropy_sigma * normalized_entropy(probs);
        let t = at.as_secs_f64();
        let Some(track) = self.track(id, at) else {
            let estimate = Estimate {
                valence: raw[0],
                arousal: raw[1],
                reliability,
                spread: [entropy_sigma; 2],
            };
            return (estimate, None);
        };
        track.calibration.observe(t, raw, reliability);
        let calibrated = track.calibration.apply(raw);
        let spread = track.spread.update(t, calibrated);
        let estimate = Estimate {
            valence: calibrated[0],
            arousal: calibrated[1],
            reliability,
            spread: spread.map(|s| s.hypot(entropy_sigma)),
        };
        (estimate, track.calibration.state())
    }

    /// Closes tracks unseen for longer than the timeout; returns their final events.
    fn expire_tracks(&mut self, now: Duration) -> Vec<ConflictEventRecord> {
        let timeout = self.config.track_timeout;
        let expired: Vec<u64> = self
            .tracks
            .iter()
            .filter(|(_, track)| now.saturating_sub(track.seen) > timeout)
            .map(|(id, _)| *id)
            .collect();
        let mut events = Vec::new();
        for id in expired {
            if let Some(track) = self.tracks.remove(&id) {
                events.extend(close_track(id, track.fusion, now));
            }
        }
        events
    }

    fn frame_record(&mut self, frame: FaceFrame) -> Record {
        let mut stamps = frame.meta.stamps;
        stamps.start(Stage::Fuse);
        let at = frame.meta.pts + frame.meta.duration;
        let voice = self.fresh_voice(at).cloned();
        let voice_now = self.voice_input(voice.as_ref(), at);
        let (voice_in, voice_reliability) = (voice_now.estimate, voice_now.reliability);
        let mut events = self.expire_tracks(frame.meta.pts);
        let mut faces = Vec::with_capacity(frame.faces.len());
        for f in &frame.faces {
            let quality = FaceQuality {
                present: true,
                since_update_s: 0.0,
                score: f.detection.score,
                size_px: (f.detection.bbox.w * f.detection.bbox.h).max(0.0).sqrt(),
                blur: Some(f.blur),
                landmarks: f.detection.landmarks,
                track_age_s: f.track_age.as_secs_f32(),
            };
            let face_reliability = face_reliability(&quality, &self.config.params);
            let (face_in, calibration) = self.face_input(
                f.id,
                frame.meta.pts,
                [f.valence, f.arousal],
                face_reliability,
                &f.probs,
            );
            let out = self.step(f.id, frame.meta.pts, Some(face_in), voice_in);
            if let Some(out) = &out {
                events.extend(
                    out.events
                        .iter()
                        .map(|&event| ConflictEventRecord { face: f.id, event }),
                );
            }
            faces.push(FaceRecord {
                id: f.id,
                bbox: [
                    f.detection.bbox.x,
                    f.detection.bbox.y,
                    f.detection.bbox.w,
                    f.detection.bbox.h,
                ],
                score: f.detection.score,
                landmarks: f.detection.landmarks,
                probs: f.probs.clone(),
                valence: face_in.valence,
                arousal: face_in.arousal,
                valence_raw: f.valence,
                arousal_raw: f.arousal,
                calibration,
                blur: f.blur,
                fused: out.and_then(|o| fused_record(&o, [face_reliability, voice_reliability])),
            });
        }
        let main = frame
            .faces
            .iter()
            .enumerate()
            .max_by(|(_, a), (_, b)| {
                (a.detection.score * a.detection.bbox.area())
                    .total_cmp(&(b.detection.score * b.detection.bbox.area()))
            })
            .map(|(i, _)| i);
        let fused = match main {
            Some(i) => faces[i].fused,
            None => {
                let out = self.step(VOICE_ONLY_TRACK, frame.meta.pts, None, voice_in);
                out.and_then(|out| {
                    events.extend(out.events.iter().map(|&event| ConflictEventRecord {
                        face: VOICE_ONLY_TRACK,
                        event,
                    }));
                    fused_record(&out, [0.0, voice_reliability])
                })
            }
        };
        stamps.end(Stage::Fuse);
        let ready = Instant::now();
        Record {
            source: self.source.clone(),
            stream: self.stream.clone(),
            frame: Some(frame.meta.index),
            t: frame.meta.pts.as_secs_f64(),
            latency_ms: Some(ms(ready.saturating_duration_since(stamps.decoded))),
            stages_ms: StageTimes {
                detect: stamps.stage_time(Stage::Detect).map(ms),
                encode: stamps.stage_time(Stage::Encode).map(ms),
                fuse: stamps.stage_time(Stage::Fuse).map(ms),
            },
            device: self.device,
            faces,
            voice: voice.as_ref().map(|v| voice_record(v, &voice_now)),
            fused,
            events,
        }
    }

    fn audio_only_record(&mut self, v: VoiceEstimate) -> Record {
        let voice_now = self.voice_input(Some(&v), v.t_end);
        let reliability = voice_now.reliability;
        let out = self.step(VOICE_ONLY_TRACK, v.t_end, None, voice_now.estimate);
        let events = out
            .as_ref()
            .map(|o| {
                o.events
                    .iter()
                    .map(|&event| ConflictEventRecord {
                        face: VOICE_ONLY_TRACK,
                        event,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Record {
            source: self.source.clone(),
            stream: self.stream.clone(),
            frame: None,
            t: v.t_end.as_secs_f64(),
            latency_ms: None,
            stages_ms: StageTimes::default(),
            device: self.device,
            faces: Vec::new(),
            voice: Some(voice_record(&v, &voice_now)),
            fused: out.and_then(|o| fused_record(&o, [0.0, reliability])),
            events,
        }
    }

    /// Closes every track at the end of the stream; returns their final events.
    fn close_all(&mut self) -> Vec<ConflictEventRecord> {
        self.tracks
            .drain()
            .flat_map(|(id, track)| close_track(id, track.fusion, track.seen))
            .collect()
    }

    /// Runs until both inputs are closed, sending records in stream order.
    pub fn run(
        mut self,
        faces: Receiver<FaceFrame>,
        voices: Receiver<VoiceEstimate>,
        layout: Receiver<Layout>,
        out: Sender<Record>,
    ) {
        let never_f = crossbeam_channel::never();
        let never_v = crossbeam_channel::never();
        let never_l = crossbeam_channel::never();
        let (mut faces_rx, mut voices_rx, mut layout_rx) = (&faces, &voices, &layout);
        let mut video_done = false;
        loop {
            select! {
                recv(faces_rx) -> msg => match msg {
                    Ok(f) => self.push_frame(f),
                    Err(_) => { video_done = true; faces_rx = &never_f; }
                },
                recv(voices_rx) -> msg => match msg {
                    Ok(v) => self.push_voice(v),
                    Err(_) => { self.voice_done(); voices_rx = &never_v; }
                },
                recv(layout_rx) -> msg => match msg {
                    Ok(l) => self.set_layout(l),
                    Err(_) => layout_rx = &never_l,
                },
            }
            for record in self.ready(video_done) {
                if out.send(record).is_err() {
                    return;
                }
            }
            if video_done && self.voice_done {
                break;
            }
        }
        self.voice_done = true;
        let mut last = None;
        for record in self.ready(true) {
            if let Some(previous) = last.replace(record)
                && out.send(previous).is_err()
            {
                return;
            }
        }
        // Conflict events still open end with the stream, on its last record.
        let closing = self.close_all();
        if let Some(mut record) = last {
            record.events.extend(closing);
            out.send(record).ok();
        }
    }
}

/// Closes one track's fusion at stream time `at`; its open conflict event ends there.
fn close_track(id: u64, mut fusion: FaceTrackFusion, at: Duration) -> Vec<ConflictEventRecord> {
    fusion
        .close(at.as_secs_f64())
        .into_iter()
        .map(|event| ConflictEventRecord { face: id, event })
        .collect()
}

fn voice_record(v: &VoiceEstimate, input: &VoiceInput) -> VoiceRecord {
    let e = v.emotion.as_ref();
    VoiceRecord {
        speech_prob: v.speech_prob,
        speech_fraction: v.speech_fraction,
        probs: e.and_then(|e| e.probs.clone()),
        valence: input.calibrated.map(|c| c[0]),
        arousal: input.calibrated.map(|c| c[1]),
        valence_raw: e.map(|e| e.valence),
        arousal_raw: e.map(|e| e.arousal),
        calibration: input.calibrated.and(input.calibration),
        prosody: e.and_then(|e| e.prosody).map(|(v, a)| [v, a]),
        snr_db: e.and_then(|e| e.snr_db),
        clipping: e.map(|e| e.clipping),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_params_are_an_error_naming_the_field() {
        type Edit = fn(&mut FusionParams);
        let cases: [(Edit, &str); 3] = [
            (|p| p.smoother.min_cutoff = -1.0, "smoother.min_cutoff"),
            // `on` below `off` (0.1): no hysteresis band; the error names both thresholds.
            (|p| p.conflict.on = 0.05, "conflict.off"),
            (|p| p.calibration.window_s = 0.0, "calibration.window_s"),
        ];
        for (edit, field) in cases {
            let mut config = FusionConfig::default();
            edit(&mut config.params);
            let error = Fusion::new(config, "clip.mp4".into(), "cpu")
                .err()
                .expect("invalid parameters are an error, not a silent default");
            assert_eq!(error.field, field, "{error}");
            assert!(error.to_string().contains(field), "{error}");
        }
        let error = {
            let mut config = FusionConfig::default();
            config.params.conflict.on = 0.05;
            Fusion::new(config, "clip.mp4".into(), "cpu").err()
        };
        assert!(
            error.is_some_and(|e| e.to_string().contains("conflict.on")),
            "the hysteresis error names conflict.on too"
        );
        assert!(Fusion::new(FusionConfig::default(), "clip.mp4".into(), "cpu").is_ok());
    }
}
