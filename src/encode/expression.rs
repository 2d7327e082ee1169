//! Face expression encoder: a batch of face crops → class probabilities → (valence, arousal)
//! per face. Runs on its own thread between the face stage and fusion.

use std::path::Path;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use ort::session::Session;
use ort::value::TensorRef;

use super::runtime::{Runtime, RuntimeError};
use super::{ClassHead, ImageInputSpec, check_class_output};
use crate::face::crop::extract_crop;
use crate::face::detection::Detection;
use crate::face::{FaceBatch, FrameMeta, frame_mat};
use crate::metrics::Stage;

/// Errors of the expression encoder.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("expression model inference failed: {0}")]
    Inference(#[from] ort::Error),
    #[error("cutting a face crop failed: {0}")]
    Crop(#[from] opencv::Error),
    #[error("model {path} does not fit its role: {message}")]
    WrongModel {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("frame {index} at {t_s:.3} s of stream time: {source}")]
    AtFrame {
        index: u64,
        t_s: f64,
        #[source]
        source: Box<EncodeError>,
    },
}

/// A face with its expression estimate.
#[derive(Debug, Clone)]
pub struct FaceEstimate {
    /// Stable track id.
    pub id: u64,
    /// How long the track has existed.
    pub track_age: Duration,
    /// Box, score and landmarks.
    pub detection: Detection,
    /// Class probabilities in the head's label order.
    pub probs: Vec<f32>,
    /// Valence in [-1, 1].
    pub valence: f32,
    /// Arousal in [-1, 1].
    pub arousal: f32,
    /// Sharpness of the crop: variance of its Laplacian (gray 0..255); low means blurred.
    pub blur: f32,
}

/// A frame with the expression estimate of each of its faces.
pub struct FaceFrame {
    /// The frame.
    pub meta: FrameMeta,
    /// Faces, best detector score first.
    pub faces: Vec<FaceEstimate>,
}

/// Variance of the Laplacian of an 8-bit crop (converted to gray when in colour): a standard
/// sharpness measure, low for blurred or featureless crops.
pub fn laplacian_variance(crop: &opencv::core::Mat) -> opencv::Result<f32> {
    use opencv::core::{Mat, Scalar};
    use opencv::imgproc;
    use opencv::prelude::*;
    let mut gray = Mat::default();
    let source = if crop.channels() == 1 {
        crop
    } else {
        imgproc::cvt_color(crop, &mut gray, imgproc::COLOR_RGB2GRAY, 0)?;
        &gray
    };
    let mut laplacian = Mat::default();
    imgproc::laplacian(
        source,
        &mut laplacian,
        opencv::core::CV_32F,
        1,
        1.0,
        0.0,
        opencv::core::BORDER_DEFAULT,
    )?;
    let (mut mean, mut std) = (Scalar::default(), Scalar::default());
    opencv::core::mean_std_dev(&laplacian, &mut mean, &mut std, &opencv::core::no_array())?;
    Ok((std[0] * std[0]) as f32)
}

/// The expression model and its head.
pub struct ExpressionEncoder {
    session: Session,
    spec: ImageInputSpec,
    head: ClassHead,
    input_name: String,
    crops: Vec<f32>,
}

impl ExpressionEncoder {
    /// Loads the model at `path`; checks its input and output agree with the manifest.
    pub fn new(
        runtime: &Runtime,
        path: &Path,
        spec: ImageInputSpec,
        head: ClassHead,
    ) -> Result<Self, EncodeError> {
        let session = runtime.session(path)?;
        let wrong = |message: String| EncodeError::WrongModel {
            path: path.to_owned(),
            message,
        };
        let input = session
            .inputs()
            .first()
            .ok_or_else(|| wrong("no input".into()))?;
        let input_name = input.name().to_owned();
        let dims: Vec<i64> = input
            .dtype()
            .tensor_shape()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let w = i64::from(spec.width);
        let c = i64::from(spec.channels);
        let expected = if spec.channels_last {
            [w, w, c]
        } else {
            [c, w, w]
        };
        if dims.len() != 4
            || dims[1..]
                .iter()
                .zip(expected)
                .any(|(d, e)| *d > 0 && *d != e)
        {
            return Err(wrong(format!(
                "input shape {dims:?} does not match the manifest's {expected:?} (plus batch)"
            )));
        }
        check_class_output(&session, &head, path)?;
        Ok(Self {
            session,
            spec,
            head,
            input_name,
            crops: Vec::new(),
        })
    }

    /// The class head (labels and their valence/arousal).
    pub fn head(&self) -> &ClassHead {
        &self.head
    }

    /// Runs the model on `n` crops laid out back to back in `crops`; one probability row each.
    pub fn classify(&mut self, crops: &[f32], n: usize) -> Result<Vec<Vec<f32>>, EncodeError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let w = self.spec.width as usize;
        let c = self.spec.channels as usize;
        let shape = if self.spec.channels_last {
            [n, w, w, c]
        } else {
            [n, c, w, w]
        };
        let tensor = TensorRef::from_array_view((shape, crops))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])?;
        let (_, raw) = outputs[0].try_extract_tensor::<f32>()?;
        let k = raw.len() / n;
        Ok(raw
            .chunks_exact(k.max(1))
            .take(n)
            .map(|row| self.head.probabilities(row))
            .collect())
    }

    /// Cuts the crop of every face of a batch, releases the frame, and encodes the crops.
    pub fn process(&mut self, batch: FaceBatch) -> Result<FaceFrame, EncodeError> {
        let mut meta = batch.meta;
        meta.stamps.start(Stage::Encode);
        self.crops.clear();
        let mut blur = Vec::with_capacity(batch.faces.len());
        {
            let mat = frame_mat(&batch.frame)?;
            for face in &batch.faces {
                let crop = extract_crop(&mat, &face.crop, self.spec.width, self.spec.crop_color())?;
                self.spec.append_normalized(&crop, &mut self.crops)?;
                blur.push(laplacian_variance(&crop)?);
            }
        }
        drop(batch.frame);
        let crops = std::mem::take(&mut self.crops);
        let probs = self.classify(&crops, batch.faces.len());
        self.crops = crops;
        let probs = probs?;
        let faces = batch
            .faces
            .into_iter()
            .zip(probs)
            .zip(blur)
            .map(|((face, probs), blur)| {
                let (valence, arousal) = self.head.valence_arousal(&probs);
                FaceEstimate {
                    id: face.id,
                    track_age: face.track_age,
                    detection: face.detection,
                    probs,
                    valence,
                    arousal,
                    blur,
                }
            })
            .collect();
        meta.stamps.end(Stage::Encode);
        Ok(FaceFrame { meta, faces })
    }

    /// Runs until the input channel closes or the output is gone; hands the encoder back.
    pub fn run(
        mut self,
        rx: Receiver<FaceBatch>,
        tx: Sender<FaceFrame>,
    ) -> Result<Self, EncodeError> {
        for batch in rx {
            let (index, pts) = (batch.meta.index, batch.meta.pts);
            let frame = self.process(batch).map_err(|e| EncodeError::AtFrame {
                index,
                t_s: pts.as_secs_f64(),
                source: Box::new(e),
            })?;
            if tx.send(frame).is_err() {
                break;
            }
        }
        Ok(self)
    }
}
