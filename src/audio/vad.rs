//! Silero VAD v6: speech probability per 32 ms chunk of 16 kHz audio. Each call gets 512 new
//! samples with the previous call's last 64 samples prepended (without this context the model
//! outputs ~0 on speech), and the recurrent state is fed back.

use std::path::Path;

use ort::value::TensorRef;

use crate::runtime::ModelError as EncodeError;
use crate::runtime::{Runtime, SharedSession};

/// Sample rate the VAD runs at.
pub const VAD_RATE: u32 = 16_000;
/// New samples per call (32 ms).
pub const VAD_CHUNK: usize = 512;
/// Context samples prepended to each call.
pub const VAD_CONTEXT: usize = 64;
const STATE_LEN: usize = 2 * 128;

/// Splits a stream of sample blocks of any size into VAD chunks, keeping the remainder.
#[derive(Debug, Default, Clone)]
pub struct Chunker {
    pending: Vec<f32>,
}

impl Chunker {
    /// Appends samples; call [`Chunker::next_chunk`] until it returns None.
    pub fn push(&mut self, samples: &[f32]) {
        self.pending.extend_from_slice(samples);
    }

    /// The next complete chunk, if any.
    pub fn next_chunk(&mut self) -> Option<[f32; VAD_CHUNK]> {
        if self.pending.len() < VAD_CHUNK {
            return None;
        }
        let mut chunk = [0.0; VAD_CHUNK];
        chunk.copy_from_slice(&self.pending[..VAD_CHUNK]);
        self.pending.drain(..VAD_CHUNK);
        Some(chunk)
    }

    /// Samples waiting for a full chunk.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// Builds one VAD input: `context` followed by `chunk`; returns the new context (the last
/// 64 samples of this input).
pub fn vad_input(
    context: &[f32; VAD_CONTEXT],
    chunk: &[f32; VAD_CHUNK],
    input: &mut [f32; VAD_CONTEXT + VAD_CHUNK],
) -> [f32; VAD_CONTEXT] {
    input[..VAD_CONTEXT].copy_from_slice(context);
    input[VAD_CONTEXT..].copy_from_slice(chunk);
    let mut next = [0.0; VAD_CONTEXT];
    next.copy_from_slice(&input[VAD_CONTEXT + VAD_CHUNK - VAD_CONTEXT..]);
    next
}

/// A streaming Silero VAD for one audio stream (its state and context are its own; the
/// session can be shared with other streams).
pub struct SileroVad {
    session: SharedSession,
    state: [f32; STATE_LEN],
    context: [f32; VAD_CONTEXT],
    input: [f32; VAD_CONTEXT + VAD_CHUNK],
}

impl SileroVad {
    /// Loads the model at `path` for this stream alone.
    pub fn new(runtime: &Runtime, path: &Path) -> Result<Self, EncodeError> {
        Ok(Self::with_session(Self::load(runtime, path)?))
    }

    /// Loads and checks the model at `path`, for [`SileroVad::with_session`] (any number of
    /// streams).
    pub fn load(runtime: &Runtime, path: &Path) -> Result<SharedSession, EncodeError> {
        let session = runtime.session(path)?;
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        if !["input", "state", "sr"].iter().all(|n| names.contains(n)) {
            return Err(EncodeError::WrongModel {
                path: path.to_owned(),
                message: format!(
                    "inputs {names:?}, expected input, state and sr (Silero VAD v5/v6)"
                ),
            });
        }
        Ok(SharedSession::new(session))
    }

    /// A VAD for one more stream on a loaded (shared) model.
    pub fn with_session(session: SharedSession) -> Self {
        Self {
            session,
            state: [0.0; STATE_LEN],
            context: [0.0; VAD_CONTEXT],
            input: [0.0; VAD_CONTEXT + VAD_CHUNK],
        }
    }

    /// Forgets the stream (state and context back to zeros).
    pub fn reset(&mut self) {
        self.state = [0.0; STATE_LEN];
        self.context = [0.0; VAD_CONTEXT];
    }

    /// Speech probability of the next 512-sample chunk.
    pub fn process(&mut self, chunk: &[f32; VAD_CHUNK]) -> Result<f32, EncodeError> {
        let next_context = vad_input(&self.context, chunk, &mut self.input);
        let input =
            TensorRef::from_array_view(([1usize, VAD_CONTEXT + VAD_CHUNK], &self.input[..]))?;
        let state = TensorRef::from_array_view(([2usize, 1, 128], &self.state[..]))?;
        let sr = [i64::from(VAD_RATE)];
        let sr = TensorRef::from_array_view(((), &sr[..]))?;
        let mut session = self.session.lock();
        let outputs = session.run(ort::inputs!["input" => input, "state" => state, "sr" => sr])?;
        let prob = outputs["output"]
            .try_extract_tensor::<f32>()?
            .1
            .first()
            .copied()
            .unwrap_or(0.0);
        let (_, new_state) = outputs["stateN"].try_extract_tensor::<f32>()?;
        if new_state.len() == STATE_LEN {
            self.state.copy_from_slice(new_state);
        }
        self.context = next_context;
        Ok(prob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunker_splits_any_block_sizes_and_keeps_the_rest() {
        let mut c = Chunker::default();
        let samples: Vec<f32> = (0..1300).map(|i| i as f32).collect();
        c.push(&samples[..100]);
        assert!(c.next_chunk().is_none());
        c.push(&samples[100..1300]);
        let a = c.next_chunk().unwrap();
        let b = c.next_chunk().unwrap();
        assert!(c.next_chunk().is_none());
        assert_eq!((a[0], a[511], b[0], b[511]), (0.0, 511.0, 512.0, 1023.0));
        assert_eq!(c.pending(), 1300 - 1024);
    }

    #[test]
    fn each_input_starts_with_the_last_64_samples_of_the_previous_one() {
        let mut ctx = [0.0; VAD_CONTEXT];
        let mut input = [0.0; VAD_CONTEXT + VAD_CHUNK];
        let first: [f32; VAD_CHUNK] = std::array::from_fn(|i| i as f32);
        let second: [f32; VAD_CHUNK] = std::array::from_fn(|i| 1000.0 + i as f32);
        ctx = vad_input(&ctx, &first, &mut input);
        assert_eq!(input[0], 0.0);
        assert_eq!(input[VAD_CONTEXT], 0.0);
        assert_eq!(ctx[0], 448.0);
        vad_input(&ctx, &second, &mut input);
        assert_eq!(&input[..3], &[448.0, 449.0, 450.0]);
        assert_eq!(input[VAD_CONTEXT - 1], 511.0);
        assert_eq!(input[VAD_CONTEXT], 1000.0);
    }
}
