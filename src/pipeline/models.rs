//! Loading every model the pipeline runs, once, so a run can move them into its stage threads
//! and get them back (reset) for the next source.

use crate::audio::speech::SpeechEncoder;
use crate::audio::vad::SileroVad;
use crate::audio::{AudioStage, ProsodyHeads};
use crate::encode::ClassHead;
use crate::encode::expression::ExpressionEncoder;
use crate::face::{FaceStage, load_detector};
use crate::manifest::{Manifest, ManifestError};
use crate::runtime::{Provider, Runtime};

use super::{PipelineError, RunOptions};

/// The loaded models, ready to be moved into stage threads.
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
    /// Loads and checks every model the manifest lists for the pipeline.
    /// The fusion parameters are checked first, so a mistake there fails before anything
    /// loads.
    pub fn load(opts: &RunOptions) -> Result<Self, PipelineError> {
        opts.fusion.params.validate()?;
        let manifest = Manifest::load(&opts.manifest, &opts.model_dir)?;
        let runtime = Runtime::new(opts.device)?;
        let detector = load_detector(&runtime, &manifest, opts.face.detector)?;
        let expression = ExpressionEncoder::from_manifest(
            &runtime,
            &manifest,
            opts.expression.clone(),
            opts.face.crop_margin,
        )?;
        let vad = SileroVad::new(&runtime, &manifest.verified_path("vad")?)?;
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
                    Some(path) => Some(SpeechEncoder::new(
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
            face: FaceStage::new(detector, opts.face),
            expression,
            audio: AudioStage::new(vad, speech, heads, opts.audio),
        })
    }
}
