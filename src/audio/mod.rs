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

/// Per-stream state of the audio stage.
pub struct AudioStage {
    vad: SileroVad,
    speech: SpeechEncoder,
    config: AudioConfig,
    chunker: Chunker,
    start16: Option<Duration>,
    chunks_done: u64,
    vad_history: VecDeque<f32>,
    window44: VecDeque<f32>,
    samples44: u64,
    next_hop44: u64,
    last_run44: u64,
    emotion: Option<SpeechEmotion>,
    emotion_updated: bool,
    window_buf: Vec<f32>,
}

fn samples_at(rate: u32, d: Duration) -> u64 {
    (d.as_secs_f64() * f64::from(rate)).round() as u64
}

impl AudioStage {
    /// An audio stage for one stream.
    pub fn new(vad: SileroVad, speech: SpeechEncoder, config: AudioConfig) -> Self {
        let hop44 = samples_at(SER_SAMPLE_RATE, config.hop).max(1);
        let window_chunks = (samples_at(VAD_RATE, config.window) as usize / VAD_CHUNK).max(1);
        Self {
            vad,
            speech,
            config,
            chunker: Chunker::default(),
            start16: None,
            chunks_done: 0,
            vad_history: VecDeque::with_capacity(window_chunks),
            window44: VecDeque::with_capacity(SER_WINDOW_SAMPLES),
            samples44: 0,
            next_hop44: hop44,
            last_run44: 0,
            emotion: None,
            emotion_updated: false,
            window_buf: Vec::with_capacity(SER_WINDOW_SAMPLES),
        }
    }

    fn window_chunks(&self) -> usize {
        (samples_at(VAD_RATE, self.config.window) as usize / VAD_CHUNK).max(1)
    }

    /// Feeds one block; returns the estimates of the VAD chunks it completed.
    pub fn push(&mut self, block: &AudioBlock) -> Result<Vec<VoiceEstimate>, EncodeError> {
        match block.rate {
            SER_SAMPLE_RATE => {
                self.push_speech(&block.samples)?;
                Ok(Vec::new())
            }
            VAD_RATE => {
                if self.start16.is_none() {
                    self.start16 = Some(block.pts.unwrap_or_default());
                }
                self.chunker.push(&block.samples);
                self.drain_chunks()
            }
            _ => Ok(Vec::new()),
        }
    }

    fn push_speech(&mut self, samples: &[f32]) -> Result<(), EncodeError> {
        let hop44 = samples_at(SER_SAMPLE_RATE, self.config.hop).max(1);
        for chunk in samples.chunks(4096) {
            for &s in chunk {
                if self.window44.len() == SER_WINDOW_SAMPLES {
                    self.window44.pop_front();
                }
                self.window44.push_back(s);
            }
            self.samples44 += chunk.len() as u64;
            if self.samples44 >= self.next_hop44 {
                self.run_speech()?;
                while self.next_hop44 <= self.samples44 {
                    self.next_hop44 += hop44;
                }
            }
        }
        Ok(())
    }

    fn run_speech(&mut self) -> Result<(), EncodeError> {
        self.window_buf.clear();
        self.window_buf.extend(self.window44.iter().copied());
        let probs = self.speech.classify(&self.window_buf)?;
        let (valence, arousal) = self.speech.head().valence_arousal(&probs);
        let start = self.start16.unwrap_or_default();
        self.emotion = Some(SpeechEmotion {
            window_end: start
                + Duration::from_secs_f64(self.samples44 as f64 / f64::from(SER_SAMPLE_RATE)),
            probs,
            valence,
            arousal,
        });
        self.emotion_updated = true;
        self.last_run44 = self.samples44;
        Ok(())
    }

    fn drain_chunks(&mut self) -> Result<Vec<VoiceEstimate>, EncodeError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.chunker.next_chunk() {
            let prob = self.vad.process(&chunk)?;
            self.chunks_done += 1;
            if self.vad_history.len() == self.window_chunks() {
                self.vad_history.pop_front();
            }
            self.vad_history.push_back(prob);
            out.push(self.estimate(prob));
        }
        Ok(out)
    }

    fn estimate(&mut self, speech_prob: f32) -> VoiceEstimate {
        let start = self.start16.unwrap_or_default();
        let t_end = start
            + Duration::from_secs_f64(
                (self.chunks_done * VAD_CHUNK as u64) as f64 / f64::from(VAD_RATE),
            );
        let n = self.vad_history.len().max(1) as f32;
        let updated = std::mem::take(&mut self.emotion_updated);
        VoiceEstimate {
            t_end,
            speech_prob,
            speech_fraction: self.vad_history.iter().sum::<f32>() / n,
            emotion: self.emotion.clone(),
            emotion_updated: updated,
        }
    }

    /// End of stream: analyses the tail when more than half a hop of speech audio is new, and
    /// returns a last estimate carrying it.
    pub fn finish(&mut self) -> Result<Option<VoiceEstimate>, EncodeError> {
        let hop44 = samples_at(SER_SAMPLE_RATE, self.config.hop);
        if self.samples44 > self.last_run44 && self.samples44 - self.last_run44 > hop44 / 2 {
            self.run_speech()?;
        }
        if !self.emotion_updated {
            return Ok(None);
        }
        let prob = self.vad_history.back().copied().unwrap_or(0.0);
        Ok(Some(self.estimate(prob)))
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
        if let Some(last) = self.finish()? {
            tx.send(last).ok();
        }
        Ok(())
    }
}
