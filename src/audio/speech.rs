//! Speech-emotion encoder: a window of 44.1 kHz speech → librosa-identical MFCC features →
//! class probabilities → (valence, arousal). The bundled model is a weak placeholder; the
//! fusion gates decide how much it counts.

use std::path::Path;

use ort::value::TensorRef;

use super::speech_features::{MfccExtractor, SER_FRAMES};
use crate::runtime::head::{ClassHead, check_class_output};
use crate::runtime::{ModelError as EncodeError, Runtime, SharedSession};

/// The speech-emotion model loaded once, with its head; shared by every stream's
/// [`SpeechEncoder`]. Cheap to clone.
#[derive(Clone)]
pub struct SpeechModel {
    session: SharedSession,
    head: ClassHead,
    input_name: String,
}

/// The speech-emotion model as one stream uses it: the shared model, its own feature
/// extractor and buffers.
pub struct SpeechEncoder {
    model: SpeechModel,
    extractor: MfccExtractor,
    features: [f32; SER_FRAMES],
}

impl SpeechModel {
    /// Loads the model at `path`; checks its input is [N, 216, 1] and its output has one value
    /// per label.
    pub fn load(runtime: &Runtime, path: &Path, head: ClassHead) -> Result<Self, EncodeError> {
        let session = runtime.session(path)?;
        let wrong = |message: String| EncodeError::WrongModel {
            path: path.to_owned(),
            message,
        };
        let input = session
            .inputs()
            .first()
            .ok_or_else(|| wrong("no input".into()))?;
        let dims: Vec<i64> = input
            .dtype()
            .tensor_shape()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        if dims.len() != 3 || (dims[1] > 0 && dims[1] != SER_FRAMES as i64) {
            return Err(wrong(format!("input shape {dims:?}, expected [N, 216, 1]")));
        }
        let input_name = input.name().to_owned();
        check_class_output(&session, &head, path)?;
        Ok(Self {
            session: SharedSession::new(session),
            head,
            input_name,
        })
    }
}

impl SpeechEncoder {
    /// Loads the model at `path` for this stream alone (see [`SpeechModel::load`]).
    pub fn new(runtime: &Runtime, path: &Path, head: ClassHead) -> Result<Self, EncodeError> {
        Ok(Self::with_model(SpeechModel::load(runtime, path, head)?))
    }

    /// An encoder for one more stream on a loaded (shared) model.
    pub fn with_model(model: SpeechModel) -> Self {
        Self {
            model,
            extractor: MfccExtractor::new(),
            features: [0.0; SER_FRAMES],
        }
    }

    /// The class head.
    pub fn head(&self) -> &ClassHead {
        &self.model.head
    }

    /// Probabilities for the last ≤ 2.5 s of `window` (44.1 kHz mono).
    pub fn classify(&mut self, window: &[f32]) -> Result<Vec<f32>, EncodeError> {
        self.extractor.ser_features(window, &mut self.features);
        let tensor = TensorRef::from_array_view(([1usize, SER_FRAMES, 1], &self.features[..]))?;
        let mut session = self.model.session.lock();
        let outputs = session.run(ort::inputs![self.model.input_name.as_str() => tensor])?;
        let (_, raw) = outputs[0].try_extract_tensor::<f32>()?;
        Ok(self.model.head.probabilities(raw))
    }
}
