//! Audio stage: voice activity on every 32 ms of 16 kHz audio (Silero VAD) and speech emotion
//! over sliding 2.5 s windows of 44.1 kHz audio, both timed by the stream clock. Emits one
//! [`VoiceEstimate`] per VAD chunk. Runs on its own thread between the audio channel and fusion.

pub mod prosody;
pub mod speech;
pub mod speech_features;
pub mod vad;

use std::collections::VecDeque;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::capture::AudioBlock;
use crate::runtime::ModelError as EncodeError;
use crate::stage::{self, Emit, Position, StageError};
use prosody::{LinearHead, ProsodyExtractor};
use speech::SpeechEncoder;
use speech_features::{SER_SAMPLE_RATE, SER_WINDOW_SAMPLES};
use vad::{Chunker, SileroVad, VAD_CHUNK, VAD_RATE};

/// Errors of the audio stage while it runs, with the stream time they happened at (model
/// loading errors are the encoders' own, naming the file).
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("voice activity detection failed at {at_s:.3} s of stream time: {source}")]
    Vad {
        at_s: f64,
        #[source]
        source: EncodeError,
    },
    #[error("speech-emotion model failed on the window ending at {at_s:.3} s: {source}")]
    Speech {
        at_s: f64,
        #[source]
        source: EncodeError,
    },
}

/// Audio stage settings.
#[derive(Debug, Clone, Copy)]
pub struct AudioConfig {
    /// Speech-emotion window length (the model was trained on 2.5 s).
    pub window: Duration,
    /// How often the speech-emotion model runs (window hop).
    pub hop: Duration,
    /// Share of the speech-emotion CNN in the voice estimate when both it and prosody have
    /// one (0: prosody alone). The CNN is a weak placeholder, so it gets little.
    pub cnn_weight: f32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(2500),
            hop: Duration::from_millis(500),
            cnn_weight: 0.2,
        }
    }
}

/// The prosody heads: linear maps from prosody features to arousal and valence, fitted on
/// RAVDESS (scripts/prosody/), committed as `models/prosody_head.json` and installed beside the
/// manifest in the data directory.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ProsodyHeads {
    /// Feature names in order (checked against the extractor's).
    pub features: Vec<String>,
    /// Arousal head.
    pub arousal: LinearHead,
    /// Valence head (near chance on RAVDESS: weak).
    pub valence: LinearHead,
}

impl ProsodyHeads {
    /// Reads and checks a head file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read prosody head {}: {e}", path.display()))?;
        let heads: ProsodyHeads = serde_json::from_str(&text)
            .map_err(|e| format!("prosody head {} is invalid: {e}", path.display()))?;
        let names: Vec<&str> = heads.features.iter().map(String::as_str).collect();
        if names != prosody::FEATURE_NAMES {
            return Err(format!(
                "prosody head {} was fitted on other features ({names:?})",
                path.display()
            ));
        }
        for head in [&heads.arousal, &heads.valence] {
            let n = prosody::N_FEATURES;
            if head.mean.len() != n || head.std.len() != n || head.weights.len() != n {
                return Err(format!(
                    "prosody head {} needs {n} means, stds and weights",
                    path.display()
                ));
            }
        }
        Ok(heads)
    }
}

/// The voice's emotion over one window, from prosody and (optionally) the speech CNN.
#[derive(Debug, Clone)]
pub struct SpeechEmotion {
    /// Stream time at which the window ends.
    pub window_end: Duration,
    /// Speech-emotion CNN class probabilities in its head's label order (when it runs).
    pub probs: Option<Vec<f32>>,
    /// (valence, arousal) from the CNN's classes.
    pub cnn: Option<(f32, f32)>,
    /// (valence, arousal) from prosody; None when the window has no voiced speech.
    pub prosody: Option<(f32, f32)>,
    /// Combined valence in [-1, 1].
    pub valence: f32,
    /// Combined arousal in [-1, 1].
    pub arousal: f32,
    /// Speech-to-noise ratio estimate in dB (speech chunks vs the noise floor of non-speech
    /// chunks over the last 10 s); None until both have been heard.
    pub snr_db: Option<f32>,
    /// Share of clipped samples (|x| ≥ 0.99) in the window.
    pub clipping: f32,
}

/// What the voice says at the end of one VAD chunk.
#[derive(Debug, Clone)]
pub struct VoiceEstimate {
    /// Stream time at which the chunk ends.
    pub t_end: Duration,
    /// Speech probability of this chunk.
    pub speech_prob: f32,
    /// Mean speech probability over the last speech-emotion window: how much of it is speech.
    pub speech_fraction: f32,
    /// The latest speech-emotion result, if a window has been analysed.
    pub emotion: Option<SpeechEmotion>,
    /// True when `emotion` was computed since the previous estimate (one per hop).
    pub emotion_updated: bool,
}

/// Per-stream state of the audio stage. The two sample rates arrive from separate branches
/// and can be a few blocks apart, so VAD results wait until the 44.1 kHz audio has caught up
/// with them; speech-emotion windows end exactly on hop boundaries of the stream clock.
pub struct AudioStage {
    vad: SileroVad,
    speech: Option<SpeechEncoder>,
    prosody: ProsodyExtractor,
    heads: ProsodyHeads,
    config: AudioConfig,
    chunker: Chunker,
    start: Option<Duration>,
    chunks_done: u64,
    vad_history: VecDeque<f32>,
    /// (energy, speech probability) of the chunks of the last 10 s, for the SNR estimate.
    /// (end sample at 16 kHz, energy, speech probability) of each VAD chunk.
    energy_history: VecDeque<(u64, f32, f32)>,
    /// VAD results (chunk end in 16 kHz samples, probability) not yet emitted.
    waiting: VecDeque<(u64, f32)>,
    /// 16 kHz samples `[buf16_start, samples16)`.
    buf16: VecDeque<f32>,
    buf16_start: u64,
    samples16: u64,
    /// 44.1 kHz samples `[buf44_start, samples44)`.
    buf44: VecDeque<f32>,
    buf44_start: u64,
    samples44: u64,
    next_hop44: u64,
    emotion: Option<SpeechEmotion>,
    emotion_updated: bool,
    window_buf: Vec<f32>,
}

fn samples_at(rate: u32, d: Duration) -> u64 {
    (d.as_secs_f64() * f64::from(rate)).round() as u64
}

/// Most audio kept beyond one window (bounds memory if one branch stalls), in seconds.
const MAX_LEAD_S: usize = 10;
/// Most VAD results held while waiting for the 44.1 kHz branch.
const MAX_WAITING: usize = 256;
/// Chunks of history for the noise floor (10 s of 32 ms chunks).
const ENERGY_HISTORY: usize = 312;
/// Chunks kept: the noise-floor history before the oldest window still to be analysed, plus
/// the chunks the 16 kHz branch may be ahead by (at most the waiting VAD results).
const ENERGY_KEPT: usize = ENERGY_HISTORY + MAX_WAITING;

/// Appends `samples` to a ring that starts at absolute sample `start`, keeping at most `keep`.
fn push_ring(ring: &mut VecDeque<f32>, start: &mut u64, samples: &[f32], keep: usize) {
    ring.extend(samples.iter().copied());
    while ring.len() > keep {
        ring.pop_front();
        *start += 1;
    }
}

/// Copies absolute samples `[from, to)` of a ring starting at `start` into `out`.
fn copy_range(ring: &VecDeque<f32>, start: u64, from: u64, to: u64, out: &mut Vec<f32>) {
    out.clear();
    let from = from.max(start);
    if to > from {
        let (a, b) = ((from - start) as usize, (to - start) as usize);
        out.extend(ring.range(a..b.min(ring.len())).copied());
    }
}

impl AudioStage {
    /// An audio stage for one stream; `speech` (the CNN) is optional.
    pub fn new(
        vad: SileroVad,
        speech: Option<SpeechEncoder>,
        heads: ProsodyHeads,
        config: AudioConfig,
    ) -> Self {
        let hop44 = samples_at(SER_SAMPLE_RATE, config.hop).max(1);
        Self {
            vad,
            speech,
            prosody: ProsodyExtractor::new(),
            heads,
            config,
            chunker: Chunker::default(),
            start: None,
            chunks_done: 0,
            vad_history: VecDeque::new(),
            energy_history: VecDeque::with_capacity(ENERGY_KEPT),
            waiting: VecDeque::new(),
            buf16: VecDeque::new(),
            buf16_start: 0,
            samples16: 0,
            buf44: VecDeque::with_capacity(SER_WINDOW_SAMPLES),
            buf44_start: 0,
            samples44: 0,
            next_hop44: hop44,
            emotion: None,
            emotion_updated: false,
            window_buf: Vec::with_capacity(SER_WINDOW_SAMPLES),
        }
    }

    fn window44(&self) -> u64 {
        samples_at(SER_SAMPLE_RATE, self.config.window).clamp(1, SER_WINDOW_SAMPLES as u64)
    }

    fn window16(&self) -> u64 {
        samples_at(VAD_RATE, self.config.window).max(1)
    }

    fn window_chunks(&self) -> usize {
        (samples_at(VAD_RATE, self.config.window) as usize / VAD_CHUNK).max(1)
    }

    fn time_of_44(&self, samples: u64) -> Duration {
        self.start.unwrap_or_default()
            + Duration::from_secs_f64(samples as f64 / f64::from(SER_SAMPLE_RATE))
    }

    /// Forgets the stream: the next block starts a new one.
    pub fn reset(&mut self) {
        self.vad.reset();
        self.chunker = Chunker::default();
        self.start = None;
        self.chunks_done = 0;
        self.vad_history.clear();
        self.energy_history.clear();
        self.waiting.clear();
        self.buf16.clear();
        self.buf16_start = 0;
        self.samples16 = 0;
        self.buf44.clear();
        self.buf44_start = 0;
        self.samples44 = 0;
        self.next_hop44 = samples_at(SER_SAMPLE_RATE, self.config.hop).max(1);
        self.emotion = None;
        self.emotion_updated = false;
    }

    /// Stream time in seconds of sample `n` at `rate` (counted from the first block).
    fn stream_seconds(&self, n: u64, rate: u32) -> f64 {
        self.start.unwrap_or_default().as_secs_f64() + n as f64 / f64::from(rate)
    }

    /// Feeds one block; returns the estimates that became complete.
    pub fn push(&mut self, block: &AudioBlock) -> Result<Vec<VoiceEstimate>, AudioError> {
        if self.start.is_none() {
            self.start = Some(block.pts.unwrap_or_default());
        }
        match block.rate {
            SER_SAMPLE_RATE => {
                let keep = self.window44() as usize + MAX_LEAD_S * SER_SAMPLE_RATE as usize;
                push_ring(&mut self.buf44, &mut self.buf44_start, &block.samples, keep);
                self.samples44 += block.samples.len() as u64;
            }
            VAD_RATE => {
                let keep = self.window16() as usize + MAX_LEAD_S * VAD_RATE as usize;
                push_ring(&mut self.buf16, &mut self.buf16_start, &block.samples, keep);
                self.samples16 += block.samples.len() as u64;
                self.chunker.push(&block.samples);
                while let Some(chunk) = self.chunker.next_chunk() {
                    let end16 = (self.chunks_done + 1) * VAD_CHUNK as u64;
                    let prob = self.vad.process(&chunk).map_err(|source| AudioError::Vad {
                        at_s: self.stream_seconds(end16, VAD_RATE),
                        source,
                    })?;
                    let energy = chunk.iter().map(|x| x * x).sum::<f32>() / VAD_CHUNK as f32;
                    if self.energy_history.len() == ENERGY_KEPT {
                        self.energy_history.pop_front();
                    }
                    self.energy_history.push_back((end16, energy, prob));
                    self.chunks_done += 1;
                    self.waiting
                        .push_back((self.chunks_done * VAD_CHUNK as u64, prob));
                }
            }
            _ => {}
        }
        self.release(false)
    }

    /// Emits waiting VAD results whose time the 44.1 kHz audio has reached (all of them when
    /// `ended`), running the speech-emotion windows that end before each.
    fn release(&mut self, ended: bool) -> Result<Vec<VoiceEstimate>, AudioError> {
        let mut out = Vec::new();
        while let Some(&(end16, prob)) = self.waiting.front() {
            let end44 = end16 * u64::from(SER_SAMPLE_RATE) / u64::from(VAD_RATE);
            if !ended && self.samples44 < end44 && self.waiting.len() < MAX_WAITING {
                break;
            }
            self.waiting.pop_front();
            let hop44 = samples_at(SER_SAMPLE_RATE, self.config.hop).max(1);
            while self.next_hop44 <= end44 {
                self.run_speech(self.next_hop44)?;
                self.next_hop44 += hop44;
            }
            if self.vad_history.len() == self.window_chunks() {
                self.vad_history.pop_front();
            }
            self.vad_history.push_back(prob);
            out.push(self.estimate(end16, prob));
        }
        Ok(out)
    }

    /// Speech-to-noise ratio (dB) of the window ending at 16 kHz sample `end16`: mean energy of
    /// its speech chunks over the median energy of the non-speech chunks of the 10 s before.
    /// Only chunks up to `end16` count, so the value does not depend on how far the 16 kHz
    /// branch happened to be ahead of the 44.1 kHz one (thread timing).
    fn snr_db(&self, end16: u64) -> Option<f32> {
        let past = || {
            self.energy_history
                .iter()
                .filter(move |(end, ..)| *end <= end16)
        };
        let skip = past().count().saturating_sub(ENERGY_HISTORY);
        let mut noise: Vec<f32> = past()
            .skip(skip)
            .filter(|(_, _, p)| *p < 0.3)
            .map(|(_, e, _)| *e)
            .collect();
        let window_start = end16.saturating_sub(self.window16());
        let speech: Vec<f32> = past()
            .filter(|(end, _, p)| *end > window_start && *p > 0.5)
            .map(|(_, e, _)| *e)
            .collect();
        if noise.len() < 5 || speech.is_empty() {
            return None;
        }
        noise.sort_by(f32::total_cmp);
        let floor = noise[noise.len() / 2].max(1e-10);
        let level = speech.iter().sum::<f32>() / speech.len() as f32;
        Some((10.0 * (level / floor).log10()).clamp(-20.0, 80.0))
    }

    /// Analyses the window ending at 44.1 kHz sample `end`: prosody on the 16 kHz audio of the
    /// same span, the CNN (when loaded) on the 44.1 kHz audio.
    fn run_speech(&mut self, end: u64) -> Result<(), AudioError> {
        let at_s = self.stream_seconds(end, SER_SAMPLE_RATE);
        let to44 = end.min(self.samples44);
        let from = end.saturating_sub(self.window44());
        let cnn = match self.speech.as_mut() {
            Some(speech) => {
                copy_range(
                    &self.buf44,
                    self.buf44_start,
                    from,
                    to44,
                    &mut self.window_buf,
                );
                let probs = speech
                    .classify(&self.window_buf)
                    .map_err(|source| AudioError::Speech { at_s, source })?;
                let va = speech.head().valence_arousal(&probs);
                Some((probs, va))
            }
            None => None,
        };
        let end16 = end * u64::from(VAD_RATE) / u64::from(SER_SAMPLE_RATE);
        let from16 = end16.saturating_sub(self.window16());
        copy_range(
            &self.buf16,
            self.buf16_start,
            from16,
            end16.min(self.samples16),
            &mut self.window_buf,
        );
        let clipping = if self.window_buf.is_empty() {
            0.0
        } else {
            self.window_buf.iter().filter(|x| x.abs() >= 0.99).count() as f32
                / self.window_buf.len() as f32
        };
        let prosody = self.prosody.features(&self.window_buf).map(|f| {
            (
                self.heads.valence.predict(&f),
                self.heads.arousal.predict(&f),
            )
        });
        let w = self.config.cnn_weight.clamp(0.0, 1.0);
        let (valence, arousal) = match (prosody, &cnn) {
            (Some((pv, pa)), Some((_, (cv, ca)))) => {
                ((1.0 - w) * pv + w * cv, (1.0 - w) * pa + w * ca)
            }
            (Some(p), None) => p,
            (None, Some((_, c))) => *c,
            (None, None) => (0.0, 0.0),
        };
        self.emotion = Some(SpeechEmotion {
            window_end: self.time_of_44(to44),
            probs: cnn.as_ref().map(|(p, _)| p.clone()),
            cnn: cnn.map(|(_, va)| va),
            prosody,
            valence,
            arousal,
            snr_db: self.snr_db(end16),
            clipping,
        });
        self.emotion_updated = true;
        // Samples before the next window's start are no longer needed.
        let hop = self.config.hop;
        let keep44 = (end + samples_at(SER_SAMPLE_RATE, hop)).saturating_sub(self.window44());
        while self.buf44_start < keep44 && !self.buf44.is_empty() {
            self.buf44.pop_front();
            self.buf44_start += 1;
        }
        let keep16 = (end16 + samples_at(VAD_RATE, hop)).saturating_sub(self.window16());
        while self.buf16_start < keep16 && !self.buf16.is_empty() {
            self.buf16.pop_front();
            self.buf16_start += 1;
        }
        Ok(())
    }

    fn estimate(&mut self, end16: u64, speech_prob: f32) -> VoiceEstimate {
        let t_end = self.start.unwrap_or_default()
            + Duration::from_secs_f64(end16 as f64 / f64::from(VAD_RATE));
        let n = self.vad_history.len().max(1) as f32;
        VoiceEstimate {
            t_end,
            speech_prob,
            speech_fraction: self.vad_history.iter().sum::<f32>() / n,
            emotion: self.emotion.clone(),
            emotion_updated: std::mem::take(&mut self.emotion_updated),
        }
    }

    /// End of stream: emits what is waiting, and analyses the tail when more than half a hop
    /// of audio followed the last window.
    pub fn finish(&mut self) -> Result<Vec<VoiceEstimate>, AudioError> {
        let mut out = self.release(true)?;
        let hop44 = samples_at(SER_SAMPLE_RATE, self.config.hop).max(1);
        let last_end = self.next_hop44.saturating_sub(hop44);
        if self.samples44 > last_end + hop44 / 2 {
            self.run_speech(self.samples44)?;
            let prob = self.vad_history.back().copied().unwrap_or(0.0);
            let end16 = self.samples44 * u64::from(VAD_RATE) / u64::from(SER_SAMPLE_RATE);
            out.push(self.estimate(end16, prob));
        }
        Ok(out)
    }

    /// Runs until the audio channel closes or the output is gone; hands the stage back, reset
    /// for another stream.
    pub fn run(
        self,
        rx: Receiver<AudioBlock>,
        tx: Sender<VoiceEstimate>,
    ) -> Result<Self, StageError> {
        stage::run(self, rx, tx)
    }
}

impl stage::Stage for AudioStage {
    type Input = AudioBlock;
    type Output = VoiceEstimate;
    type Error = AudioError;
    const NAME: &'static str = "audio";

    fn process(
        &mut self,
        block: AudioBlock,
        out: &mut Emit<'_, VoiceEstimate>,
    ) -> Result<(), AudioError> {
        for estimate in self.push(&block)? {
            out.send(estimate);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Emit<'_, VoiceEstimate>) -> Result<(), AudioError> {
        for estimate in AudioStage::finish(self)? {
            out.send(estimate);
        }
        Ok(())
    }

    fn reset(&mut self) {
        AudioStage::reset(self);
    }

    /// None: the audio stage's errors name their stream time themselves.
    fn position(_block: &AudioBlock) -> Option<Position> {
        None
    }
}
