//! Audio stage: voice activity on every 32 ms of 16 kHz audio (Silero VAD) and speech emotion
//! over sliding 2.5 s windows of 44.1 kHz audio, both timed by the stream clock. Emits one
//! [`VoiceEstimate`] per VAD chunk. Runs on its own thread between the audio channel and fusion.

pub mod speech_features;
pub mod vad;

use std::collections::VecDeque;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::capture::AudioBlock;
use crate::encode::expression::EncodeError;
use crate::encode::speech::SpeechEncoder;
use speech_features::{SER_SAMPLE_RATE, SER_WINDOW_SAMPLES};
use vad::{Chunker, SileroVad, VAD_CHUNK, VAD_RATE};

/// Audio stage settings.
#[derive(Debug, Clone, Copy)]
pub struct AudioConfig {
    /// Speech-emotion window length (the model was trained on 2.5 s).
    pub window: Duration,
    /// How often the speech-emotion model runs (window hop).
    pub hop: Duration,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(2500),
            hop: Duration::from_millis(500),
        }
    }
}

/// The speech-emotion result of one window.
#[derive(Debug, Clone)]
pub struct SpeechEmotion {
    /// Stream time at which the window ends.
    pub window_end: Duration,
    /// Class probabilities in the head's label order.
    pub probs: Vec<f32>,
    /// Valence in [-1, 1].
    pub valence: f32,
    /// Arousal in [-1, 1].
    pub arousal: f32,
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
    speech: SpeechEncoder,
    config: AudioConfig,
    chunker: Chunker,
    start: Option<Duration>,
    chunks_done: u64,
    vad_history: VecDeque<f32>,
    /// VAD results (chunk end in 16 kHz samples, probability) not yet emitted.
    waiting: VecDeque<(u64, f32)>,
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

/// Most 44.1 kHz audio kept beyond one window (bounds memory if the 16 kHz branch stalls).
const MAX_LEAD_44: usize = 10 * SER_SAMPLE_RATE as usize;
/// Most VAD results held while waiting for the 44.1 kHz branch.
const MAX_WAITING: usize = 256;

impl AudioStage {
    /// An audio stage for one stream.
    pub fn new(vad: SileroVad, speech: SpeechEncoder, config: AudioConfig) -> Self {
        let hop44 = samples_at(SER_SAMPLE_RATE, config.hop).max(1);
        Self {
            vad,
            speech,
            config,
            chunker: Chunker::default(),
            start: None,
            chunks_done: 0,
            vad_history: VecDeque::new(),
            waiting: VecDeque::new(),
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

    fn window_chunks(&self) -> usize {
        (samples_at(VAD_RATE, self.config.window) as usize / VAD_CHUNK).max(1)
    }

    fn time_of_44(&self, samples: u64) -> Duration {
        self.start.unwrap_or_default()
            + Duration::from_secs_f64(samples as f64 / f64::from(SER_SAMPLE_RATE))
    }

    /// Feeds one block; returns the estimates that became complete.
    pub fn push(&mut self, block: &AudioBlock) -> Result<Vec<VoiceEstimate>, EncodeError> {
        if self.start.is_none() {
            self.start = Some(block.pts.unwrap_or_default());
        }
        match block.rate {
            SER_SAMPLE_RATE => {
                self.buf44.extend(block.samples.iter().copied());
                self.samples44 += block.samples.len() as u64;
                let keep = self.window44() as usize + MAX_LEAD_44;
                while self.buf44.len() > keep {
                    self.buf44.pop_front();
                    self.buf44_start += 1;
                }
            }
            VAD_RATE => {
                self.chunker.push(&block.samples);
                while let Some(chunk) = self.chunker.next_chunk() {
                    let prob = self.vad.process(&chunk)?;
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
    fn release(&mut self, ended: bool) -> Result<Vec<VoiceEstimate>, EncodeError> {
        let mut out = Vec::new();
        while let Some(&(end16, prob)) = self.waiting.front() {
            let end44 = end16 * u64::from(SER_SAMPLE_RATE) / u64::from(VAD_RATE);
            if !ended && self.samples44 < end44 && self.waiting.len() < MAX_WAITING {
                break;
            }
            self.waiting.pop_front();
            let hop44 = samples_at(SER_SAMPLE_RATE, self.config.hop).max(1);
            while self.next_hop44 <= end44.min(self.samples44) {
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

    /// Runs the speech-emotion model on the window ending at 44.1 kHz sample `end`.
    fn run_speech(&mut self, end: u64) -> Result<(), EncodeError> {
        let from = end.saturating_sub(self.window44()).max(self.buf44_start);
        let to = end.min(self.samples44);
        self.window_buf.clear();
        if to > from {
            let (a, b) = (
                (from - self.buf44_start) as usize,
                (to - self.buf44_start) as usize,
            );
            self.window_buf.extend(self.buf44.range(a..b).copied());
        }
        let probs = self.speech.classify(&self.window_buf)?;
        let (valence, arousal) = self.speech.head().valence_arousal(&probs);
        self.emotion = Some(SpeechEmotion {
            window_end: self.time_of_44(to),
            probs,
            valence,
            arousal,
        });
        self.emotion_updated = true;
        // Samples before the next window's start are no longer needed.
        let keep_from =
            (end + samples_at(SER_SAMPLE_RATE, self.config.hop)).saturating_sub(self.window44());
        while self.buf44_start < keep_from && !self.buf44.is_empty() {
            self.buf44.pop_front();
            self.buf44_start += 1;
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
    pub fn finish(&mut self) -> Result<Vec<VoiceEstimate>, EncodeError> {
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

    /// Runs until the audio channel closes or the output is gone.
    pub fn run(
        mut self,
        rx: Receiver<AudioBlock>,
        tx: Sender<VoiceEstimate>,
    ) -> Result<(), EncodeError> {
        for block in rx {
            for estimate in self.push(&block)? {
                if tx.send(estimate).is_err() {
                    return Ok(());
                }
            }
        }
        for estimate in self.finish()? {
            if tx.send(estimate).is_err() {
                break;
            }
        }
        Ok(())
    }
}
