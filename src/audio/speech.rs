//! Speech-emotion encoder: a window of 44.1 kHz speech → librosa-identical MFCC features →
//! class probabilities → (valence, arousal). The bundled model is a weak placeholder; the
//! fusion gates decide how much it counts.

use std::path::Path;

use ort::session::Session;
use ort::value::TensorRef;

use super::speech_features::{MfccExtractor, SER_FRAMES};
use crate::runtime::head::{ClassHead, check_class_output};
use crate::runtime::{ModelError as EncodeError, Runtime};

/// The speech-emotion model, its feature extractor and its head.
pub struct SpeechEncoder {
    session: Session,
    head: ClassHead,
    extractor: MfccExtractor,
    features: [f32; SER_FRAMES],
    input_name: String,
}

impl SpeechEncoder {
    /// Loads the model at `path`; checks its input is [N, 216, 1] and its output has one value
    /// per label.
    pub fn new(runtime: &Runtime, path: &Path, head: ClassHead) -> Result<Self, EncodeError> {
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
            session,
            head,
            extractor: MfccExtractor::new(),
            features: [0.0; SER_FRAMES],
            input_name,
        })
    }

    /// The class head.
    pub fn head(&self) -> &ClassHead {
        &self.head
    }

    /// Probabilities for the last ≤ 2.5 s of `window` (44.1 kHz mono).
    pub fn classify(&mut self, window: &[f32]) -> Result<Vec<f32>, EncodeError> {
        self.extractor.ser_features(window, &mut self.features);
        let tensor = TensorRef::from_array_view(([1usize, SER_FRAMES, 1], &self.features[..]))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])?;
        let (_, raw) = outputs[0].try_extract_tensor::<f32>()?;
        Ok(self.head.probabilities(raw))
    }
}
