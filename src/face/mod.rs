//! Face stage: detect faces in each decoded frame (YuNet through ONNX Runtime, Haar fallback),
//! track them so each keeps an id, and cut an aligned crop per face shaped for the expression
//! encoder. Runs on its own thread between the video channel and the encoder channel.

pub mod crop;
pub mod detection;
pub mod detector;
pub mod tracker;

use std::path::PathBuf;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use opencv::core::{Mat, Vec3b};

use crate::capture::VideoFrame;
use crate::encode::ImageInputSpec;
use crate::encode::runtime::{Runtime, RuntimeError};
use crate::manifest::{Manifest, ManifestError};
use crate::metrics::{Stage, Stamps};
use crop::{CropGeometry, crop_geometry, extract_crop};
use detection::Detection;
use detector::{DetectorConfig, FaceDetector, Haar, YuNet};
use tracker::Tracker;

/// Errors of the face stage.
#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("face detector inference failed: {0}")]
    Inference(#[from] ort::Error),
    #[error("image operation failed: {0}")]
    OpenCv(#[from] opencv::Error),
    #[error("model {path} does not fit its role: {message}")]
    WrongModel { path: PathBuf, message: String },
    #[error("frame {index} has {len} bytes, expected {expected} for {width}x{height} RGB")]
    BadFrame {
        index: u64,
        len: usize,
        expected: usize,
        width: u32,
        height: u32,
    },
}

/// Face stage settings.
#[derive(Debug, Clone, Copy)]
pub struct FaceConfig {
    /// Detector settings.
    pub detector: DetectorConfig,
    /// Crop side = max(w, h) * (1 + margin).
    pub crop_margin: f32,
    /// Rotate crops so the eyes are level.
    pub align: bool,
    /// IoU needed to continue a track.
    pub track_iou: f32,
    /// How long a lost track is kept.
    pub track_max_gap: Duration,
}

impl Default for FaceConfig {
    fn default() -> Self {
        Self {
            detector: DetectorConfig::default(),
            crop_margin: 0.2,
            align: true,
            track_iou: 0.3,
            track_max_gap: Duration::from_millis(500),
        }
    }
}

/// What the frame was, carried through the stages without its pixels.
#[derive(Debug, Clone, Copy)]
pub struct FrameMeta {
    /// Frame number in decode order.
    pub index: u64,
    /// Stream time of the frame.
    pub pts: Duration,
    /// Display duration of the frame.
    pub duration: Duration,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Decode instant and stage stamps.
    pub stamps: Stamps,
}

/// One face found in a frame, with its track.
#[derive(Debug, Clone, Copy)]
pub struct TrackedFace {
    /// Stable track id.
    pub id: u64,
    /// How long the track has existed.
    pub track_age: Duration,
    /// The detection (box, score, landmarks) in frame pixels.
    pub detection: Detection,
    /// Where the crop was cut.
    pub crop: CropGeometry,
}

/// A frame's faces and their encoder-ready crops.
pub struct FaceBatch {
    /// The frame.
    pub meta: FrameMeta,
    /// Faces, best detector score first.
    pub faces: Vec<TrackedFace>,
    /// Crops as one batch tensor (faces x the encoder's input), already normalised.
    pub crops: Vec<f32>,
}

/// Picks the detector the manifest offers: YuNet (dynamic, else static), else the Haar
/// cascade with a warning.
pub fn load_detector(
    runtime: &Runtime,
    manifest: &Manifest,
    config: DetectorConfig,
) -> Result<FaceDetector, FaceError> {
    let mut first_error = None;
    for role in ["face_detector", "face_detector_static"] {
        let Ok(entry) = manifest.entry(role) else {
            continue;
        };
        match manifest.verified_path(role) {
            Ok(path) => {
                let yunet = YuNet::new(
                    runtime,
                    &path,
                    entry.head.strides.clone(),
                    entry.input.size,
                    config,
                )?;
                return Ok(FaceDetector::YuNet(Box::new(yunet)));
            }
            Err(e) => {
                tracing::warn!("{e}");
                first_error.get_or_insert(e);
            }
        }
    }
    match manifest.verified_path("face_detector_fallback") {
        Ok(path) => {
            tracing::warn!(
                "no usable YuNet model: falling back to the Haar cascade (no landmarks, weaker)"
            );
            Ok(FaceDetector::Haar(Box::new(Haar::new(&path, config)?)))
        }
        Err(e) => Err(first_error.unwrap_or(e).into()),
    }
}

/// The face stage's per-frame work: detection, tracking and crops.
pub struct FaceStage {
    detector: FaceDetector,
    tracker: Tracker,
    config: FaceConfig,
    spec: ImageInputSpec,
}

impl FaceStage {
    /// A face stage with `detector`, producing crops as `spec` describes.
    pub fn new(detector: FaceDetector, config: FaceConfig, spec: ImageInputSpec) -> Self {
        Self {
            detector,
            tracker: Tracker::new(config.track_iou, config.track_max_gap),
            config,
            spec,
        }
    }

    /// Name of the detector in use.
    pub fn detector_name(&self) -> &'static str {
        self.detector.name()
    }

    /// Detects, tracks and crops the faces of one frame.
    pub fn process(&mut self, frame: &VideoFrame) -> Result<FaceBatch, FaceError> {
        let mut stamps = frame.stamps;
        stamps.start(Stage::Detect);
        let rgb = frame.rgb();
        let expected = frame.width as usize * frame.height as usize * 3;
        if rgb.len() != expected || expected == 0 {
            return Err(FaceError::BadFrame {
                index: frame.index,
                len: rgb.len(),
                expected,
                width: frame.width,
                height: frame.height,
            });
        }
        let mat =
            Mat::new_rows_cols_with_bytes::<Vec3b>(frame.height as i32, frame.width as i32, rgb)?;
        let detections = self.detector.detect(&mat)?;
        let tracks = self.tracker.update(frame.pts, &detections);
        let mut faces = Vec::with_capacity(detections.len());
        let mut crops = Vec::with_capacity(detections.len() * self.spec.len());
        for (detection, track) in detections.into_iter().zip(tracks) {
            let geometry = crop_geometry(
                &detection,
                self.config.crop_margin,
                self.config.align,
                frame.width,
                frame.height,
            );
            let crop = extract_crop(&mat, &geometry, self.spec.width, self.spec.crop_color())?;
            self.spec.append_normalized(&crop, &mut crops)?;
            faces.push(TrackedFace {
                id: track.id,
                track_age: track.age,
                detection,
                crop: geometry,
            });
        }
        stamps.end(Stage::Detect);
        Ok(FaceBatch {
            meta: FrameMeta {
                index: frame.index,
                pts: frame.pts,
                duration: frame.duration,
                width: frame.width,
                height: frame.height,
                stamps,
            },
            faces,
            crops,
        })
    }

    /// Runs until the input channel closes or the output is gone; frames are released as soon
    /// as their crops are cut.
    pub fn run(mut self, rx: Receiver<VideoFrame>, tx: Sender<FaceBatch>) -> Result<(), FaceError> {
        for frame in rx {
            let batch = self.process(&frame)?;
            drop(frame);
            if tx.send(batch).is_err() {
                break;
            }
        }
        Ok(())
    }
}
