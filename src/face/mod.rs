//! Face stage: detect faces in each decoded frame (YuNet through ONNX Runtime, Haar fallback),
//! track them so each keeps an id, and cut an aligned crop per face shaped for the expression
//! encoder. Runs on its own thread between the video channel and the encoder channel.

pub mod crop;
pub mod detection;
pub mod detector;
pub mod follow;
pub mod schedule;
pub mod tracker;

use std::path::PathBuf;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

pub use crate::capture::FrameMeta;
use crate::capture::VideoFrame;
use crate::manifest::{Manifest, ManifestError};
use crate::metrics::Stage;
use crate::runtime::{Runtime, RuntimeError};
use crate::stage::{self, Emit, Position, StageError};
use crop::{CropGeometry, crop_geometry};
use detection::Detection;
use detector::{DetectorConfig, FaceDetector, SharedDetector};
use follow::{Followed, Follower};
use schedule::{Reason, Schedule};
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
    #[error("face detector: {0}")]
    Batch(#[from] crate::runtime::batch::BatchError),
    #[error("image operation failed: {0}")]
    OpenCv(#[from] opencv::Error),
    #[error("model {path} does not fit its role: {message}")]
    WrongModel { path: PathBuf, message: String },
    #[error(
        "frame {index} has a {len}-byte plane, expected {expected} for {width}x{height} {format:?}"
    )]
    BadFrame {
        index: u64,
        len: usize,
        expected: usize,
        width: u32,
        height: u32,
        format: crate::capture::PixelFormat,
    },
}

/// Face stage settings.
#[derive(Debug, Clone, Copy)]
pub struct FaceConfig {
    /// Detector settings.
    pub detector: DetectorConfig,
    /// Crop side = max(w, h) * (1 + margin). 0: the YuNet box, which frames a face about as
    /// FER2013's crops do (on the testdata face videos 0.0 gave valence sign agreement 78 %
    /// against 65 % at 0.2 and 61 % at 0.3).
    pub crop_margin: f32,
    /// Rotate crops so the eyes are level.
    pub align: bool,
    /// IoU needed to continue a track.
    pub track_iou: f32,
    /// How long a lost track is kept.
    pub track_max_gap: Duration,
    /// Run the detector at least every n-th frame (1 = every frame); frames between reuse the
    /// last detections through the tracker, moved with the face from an interval of 3 on
    /// (`face::follow`). A frame with no face tracked, the frame after a detection that lost or
    /// started a track, a frame where a carried face was lost (interval 3 or more), and a frame
    /// with motion outside the tracked boxes are always searched (see `face::schedule`).
    pub detect_interval: u32,
    /// Share of the picture outside the tracked boxes (on a 64-pixel luma thumbnail) that must
    /// have changed since the last detection to detect at once; 0 turns the check off.
    pub detect_motion: f32,
}

impl Default for FaceConfig {
    fn default() -> Self {
        Self {
            detector: DetectorConfig::default(),
            crop_margin: 0.0,
            align: true,
            track_iou: 0.3,
            track_max_gap: Duration::from_millis(500),
            detect_interval: 2,
            detect_motion: 0.02,
        }
    }
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

/// A frame and the faces found in it, on their way to the encoder (which cuts the crops, so
/// the two threads share the work evenly).
pub struct FaceBatch {
    /// Faces, best detector score first.
    pub faces: Vec<TrackedFace>,
    /// The frame itself, its header (`frame.meta`) stamped by detection (the encoder releases
    /// the pixels once the crops are cut and carries the header on).
    pub frame: VideoFrame,
}

/// Picks the detector the manifest offers: YuNet (dynamic, else static), else the Haar
/// cascade with a warning; one stream's detector on a model of its own.
pub fn load_detector(
    runtime: &Runtime,
    manifest: &Manifest,
    config: DetectorConfig,
) -> Result<FaceDetector, FaceError> {
    load_shared_detector(runtime, manifest)?.detector(config)
}

/// Loads the detector model the manifest offers once, for every stream of the process:
/// YuNet (dynamic, else static), else the Haar cascade with a warning.
pub fn load_shared_detector(
    runtime: &Runtime,
    manifest: &Manifest,
) -> Result<SharedDetector, FaceError> {
    let mut first_error = None;
    for role in ["face_detector", "face_detector_static"] {
        let Ok(entry) = manifest.entry(role) else {
            continue;
        };
        match manifest.verified_path(role) {
            Ok(path) => {
                return SharedDetector::yunet(
                    runtime,
                    &path,
                    entry.head.strides.clone(),
                    entry.input.size,
                );
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
            Ok(SharedDetector::Haar(path))
        }
        Err(e) => Err(first_error.unwrap_or(e).into()),
    }
}

/// The face stage's per-frame work: detection (on the schedule of `face::schedule`) and
/// tracking.
pub struct FaceStage {
    detector: FaceDetector,
    tracker: Tracker,
    config: FaceConfig,
    last: Vec<Detection>,
    schedule: Schedule,
    follower: Follower,
}

impl FaceStage {
    /// A face stage with `detector`.
    pub fn new(detector: FaceDetector, config: FaceConfig) -> Self {
        Self {
            detector,
            tracker: Tracker::new(config.track_iou, config.track_max_gap),
            config,
            last: Vec::new(),
            schedule: Schedule::new(config.detect_interval, config.detect_motion),
            follower: Follower::default(),
        }
    }

    /// Forgets tracks and detections: the next frame starts a new stream. Logs how often the
    /// detector ran on the stream that ended, and why.
    pub fn reset(&mut self) {
        let c = self.schedule.counts;
        if c.frames > 0 {
            tracing::info!(
                frames = c.frames,
                detections = c.runs(),
                interval = c.interval,
                no_faces = c.no_faces,
                unstable = c.unstable,
                motion = c.motion,
                lost = c.lost,
                "face detector schedule"
            );
        }
        self.tracker = Tracker::new(self.config.track_iou, self.config.track_max_gap);
        self.last.clear();
        self.schedule.reset();
        self.follower.clear();
    }

    /// How often the detector ran on the current stream, and why.
    pub fn schedule_counts(&self) -> schedule::Counts {
        self.schedule.counts
    }

    /// Changes the detector's minimum score (e.g. lower for small still images).
    pub fn set_score_threshold(&mut self, threshold: f32) {
        self.detector.set_score_threshold(threshold);
    }

    /// Name of the detector in use.
    pub fn detector_name(&self) -> &'static str {
        self.detector.name()
    }

    /// Detects (or carries the last detections forward) and tracks the faces of one frame.
    pub fn process(&mut self, mut frame: VideoFrame) -> Result<FaceBatch, FaceError> {
        frame.meta.stamps.start(Stage::Detect);
        let FrameMeta {
            index,
            pts,
            width,
            height,
            ..
        } = frame.meta;
        let image = frame.image();
        if let Err((len, expected)) = image.check() {
            return Err(FaceError::BadFrame {
                index,
                len,
                expected,
                width,
                height,
                format: image.format,
            });
        }
        let boxes: Vec<_> = self.last.iter().map(|d| d.bbox).collect();
        let mut detect = self.schedule.decide(&image, &boxes)? != Reason::Skipped;
        let following = self.config.detect_interval > follow::FOLLOW_AFTER;
        if !detect && following && self.follower.follow(&image, &mut self.last)? == Followed::Lost {
            self.schedule.lost();
            detect = true;
        }
        let before = self.last.len();
        if detect {
            self.last = self.detector.detect(&image)?;
            if following {
                self.follower.anchor(&image, &self.last)?;
            }
        } else {
            self.detector.idle();
        }
        let tracks = self.tracker.update(pts, &self.last);
        if detect {
            // Stable: the first faces of an empty scene, or the same number of faces as
            // before, each continuing a track (a lost or an extra face is checked again on the
            // next frame).
            let stable = before == 0
                || (self.last.len() == before && tracks.iter().all(|t| t.age > Duration::ZERO));
            self.schedule.detected(stable);
        }
        let faces = self
            .last
            .iter()
            .zip(tracks)
            .map(|(detection, track)| TrackedFace {
                id: track.id,
                track_age: track.age,
                detection: *detection,
                crop: crop_geometry(
                    detection,
                    self.config.crop_margin,
                    self.config.align,
                    width,
                    height,
                ),
            })
            .collect();
        frame.meta.stamps.end(Stage::Detect);
        Ok(FaceBatch { faces, frame })
    }

    /// Runs until the input channel closes or the output is gone; hands the stage back, reset
    /// for another stream. A failure names the frame it happened on.
    pub fn run(self, rx: Receiver<VideoFrame>, tx: Sender<FaceBatch>) -> Result<Self, StageError> {
        stage::run(self, rx, tx)
    }
}

impl stage::Stage for FaceStage {
    type Input = VideoFrame;
    type Output = FaceBatch;
    type Error = FaceError;
    const NAME: &'static str = "face";

    fn process(
        &mut self,
        frame: VideoFrame,
        out: &mut Emit<'_, FaceBatch>,
    ) -> Result<(), FaceError> {
        out.send(FaceStage::process(self, frame)?);
        Ok(())
    }

    fn reset(&mut self) {
        FaceStage::reset(self);
    }

    fn position(frame: &VideoFrame) -> Option<Position> {
        Some(Position {
            frame: Some(frame.meta.index),
            t: frame.meta.pts,
        })
    }
}
