//! Loading every model the pipeline runs once per process ([`SharedModels`]), and the
//! per-stream state that runs them ([`Models`]): a run moves a `Models` into its stage threads
//! and gets it back (reset) for the next source; several streams each get their own `Models`
//! on the same shared sessions.

use crate::audio::speech::{SpeechEncoder, SpeechModel};
use crate::audio::vad::SileroVad;
use crate::audio::{AudioConfig, AudioStage, ProsodyHeads};
use crate::encode::ClassHead;
use crate::encode::expression::{ExpressionEncoder, ExpressionModels};
use crate::face::detector::SharedDetector;
use crate::face::{FaceConfig, FaceStage, load_shared_detector};
use crate::manifest::{Manifest, ManifestError};
use crate::runtime::{Provider, Runtime, SharedSession};

use super::{PipelineError, RunOptions};

/// One stream's models, ready to be moved into its stage threads: its own tracker, encode
/// schedule, audio state and scratch buffers, with handles on the shared sessions.
pub struct Models {
    /// Execution provider in use.
    pub provider: Provider,
    /// Face detection, tracking and crops.
    pub face: FaceStage,
    /// Expression encoder (the face ensemble).
    pub expression: ExpressionEncoder,
    /// Voice activity and speech emotion.
    pub audio: AudioStage,
}

impl Models {
    /// Loads and checks every model the manifest lists for the pipeline, for one stream.
    /// The fusion parameters are checked first, so a mistake there fails before anything
    /// loads. For several streams, load [`SharedModels`] once and call
    /// [`SharedModels::stream`] per stream.
    pub fn load(opts: &RunOptions) -> Result<Self, PipelineError> {
        SharedModels::load(opts)?.stream()
    }
}

/// Every model of the pipeline, loaded once per process: one ONNX Runtime session per model,
/// shared by every stream (the face models behind cross-stream batchers, the audio models
/// behind a lock), with the settings of the run they were loaded for. Cheap to clone.
#[derive(Clone)]
pub struct SharedModels {
    provider: Provider,
    detector: SharedDetector,
    expression: ExpressionModels,
    vad: SharedSession,
    speech: Option<SpeechModel>,
    heads: ProsodyHeads,
    face: FaceConfig,
    audio: AudioConfig,
}

impl SharedModels {
    /// Loads and checks every model the manifest lists for the pipeline, once. The fusion
    /// parameters are checked first, so a mistake there fails before anything loads.
    pub fn load(opts: &RunOptions) -> Result<Self, PipelineError> {
        opts.fusion.params.validate()?;
        let manifest = Manifest::load(&opts.manifest, &opts.model_dir)?;
        let runtime = Runtime::new(opts.device)?;
        let detector = load_shared_detector(&runtime, &manifest)?;
        let expression = ExpressionModels::load(
            &runtime,
            &manifest,
            opts.expression.clone(),
            opts.face.crop_margin,
        )?;
        let vad = SileroVad::load(&runtime, &manifest.verified_path("vad")?)?;
        let heads_path = manifest
            .prosody_head_path()
            .ok_or_else(|| ManifestError::Invalid {
                role: "prosody_head".into(),
                message: "the manifest names no prosody_head file".into(),
            })?;
        let heads = ProsodyHeads::load(&heads_path).map_err(|message| ManifestError::Invalid {
            role: "prosody_head".into(),
            message,
        })?;
        // The speech-emotion CNN is optional: a weak placeholder the voice can do without, also
        // when its file could not be had (setup could not reach its source).
        let speech = match manifest.entry("speech_emotion") {
            Ok(entry) if opts.audio.cnn_weight > 0.0 => {
                match manifest.optional_path("speech_emotion")? {
                    Some(path) => Some(SpeechModel::load(
                        &runtime,
                        &path,
                        ClassHead::from_entry("speech_emotion", entry)?,
                    )?),
                    None => None,
                }
            }
            _ => None,
        };
        Ok(Self {
            provider: runtime.provider(),
            detector,
            expression,
            vad,
            speech,
            heads,
            face: opts.face,
            audio: opts.audio,
        })
    }

    /// The models of one more stream: cheap (new per-stream state, handles on the shared
    /// sessions); only the Haar fallback loads its classifier per stream.
    pub fn stream(&self) -> Result<Models, PipelineError> {
        Ok(Models {
            provider: self.provider,
            face: FaceStage::new(self.detector.detector(self.face.detector)?, self.face),
            expression: self.expression.encoder(),
            audio: AudioStage::new(
                SileroVad::with_session(self.vad.clone()),
                self.speech.clone().map(SpeechEncoder::with_model),
                self.heads.clone(),
                self.audio,
            ),
        })
    }

    /// Execution provider in use.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Name of the face detector in use.
    pub fn detector_name(&self) -> &'static str {
        self.detector.name()
    }
}
