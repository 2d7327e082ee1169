//! Face expression encoder: an ensemble of face models (declared in the manifest's
//! `[face_ensemble]`) → class probabilities averaged in one common label space, and
//! (valence, arousal) per face: the mean of the members that regress them, else the
//! probability-weighted mean of the common labels' circumplex points. Each member cuts its own
//! crop (size, colour, geometry) from the frame. A schedule runs the models on a track every
//! k-th frame, or sooner when its crop moved or scaled, and reuses the track's last estimate in
//! between. Runs on its own thread between the face stage and fusion.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use opencv::core::Mat;

use super::{ClassHead, ImageInputSpec, MemberHead, MemberOutput};
use crate::capture::FrameImage;
use crate::face::crop::{
    CropColor, CropGeometry, CropShape, extract_box_padded_from, extract_crop_from,
};
use crate::face::detection::Detection;
use crate::face::{FaceBatch, FrameMeta, TrackedFace};
use crate::manifest::Manifest;
use crate::metrics::Stage;
use crate::runtime::batch::BatchPolicy;
use crate::runtime::batched_session::{BatchedSession, SessionBackend, SessionClient, TensorItem};
use crate::runtime::{Runtime, RuntimeError};
use crate::stage::{self, Emit, Position, StageError};

pub use crate::runtime::ModelError as EncodeError;

/// A face with its expression estimate.
#[derive(Debug, Clone)]
pub struct FaceEstimate {
    /// Stable track id.
    pub id: u64,
    /// How long the track has existed.
    pub track_age: Duration,
    /// Box, score and landmarks.
    pub detection: Detection,
    /// Class probabilities in the common label order (the ensemble's mean).
    pub probs: Vec<f32>,
    /// Valence in [-1, 1].
    pub valence: f32,
    /// Arousal in [-1, 1].
    pub arousal: f32,
    /// Sharpness of the crop: variance of its Laplacian (64x64 gray aligned crop, 0..255);
    /// low means blurred.
    pub blur: f32,
    /// The models ran on this face in this frame; false when the schedule reused the track's
    /// last estimate (probs, valence, arousal, blur).
    pub encoded: bool,
    /// Valence and arousal come from members that regress them (`va`, `classes_va` heads),
    /// not from the class table.
    pub regressed: bool,
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

/// Settings of the expression encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpressionConfig {
    /// Ensemble set of the manifest's `[face_ensemble.sets]`; `None`: its `default`.
    pub set: Option<String>,
    /// Run the models on a track every n-th frame (1 = every frame) and reuse its last
    /// estimate in between; a new track is always encoded at once. `None`: 1 for a set of one
    /// model (cheap enough for every frame), [`ENSEMBLE_ENCODE_EVERY`] for an ensemble.
    pub encode_every: Option<u32>,
    /// Encode sooner when the crop's centre moved by more than this share of its side, or its
    /// side changed by more than this share.
    pub reencode_change: f32,
}

impl Default for ExpressionConfig {
    fn default() -> Self {
        Self {
            set: None,
            encode_every: None,
            reencode_change: 0.2,
        }
    }
}

/// Default schedule of a set of several models: every 3rd frame (10 encodes per second per
/// face at 30 fps).
pub const ENSEMBLE_ENCODE_EVERY: u32 = 3;

/// One model of the ensemble, loaded once per process behind a cross-stream batcher.
#[derive(Clone)]
struct SharedMember {
    role: String,
    path: PathBuf,
    session: BatchedSession,
    spec: ImageInputSpec,
    head: MemberHead,
    /// Index into the encoder's crop kinds.
    crop: usize,
    /// Frame of the schedule's period this member runs on (members are spread over it).
    slot: u32,
}

/// One model of the ensemble, as one stream uses it.
struct Member {
    role: String,
    path: PathBuf,
    client: SessionClient,
    spec: ImageInputSpec,
    head: MemberHead,
    /// Shape of one input (without the batch dimension).
    dims: Vec<usize>,
    /// Index into the encoder's crop kinds.
    crop: usize,
    /// Frame of the schedule's period this member runs on (members are spread over it).
    slot: u32,
    /// This frame's inputs, one per face it is due for.
    items: Vec<TensorItem>,
}

/// A crop the encoder cuts per face: members sharing it (and the sharpness measure) use one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CropKind {
    shape: CropShape,
    width: u32,
    color: CropColor,
}

/// What the schedule remembers of a track between encodes.
struct TrackMemory {
    /// Each member's latest reading of the face.
    outputs: Vec<Option<MemberOutput>>,
    /// Frames since every member last ran together (track start or a crop change).
    frame: u32,
    /// The crop when every member last ran together.
    geometry: CropGeometry,
    track_age: Duration,
    estimate: Estimate,
    /// Index of the last frame the track was in.
    seen: u64,
}

/// A track absent from this many frames is forgotten (the tracker keeps lost tracks for
/// 0.5 s; a track that comes back within this is not re-encoded for its gap alone).
const FORGET_AFTER_FRAMES: u64 = 30;

/// The combined reading of a face.
#[derive(Debug, Clone)]
struct Estimate {
    probs: Vec<f32>,
    valence: f32,
    arousal: f32,
    blur: f32,
    regressed: bool,
}

/// The sharpness crop: today's 64x64 gray aligned crop, whatever the members cut.
const BLUR_CROP: CropKind = CropKind {
    shape: CropShape::Aligned,
    width: 64,
    color: CropColor::Gray,
};

/// What every stream's encoder of one loaded ensemble shares besides the members: the crops
/// it cuts, its common head and its settings.
struct EnsembleLayout {
    crops: Vec<CropKind>,
    /// Index in `crops` of the sharpness crop.
    blur_crop: usize,
    common: ClassHead,
    set: String,
    config: ExpressionConfig,
    encode_every: u32,
    crop_margin: f32,
}

/// The expression ensemble loaded once per process (each member's session shared by every
/// stream through a batcher), its crops and common head; [`ExpressionModels::encoder`] makes
/// one stream's encoder. Cheap to clone.
#[derive(Clone)]
pub struct ExpressionModels {
    members: Vec<SharedMember>,
    layout: Arc<EnsembleLayout>,
}

/// The expression ensemble as one stream runs it: its handles on the shared members, its
/// common head and its per-track schedule.
pub struct ExpressionEncoder {
    members: Vec<Member>,
    layout: Arc<EnsembleLayout>,
    tracks: HashMap<u64, TrackMemory>,
    last_index: Option<u64>,
}

fn tensor_dims(dtype: &ort::value::ValueType) -> Vec<i64> {
    dtype
        .tensor_shape()
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default()
}

impl SharedMember {
    fn load(
        runtime: &Runtime,
        manifest: &Manifest,
        role: &str,
        common: &[String],
        policy: &BatchPolicy,
    ) -> Result<Self, EncodeError> {
        let entry = manifest.entry(role)?;
        let spec = ImageInputSpec::from_entry(role, entry)?;
        let head = MemberHead::from_entry(role, entry, common)?;
        let path = manifest.verified_path(role)?;
        let member_err = |message: String| EncodeError::Member {
            role: role.to_owned(),
            path: path.clone(),
            message,
        };
        let session = runtime.session(&path).map_err(|e| match e {
            RuntimeError::Model { message, .. } => {
                member_err(format!("cannot be loaded: {message}"))
            }
            other => EncodeError::Runtime(other),
        })?;
        let wrong = |message: String| member_err(format!("does not fit its role: {message}"));
        let input = session
            .inputs()
            .first()
            .ok_or_else(|| wrong("no input".into()))?;
        let input_name = input.name().to_owned();
        let dims = tensor_dims(input.dtype());
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
                "input shape {dims:?} does not match the manifest's {} {expected:?} (plus batch)",
                if spec.channels_last { "NHWC" } else { "NCHW" }
            )));
        }
        let output = session
            .outputs()
            .first()
            .ok_or_else(|| wrong("no output".into()))?;
        let dims = tensor_dims(output.dtype());
        if let Some(k) = dims.last().copied().filter(|k| *k > 0) {
            head.check_outputs(k as usize)
                .map_err(|m| wrong(format!("output shape {dims:?} {m}")))?;
        }
        let dims = spec.dims();
        let session = SessionBackend::new(session, input_name)
            .start(role, policy.clone(), &[dims])
            .map_err(|e| member_err(format!("cannot be run: {e}")))?;
        Ok(Self {
            role: role.to_owned(),
            path,
            session,
            spec,
            head,
            crop: 0,
            slot: 0,
        })
    }

    /// This member for one more stream.
    fn member(&self) -> Member {
        Member {
            role: self.role.clone(),
            path: self.path.clone(),
            client: self.session.client(),
            spec: self.spec.clone(),
            head: self.head.clone(),
            dims: self.spec.dims(),
            crop: self.crop,
            slot: self.slot,
            items: Vec::new(),
        }
    }
}

impl Member {
    /// Reads the model's output rows for the faces of this frame, checked against its head.
    fn read(
        &self,
        outputs: Vec<crate::runtime::batched_session::TensorOutput>,
    ) -> Result<Vec<MemberOutput>, EncodeError> {
        let n = outputs.len();
        let mut rows = Vec::with_capacity(n);
        for out in outputs {
            let row = out.outputs.into_iter().next().unwrap_or_default();
            let k = row.len();
            let checked = if k == 0 {
                Err(format!("no values for {n} faces"))
            } else {
                self.head.check_outputs(k)
            };
            checked.map_err(|m| EncodeError::Member {
                role: self.role.clone(),
                path: self.path.clone(),
                message: format!("does not fit its role: output of {k} values per face {m}"),
            })?;
            rows.push(self.head.read(&row));
        }
        Ok(rows)
    }
}

fn cut(
    frame: &FrameImage<'_>,
    face: &TrackedFace,
    kind: CropKind,
    margin: f32,
) -> opencv::Result<Mat> {
    match kind.shape {
        CropShape::Aligned => extract_crop_from(frame, &face.crop, kind.width, kind.color),
        CropShape::BoxPadded => {
            extract_box_padded_from(frame, &face.detection, margin, kind.width, kind.color)
        }
    }
}

impl ExpressionModels {
    /// Loads the members of the manifest's face ensemble (`config.set`, else its default):
    /// each file sha256-checked, its input and output checked against its manifest entry,
    /// each behind a batcher with the encoder policy of the runtime's provider, warmed at every
    /// batch size. `crop_margin` is the face stage's (used by `box_pad` crops).
    pub fn load(
        runtime: &Runtime,
        manifest: &Manifest,
        config: ExpressionConfig,
        crop_margin: f32,
    ) -> Result<Self, EncodeError> {
        let policy = BatchPolicy::encoder(runtime.provider());
        let ensemble = manifest.resolve_ensemble(config.set.as_deref())?;
        let mut crops = vec![BLUR_CROP];
        let mut members = Vec::with_capacity(ensemble.members.len());
        for role in &ensemble.members {
            // An optional member that could not be had is left out (warned once, naming what
            // to do); a present but corrupt or wrong one is still an error.
            if manifest.optional_path(role)?.is_none() {
                continue;
            }
            let mut member =
                SharedMember::load(runtime, manifest, role, &ensemble.labels, &policy)?;
            let kind = CropKind {
                shape: member.spec.crop,
                width: member.spec.width,
                color: member.spec.crop_color(),
            };
            member.crop = crops.iter().position(|k| *k == kind).unwrap_or_else(|| {
                crops.push(kind);
                crops.len() - 1
            });
            members.push(member);
        }
        if members.is_empty() {
            return Err(EncodeError::WrongModel {
                path: manifest.model_dir.clone(),
                message: format!(
                    "no model of the face ensemble '{}' ({}) is there; run scripts/setup.sh",
                    ensemble.name,
                    ensemble.members.join(", ")
                ),
            });
        }
        let encode_every = config
            .encode_every
            .unwrap_or(if members.len() > 1 {
                ENSEMBLE_ENCODE_EVERY
            } else {
                1
            })
            .max(1);
        // Spread the members over the period, so a frame pays for about one model.
        let count = members.len() as u32;
        for (i, member) in members.iter_mut().enumerate() {
            member.slot = i as u32 * encode_every / count.max(1);
        }
        tracing::info!(
            set = %ensemble.name,
            members = %ensemble.members.join("+"),
            encode_every,
            "face expression ensemble ready"
        );
        Ok(Self {
            members,
            layout: Arc::new(EnsembleLayout {
                crops,
                blur_crop: 0,
                common: ClassHead {
                    labels: ensemble.labels,
                    va: ensemble.va,
                    softmax: false,
                },
                set: ensemble.name,
                config,
                encode_every,
                crop_margin,
            }),
        })
    }

    /// The encoder of one more stream: its own schedule and track memory, handles on the
    /// shared members.
    pub fn encoder(&self) -> ExpressionEncoder {
        ExpressionEncoder {
            members: self.members.iter().map(SharedMember::member).collect(),
            layout: self.layout.clone(),
            tracks: HashMap::new(),
            last_index: None,
        }
    }

    /// Name of the ensemble set in use.
    pub fn set_name(&self) -> &str {
        &self.layout.set
    }
}

impl ExpressionEncoder {
    /// One stream's encoder on members of its own ([`ExpressionModels::load`], then
    /// [`ExpressionModels::encoder`]).
    pub fn from_manifest(
        runtime: &Runtime,
        manifest: &Manifest,
        config: ExpressionConfig,
        crop_margin: f32,
    ) -> Result<Self, EncodeError> {
        Ok(ExpressionModels::load(runtime, manifest, config, crop_margin)?.encoder())
    }

    /// The common head: labels of `faces[].probs` and their (valence, arousal).
    pub fn head(&self) -> &ClassHead {
        &self.layout.common
    }

    /// Name of the ensemble set in use.
    pub fn set_name(&self) -> &str {
        &self.layout.set
    }

    /// Roles of the members, in the set's order.
    pub fn member_roles(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.role.as_str()).collect()
    }

    /// The encoder's settings.
    pub fn config(&self) -> &ExpressionConfig {
        &self.layout.config
    }

    /// The schedule in use: the models run on a track every this many frames.
    pub fn encode_every(&self) -> u32 {
        self.layout.encode_every
    }

    /// Forgets every track: the next frame starts a new stream (also done when a frame's index
    /// does not follow the last one's).
    pub fn reset(&mut self) {
        self.tracks.clear();
        self.last_index = None;
    }

    /// The track's frame in the schedule: 0 when every member runs (a new track, a crop that
    /// moved or scaled by more than `reencode_change`, an id reused by a younger track), else
    /// the frames since.
    fn schedule_frame(&self, face: &TrackedFace) -> u32 {
        let Some(m) = self.tracks.get(&face.id) else {
            return 0;
        };
        let (old, new) = (m.geometry, face.crop);
        let side = old.side.max(1.0);
        let moved = (new.center.0 - old.center.0).hypot(new.center.1 - old.center.1) / side;
        let scaled = (new.side / side - 1.0).abs();
        if moved > self.layout.config.reencode_change
            || scaled > self.layout.config.reencode_change
            || face.track_age < m.track_age
        {
            0
        } else {
            m.frame.saturating_add(1).max(1)
        }
    }

    /// Combines the members' latest readings of a face.
    fn combine(&self, outputs: &[Option<MemberOutput>], blur: f32) -> Estimate {
        let mut probs = vec![0.0f32; self.layout.common.labels.len()];
        let (mut classifying, mut vs, mut as_, mut regressing) = (0u32, 0.0f32, 0.0f32, 0u32);
        for out in outputs.iter().flatten() {
            if let Some(p) = &out.probs {
                probs.iter_mut().zip(p).for_each(|(s, p)| *s += p);
                classifying += 1;
            }
            if let Some((v, a)) = out.va {
                vs += v;
                as_ += a;
                regressing += 1;
            }
        }
        if classifying > 0 {
            probs.iter_mut().for_each(|p| *p /= classifying as f32);
        } else {
            let n = probs.len().max(1) as f32;
            probs.iter_mut().for_each(|p| *p = 1.0 / n);
        }
        let (valence, arousal) = if regressing > 0 {
            (vs / regressing as f32, as_ / regressing as f32)
        } else {
            self.layout.common.valence_arousal(&probs)
        };
        Estimate {
            probs,
            valence,
            arousal,
            blur,
            regressed: regressing > 0,
        }
    }

    /// Cuts the crops the schedule needs, releases the frame, runs each member on the faces it
    /// is due for and combines every face's latest member readings; a face no member ran on
    /// keeps its track's last estimate.
    pub fn process(&mut self, batch: FaceBatch) -> Result<FaceFrame, EncodeError> {
        let mut meta = batch.frame.meta;
        meta.stamps.start(Stage::Encode);
        if self.last_index.is_some_and(|i| meta.index <= i) {
            self.tracks.clear();
        }
        self.last_index = Some(meta.index);
        let k = self.layout.encode_every;
        let frames: Vec<u32> = batch.faces.iter().map(|f| self.schedule_frame(f)).collect();
        // due[i][m]: member m runs on face i.
        let due: Vec<Vec<bool>> = frames
            .iter()
            .map(|&t| {
                self.members
                    .iter()
                    .map(|m| t == 0 || t % k == m.slot)
                    .collect()
            })
            .collect();
        let mut blur: Vec<Option<f32>> = vec![None; batch.faces.len()];
        let mut faces_of: Vec<Vec<usize>> = vec![Vec::new(); self.members.len()];
        for member in &mut self.members {
            member.items.clear();
        }
        if due.iter().flatten().any(|d| *d) {
            let mat = batch.frame.image();
            for (i, face) in batch.faces.iter().enumerate() {
                if !due[i].contains(&true) {
                    continue;
                }
                let mut needed = vec![false; self.layout.crops.len()];
                needed[self.layout.blur_crop] = true;
                for (m, member) in self.members.iter().enumerate() {
                    needed[member.crop] |= due[i][m];
                }
                let mut crops: Vec<Option<Mat>> = Vec::with_capacity(needed.len());
                for (kind, needed) in self.layout.crops.iter().zip(needed) {
                    crops.push(if needed {
                        Some(cut(&mat, face, *kind, self.layout.crop_margin)?)
                    } else {
                        None
                    });
                }
                if let Some(c) = &crops[self.layout.blur_crop] {
                    blur[i] = Some(laplacian_variance(c)?);
                }
                for (m, member) in self.members.iter_mut().enumerate() {
                    if let (true, Some(c)) = (due[i][m], &crops[member.crop]) {
                        let mut data = Vec::with_capacity(member.spec.len());
                        member.spec.append_normalized(c, &mut data)?;
                        member.items.push(TensorItem {
                            data,
                            dims: member.dims.clone(),
                        });
                        faces_of[m].push(i);
                    }
                }
            }
        }
        drop(batch.frame);
        let mut readings: Vec<Vec<Option<MemberOutput>>> =
            vec![vec![None; self.members.len()]; due.len()];
        // Every member's request goes out before any answer is awaited, so the members' batches
        // of all streams form side by side (a member with nothing to run says so: a batch of the
        // other streams need not wait for this one).
        let mut pending = Vec::with_capacity(self.members.len());
        for member in &mut self.members {
            pending.push(member.client.submit(std::mem::take(&mut member.items)));
        }
        for (m, (member, submitted)) in self.members.iter().zip(pending).enumerate() {
            let outputs = submitted?.wait()?;
            if outputs.len() != faces_of[m].len() {
                return Err(EncodeError::Member {
                    role: member.role.clone(),
                    path: member.path.clone(),
                    message: format!("{} outputs for {} faces", outputs.len(), faces_of[m].len()),
                });
            }
            for (&i, row) in faces_of[m].iter().zip(member.read(outputs)?) {
                readings[i][m] = Some(row);
            }
        }
        let mut faces = Vec::with_capacity(batch.faces.len());
        for (i, face) in batch.faces.into_iter().enumerate() {
            let encoded = blur[i].is_some();
            let mut memory = match self.tracks.remove(&face.id) {
                Some(m) if frames[i] > 0 => m,
                _ => TrackMemory {
                    outputs: vec![None; self.members.len()],
                    frame: 0,
                    geometry: face.crop,
                    track_age: face.track_age,
                    estimate: Estimate {
                        probs: Vec::new(),
                        valence: 0.0,
                        arousal: 0.0,
                        blur: 0.0,
                        regressed: false,
                    },
                    seen: meta.index,
                },
            };
            memory.seen = meta.index;
            memory.frame = frames[i];
            memory.track_age = face.track_age;
            if let Some(blur) = blur[i] {
                for (slot, reading) in memory.outputs.iter_mut().zip(&mut readings[i]) {
                    if let Some(r) = reading.take() {
                        *slot = Some(r);
                    }
                }
                memory.estimate = self.combine(&memory.outputs, blur);
            }
            let e = &memory.estimate;
            faces.push(FaceEstimate {
                id: face.id,
                track_age: face.track_age,
                detection: face.detection,
                probs: e.probs.clone(),
                valence: e.valence,
                arousal: e.arousal,
                blur: e.blur,
                encoded,
                regressed: e.regressed,
            });
            self.tracks.insert(face.id, memory);
        }
        let now = meta.index;
        self.tracks
            .retain(|_, m| now.saturating_sub(m.seen) <= FORGET_AFTER_FRAMES);
        meta.stamps.end(Stage::Encode);
        Ok(FaceFrame { meta, faces })
    }

    /// Runs until the input channel closes or the output is gone; hands the encoder back,
    /// reset for another stream. A failure names the frame it happened on.
    pub fn run(self, rx: Receiver<FaceBatch>, tx: Sender<FaceFrame>) -> Result<Self, StageError> {
        stage::run(self, rx, tx)
    }
}

impl stage::Stage for ExpressionEncoder {
    type Input = FaceBatch;
    type Output = FaceFrame;
    type Error = EncodeError;
    const NAME: &'static str = "encode";

    fn process(
        &mut self,
        batch: FaceBatch,
        out: &mut Emit<'_, FaceFrame>,
    ) -> Result<(), EncodeError> {
        out.send(ExpressionEncoder::process(self, batch)?);
        Ok(())
    }

    fn reset(&mut self) {
        ExpressionEncoder::reset(self);
    }

    fn position(batch: &FaceBatch) -> Option<Position> {
        Some(Position {
            frame: Some(batch.frame.meta.index),
            t: batch.frame.meta.pts,
        })
    }
}
