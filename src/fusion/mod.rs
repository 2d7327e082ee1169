//! Fusion: joins face results and voice estimates by stream time (not arrival order) and
//! combines them per face into valence, arousal and conflict. This first fusion is a
//! reliability-weighted mean (face: detector score; voice: share of speech in the window).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use crate::audio::VoiceEstimate;
use crate::capture::Layout;
use crate::encode::expression::{FaceEstimate, FaceFrame};
use crate::metrics::Stage;
use crate::record::{FaceRecord, Fused, Record, StageTimes, VoiceRecord};

/// Fusion settings.
#[derive(Debug, Clone, Copy)]
pub struct FusionConfig {
    /// A voice estimate older than this (stream time) counts as absent.
    pub voice_stale_after: Duration,
    /// Frames held while waiting for the voice to catch up; beyond this they go out with the
    /// voice known so far.
    pub max_pending_frames: usize,
    /// Below this total reliability there is no fused value.
    pub min_reliability: f32,
    /// Hold each frame until the voice has reached its end time (files: exact alignment).
    /// Live and paced sources do not wait: a frame takes the latest voice estimate at or
    /// before its time, so the voice never adds latency.
    pub wait_for_voice: bool,
}

impl Default for FusionConfig {
    fn default() -> Self {
        Self {
            voice_stale_after: Duration::from_millis(500),
            max_pending_frames: 96,
            min_reliability: 0.05,
            wait_for_voice: true,
        }
    }
}

/// The reliability-weighted fusion of one face with the voice. `voice` is (valence, arousal,
/// reliability); a missing or unreliable voice leaves the face's values.
pub fn fuse(
    face: Option<(f32, f32, f32)>,
    voice: Option<(f32, f32, f32)>,
    min: f32,
) -> Option<Fused> {
    let (fv, fa, fr) = face.unwrap_or((0.0, 0.0, 0.0));
    let (vv, va, vr) = voice.unwrap_or((0.0, 0.0, 0.0));
    let (fr, vr) = (fr.clamp(0.0, 1.0), vr.clamp(0.0, 1.0));
    let total = fr + vr;
    if total < min {
        return None;
    }
    let wf = fr / total;
    let conflict = if face.is_some() && voice.is_some() {
        let distance = ((fv - vv).powi(2) + (fa - va).powi(2)).sqrt() / (2.0 * 2f32.sqrt());
        (distance * (fr * vr).sqrt()).clamp(0.0, 1.0)
    } else {
        0.0
    };
    Some(Fused {
        valence: (wf * fv + (1.0 - wf) * vv).clamp(-1.0, 1.0),
        arousal: (wf * fa + (1.0 - wf) * va).clamp(-1.0, 1.0),
        conflict,
        face_weight: wf,
    })
}

/// The fusion thread's state.
pub struct Fusion {
    config: FusionConfig,
    source: String,
    device: &'static str,
    pending: VecDeque<FaceFrame>,
    voice_queue: VecDeque<VoiceEstimate>,
    voice_now: Option<VoiceEstimate>,
    voice_done: bool,
    layout: Option<Layout>,
    frames_seen: u64,
    audio_only_backlog: VecDeque<VoiceEstimate>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Fusion {
    /// Fusion for records of `source`, run on `device`.
    pub fn new(config: FusionConfig, source: String, device: &'static str) -> Self {
        Self {
            config,
            source,
            device,
            pending: VecDeque::new(),
            voice_queue: VecDeque::new(),
            voice_now: None,
            voice_done: false,
            layout: None,
            frames_seen: 0,
            audio_only_backlog: VecDeque::new(),
        }
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
        self.voice_now
            .as_ref()
            .filter(|v| at.saturating_sub(v.t_end) <= self.config.voice_stale_after)
    }

    fn voice_inputs(voice: Option<&VoiceEstimate>) -> Option<(f32, f32, f32)> {
        let v = voice?;
        let e = v.emotion.as_ref()?;
        Some((e.valence, e.arousal, v.speech_fraction))
    }

    fn frame_record(&self, frame: FaceFrame) -> Record {
        let mut stamps = frame.meta.stamps;
        stamps.start(Stage::Fuse);
        let voice = self.fresh_voice(frame.meta.pts + frame.meta.duration);
        let voice_in = Self::voice_inputs(voice);
        let face_in = |f: &FaceEstimate| Some((f.valence, f.arousal, f.detection.score));
        let faces: Vec<FaceRecord> = frame
            .faces
            .iter()
            .map(|f| FaceRecord {
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
                valence: f.valence,
                arousal: f.arousal,
                fused: fuse(face_in(f), voice_in, self.config.min_reliability),
            })
            .collect();
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
            None => fuse(None, voice_in, self.config.min_reliability),
        };
        stamps.end(Stage::Fuse);
        let ready = Instant::now();
        Record {
            source: self.source.clone(),
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
            voice: voice.map(voice_record),
            fused,
        }
    }

    fn audio_only_record(&self, v: VoiceEstimate) -> Record {
        let fused = fuse(
            None,
            Self::voice_inputs(Some(&v)),
            self.config.min_reliability,
        );
        Record {
            source: self.source.clone(),
            frame: None,
            t: v.t_end.as_secs_f64(),
            latency_ms: None,
            stages_ms: StageTimes::default(),
            device: self.device,
            faces: Vec::new(),
            voice: Some(voice_record(&v)),
            fused,
        }
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
        for record in self.ready(true) {
            if out.send(record).is_err() {
                return;
            }
        }
    }
}

fn voice_record(v: &VoiceEstimate) -> VoiceRecord {
    VoiceRecord {
        speech_prob: v.speech_prob,
        speech_fraction: v.speech_fraction,
        probs: v.emotion.as_ref().map(|e| e.probs.clone()),
        valence: v.emotion.as_ref().map(|e| e.valence),
        arousal: v.emotion.as_ref().map(|e| e.arousal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_modality_leaves_the_other_one_alone() {
        let f = fuse(Some((0.5, -0.2, 0.9)), None, 0.05).unwrap();
        assert_eq!(
            (f.valence, f.arousal, f.conflict, f.face_weight),
            (0.5, -0.2, 0.0, 1.0)
        );
        let v = fuse(None, Some((-0.4, 0.6, 0.7)), 0.05).unwrap();
        assert_eq!((v.valence, v.arousal, v.face_weight), (-0.4, 0.6, 0.0));
        assert!(fuse(None, None, 0.05).is_none());
        assert!(fuse(None, Some((0.1, 0.1, 0.01)), 0.05).is_none());
    }

    #[test]
    fn weights_follow_reliability_and_conflict_follows_disagreement() {
        let f = fuse(Some((1.0, 0.0, 0.9)), Some((-1.0, 0.0, 0.3)), 0.05).unwrap();
        assert!((f.face_weight - 0.75).abs() < 1e-6);
        assert!((f.valence - 0.5).abs() < 1e-6);
        let agree = fuse(Some((0.5, 0.5, 0.9)), Some((0.5, 0.5, 0.9)), 0.05).unwrap();
        assert_eq!(agree.conflict, 0.0);
        let clash = fuse(Some((1.0, 1.0, 1.0)), Some((-1.0, -1.0, 1.0)), 0.05).unwrap();
        assert!((clash.conflict - 1.0).abs() < 1e-6);
        let unsure = fuse(Some((1.0, 1.0, 1.0)), Some((-1.0, -1.0, 0.04)), 0.05).unwrap();
        assert!(unsure.conflict < 0.25);
    }
}
