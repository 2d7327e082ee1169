//! Fusion math: how much to trust each modality, how to mix them, and when they disagree.
//!
//! Per face and time step the face model and the voice model each give (valence, arousal) in
//! [-1, 1]. This module turns observable quality signals into a reliability per modality
//! ([`face_reliability`], [`voice_reliability`]), reliabilities and per-dimension priors into
//! mixing weights with a balance floor ([`gates`]), both estimates into one fused value and a raw
//! audio-visual conflict ([`fuse_step`]), and a stream of those into smoothed output
//! ([`OneEuro`]) and conflict events with hysteresis ([`ConflictTracker`]). [`FaceTrackFusion`]
//! holds all per-track state. The math, with the defaults and the reasons for them, is in
//! `docs/fusion.md`.
//!
//! Everything here is pure and allocation-free per step (except the event list); no function
//! panics, and non-finite inputs are treated as missing rather than propagated.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::record::{ConflictDimension, ConflictEvent};

/// Index of the face in a gate pair (`Gates::valence[FACE]`).
pub const FACE: usize = 0;
/// Index of the voice in a gate pair (`Gates::valence[VOICE]`).
pub const VOICE: usize = 1;

/// Time steps shorter than this (seconds) count as a repeated timestamp and are ignored by the
/// time-based filters, so a derivative never divides by (almost) zero.
pub const MIN_DT: f64 = 1e-6;

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

/// A fusion parameter that is out of range, naming the field (dotted path, as in the config).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid fusion parameter `{field}`: {reason}")]
pub struct FusionParamError {
    /// Dotted path of the offending field, e.g. `conflict.on` or `face.blur.lo`.
    pub field: String,
    /// What is wrong with its value.
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> FusionParamError {
    FusionParamError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn check_finite(field: &str, x: f64) -> Result<(), FusionParamError> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(invalid(field, format!("must be a finite number, got {x}")))
    }
}

fn check_range(field: &str, x: f64, lo: f64, hi: f64) -> Result<(), FusionParamError> {
    check_finite(field, x)?;
    if (lo..=hi).contains(&x) {
        Ok(())
    } else {
        Err(invalid(field, format!("must be in [{lo}, {hi}], got {x}")))
    }
}

fn check_positive(field: &str, x: f64) -> Result<(), FusionParamError> {
    check_finite(field, x)?;
    if x > 0.0 {
        Ok(())
    } else {
        Err(invalid(field, format!("must be > 0, got {x}")))
    }
}

fn check_non_negative(field: &str, x: f64) -> Result<(), FusionParamError> {
    check_finite(field, x)?;
    if x >= 0.0 {
        Ok(())
    } else {
        Err(invalid(field, format!("must be >= 0, got {x}")))
    }
}

/// A smooth monotone reliability curve of one quality signal: `floor` at the bad end, 1 at the
/// good end, a smoothstep `3t² − 2t³` in between (C¹, no kinks), constant outside `[lo, hi]`.
///
/// Each signal fixes its direction (rising: bigger is better; falling: smaller is better) and
/// scale (linear or logarithmic in the signal); the config only gives the numbers. A NaN signal
/// evaluates to the bad end (`floor`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    /// Start of the transition (signal units).
    pub lo: f32,
    /// End of the transition (signal units); must be > `lo`.
    pub hi: f32,
    /// Value at the bad end, in [0, 1]: 0 lets this signal alone veto a modality, a positive
    /// floor makes it only attenuate.
    pub floor: f32,
}

/// `3t² − 2t³` on `t` clamped to [0, 1]; NaN gives 0.
fn smoothstep(t: f32) -> f32 {
    if t.is_nan() {
        return 0.0;
    }
    let t = t.clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

impl Ramp {
    /// A ramp from `lo` to `hi` with the given `floor`.
    pub const fn new(lo: f32, hi: f32, floor: f32) -> Self {
        Self { lo, hi, floor }
    }

    /// `floor + (1 − floor)·smoothstep(t)`, clamped to [0, 1].
    fn shape(&self, t: f32) -> f32 {
        (self.floor + (1.0 - self.floor) * smoothstep(t)).clamp(0.0, 1.0)
    }

    /// Rising on a linear scale: `floor` for `x ≤ lo`, 1 for `x ≥ hi`.
    pub fn rising(&self, x: f32) -> f32 {
        self.shape((x - self.lo) / (self.hi - self.lo))
    }

    /// Falling on a linear scale: 1 for `x ≤ lo`, `floor` for `x ≥ hi`.
    pub fn falling(&self, x: f32) -> f32 {
        // smoothstep(1 − t) = 1 − smoothstep(t); NaN stays NaN and gives the floor.
        self.shape(1.0 - (x - self.lo) / (self.hi - self.lo))
    }

    /// Rising on a log scale (`t = ln(x/lo) / ln(hi/lo)`): `floor` for `x ≤ lo` (and for
    /// `x ≤ 0`), 1 for `x ≥ hi`. Needs `lo > 0`.
    pub fn rising_log(&self, x: f32) -> f32 {
        self.shape((x.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln()))
    }

    fn validate(&self, field: &str, log_scale: bool) -> Result<(), FusionParamError> {
        let lo_name = format!("{field}.lo");
        let hi_name = format!("{field}.hi");
        check_finite(&lo_name, self.lo.into())?;
        check_finite(&hi_name, self.hi.into())?;
        check_range(&format!("{field}.floor"), self.floor.into(), 0.0, 1.0)?;
        if log_scale && self.lo <= 0.0 {
            return Err(invalid(
                &lo_name,
                format!("must be > 0 (log-scale curve), got {}", self.lo),
            ));
        }
        if self.hi <= self.lo {
            return Err(invalid(
                &hi_name,
                format!("must be > {lo_name} ({}), got {}", self.lo, self.hi),
            ));
        }
        Ok(())
    }
}

/// Reliability curves of the face signals (see [`FaceQuality`] for the signals themselves).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaceCurves {
    /// Detector score, rising, linear. Default `lo 0.5, hi 0.9, floor 0`: every face that
    /// passes the default YuNet threshold (0.9) gets 1; a lowered threshold lets weaker
    /// detections in with less weight.
    pub score: Ramp,
    /// Face size (box side, px), rising, log scale. Default `lo 24, hi 96, floor 0`: 48 px (the
    /// FER2013 crop size) gets 0.5, faces under 24 px carry no expression information worth
    /// fusing.
    pub size_px: Ramp,
    /// Sharpness (variance of the Laplacian of the grey crop, 0..255 intensities), rising, log
    /// scale. Default `lo 15, hi 150, floor 0.25`: motion or focus blur attenuates but never
    /// vetoes (a blurred smile is still a smile).
    pub blur: Ramp,
    /// |yaw ratio| (nose offset from the eye midpoint along the eye line, over the inter-ocular
    /// distance; about 0.5·tan(yaw)), falling, linear. Default `lo 0.15, hi 0.5, floor 0.2`:
    /// full trust to about 17°, the floor from about 45°.
    pub yaw: Ramp,
    /// |roll| of the eye line in degrees, falling, linear. Default `lo 15, hi 45, floor 0.3`.
    /// Set the floor to 1 when crops are roll-aligned before the expression model.
    pub roll_deg: Ramp,
    /// Track age in seconds, rising, linear. Default `lo 0, hi 0.5, floor 0.5`: a face that has
    /// just appeared (possibly a false or swapped track) counts half for its first frames.
    pub track_age_s: Ramp,
}

impl Default for FaceCurves {
    fn default() -> Self {
        Self {
            score: Ramp::new(0.5, 0.9, 0.0),
            size_px: Ramp::new(24.0, 96.0, 0.0),
            blur: Ramp::new(15.0, 150.0, 0.25),
            yaw: Ramp::new(0.15, 0.5, 0.2),
            roll_deg: Ramp::new(15.0, 45.0, 0.3),
            track_age_s: Ramp::new(0.0, 0.5, 0.5),
        }
    }
}

impl FaceCurves {
    fn validate(&self) -> Result<(), FusionParamError> {
        self.score.validate("face.score", false)?;
        self.size_px.validate("face.size_px", true)?;
        self.blur.validate("face.blur", true)?;
        self.yaw.validate("face.yaw", false)?;
        self.roll_deg.validate("face.roll_deg", false)?;
        self.track_age_s.validate("face.track_age_s", false)
    }
}

/// Reliability curves of the voice signals (see [`VoiceQuality`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceCurves {
    /// VAD speech probability (or the window's mean of it), rising, linear. Default
    /// `lo 0.2, hi 0.7, floor 0`: without speech the voice model reads noise, so this signal
    /// alone can veto the voice.
    pub speech_prob: Ramp,
    /// Signal-to-noise ratio in dB, rising, linear. Default `lo 0, hi 20, floor 0.1`.
    pub snr_db: Ramp,
    /// Fraction of clipped samples, falling, linear. Default `lo 0.01, hi 0.1, floor 0.2`:
    /// clipping inflates energy cues and so biases arousal upward.
    pub clipping: Ramp,
}

impl Default for VoiceCurves {
    fn default() -> Self {
        Self {
            speech_prob: Ramp::new(0.2, 0.7, 0.0),
            snr_db: Ramp::new(0.0, 20.0, 0.1),
            clipping: Ramp::new(0.01, 0.1, 0.2),
        }
    }
}

impl VoiceCurves {
    fn validate(&self) -> Result<(), FusionParamError> {
        self.speech_prob.validate("voice.speech_prob", false)?;
        self.snr_db.validate("voice.snr_db", false)?;
        self.clipping.validate("voice.clipping", false)
    }
}

/// One-euro filter parameters (Casiez et al. 2012), for values in [-1, 1] and time in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OneEuroParams {
    /// Cutoff (Hz) when the value is still. Default 1.0 (time constant 0.16 s): frame-to-frame
    /// model jitter is cut to about a third at 30 fps while an expression change still shows
    /// within a few hundred ms.
    pub min_cutoff: f64,
    /// Cutoff increase per unit/s of (filtered) speed. Default 0.3: a change of 1 within 0.25 s
    /// (4 /s) lifts the cutoff to about 2.2 Hz, so real changes lag less than jitter.
    pub beta: f64,
    /// Cutoff (Hz) of the speed estimate itself. Default 1.0.
    pub d_cutoff: f64,
}

impl Default for OneEuroParams {
    fn default() -> Self {
        Self {
            min_cutoff: 1.0,
            beta: 0.3,
            d_cutoff: 1.0,
        }
    }
}

impl OneEuroParams {
    fn validate(&self, field: &str) -> Result<(), FusionParamError> {
        check_positive(&format!("{field}.min_cutoff"), self.min_cutoff)?;
        check_non_negative(&format!("{field}.beta"), self.beta)?;
        check_positive(&format!("{field}.d_cutoff"), self.d_cutoff)
    }
}

/// Audio-visual conflict parameters: how disagreement maps to [0, 1], its smoothing and the
/// hysteresis that turns it into events.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConflictParams {
    /// Disagreement, in units of the combined uncertainty σ (see [`raw_conflict`]), that
    /// counts as half a conflict: `h(z) = (z/scale)² / (1 + (z/scale)²)`. Default 2: a
    /// disagreement of one σ (ordinary model noise) gives 0.2, two σ 0.5, three σ 0.69.
    pub scale: f32,
    /// Time constant (s) of the exponential smoothing of the raw conflict. Default 1: a
    /// disagreement must last about a second to count fully, which separates sustained
    /// disagreement from frame-to-frame model noise. 0 turns smoothing off.
    pub smoothing_s: f64,
    /// An event starts when the smoothed conflict rises above this. Default 0.16, chosen on
    /// congruent data for the false-alarm rate stated in docs/fusion.md §6.
    pub on: f32,
    /// An event ends when the smoothed conflict falls below this; must be < `on`. Default 0.1.
    pub off: f32,
    /// Minimum event duration (s): the smoothed conflict must stay at or above `off` this long
    /// after crossing `on` before the event is reported (and its start dated back to the
    /// crossing). Default 0.5.
    pub min_duration_s: f64,
    /// Per-dimension attribution: when the smaller of the two dimensions' conflict is at least
    /// this fraction of the larger, the event is attributed to both. Default 0.7.
    pub both_ratio: f32,
    /// Base uncertainty (standard deviation, VA units) of the face's [valence, arousal]: how
    /// far a categorical face model's estimate typically is from the truth. Default
    /// [0.3, 0.45]: faces carry valence well and arousal poorly.
    pub face_sigma: [f32; 2],
    /// Base uncertainty of the voice's [valence, arousal]. Default [0.6, 0.3]: prosody carries
    /// arousal well and valence poorly (its valence head scored near chance).
    pub voice_sigma: [f32; 2],
    /// Extra face uncertainty at maximal classifier entropy (added in quadrature, scaled by
    /// the normalised entropy of the expression probabilities). Default 0.3.
    pub entropy_sigma: f32,
    /// Time constant (s) of each modality's running spread (exponentially weighted standard
    /// deviation of its own recent estimates), added in quadrature. Default 2.
    pub spread_s: f64,
}

impl Default for ConflictParams {
    fn default() -> Self {
        Self {
            scale: 2.0,
            smoothing_s: 1.0,
            on: 0.16,
            off: 0.1,
            min_duration_s: 0.5,
            both_ratio: 0.7,
            face_sigma: [0.3, 0.45],
            voice_sigma: [0.6, 0.3],
            entropy_sigma: 0.3,
            spread_s: 2.0,
        }
    }
}

impl ConflictParams {
    fn validate(&self) -> Result<(), FusionParamError> {
        check_positive("conflict.scale", self.scale.into())?;
        check_non_negative("conflict.smoothing_s", self.smoothing_s)?;
        check_range("conflict.on", self.on.into(), 0.0, 1.0)?;
        check_range("conflict.off", self.off.into(), 0.0, 1.0)?;
        if self.off >= self.on {
            return Err(invalid(
                "conflict.off",
                format!(
                    "must be < conflict.on ({}) for hysteresis, got {}",
                    self.on, self.off
                ),
            ));
        }
        check_non_negative("conflict.min_duration_s", self.min_duration_s)?;
        check_range("conflict.both_ratio", self.both_ratio.into(), 0.0, 1.0)?;
        if self.both_ratio <= 0.0 {
            return Err(invalid("conflict.both_ratio", "must be > 0, got 0"));
        }
        for (name, sigma) in [
            ("conflict.face_sigma", self.face_sigma),
            ("conflict.voice_sigma", self.voice_sigma),
        ] {
            for x in sigma {
                check_positive(name, x.into())?;
            }
        }
        check_non_negative("conflict.entropy_sigma", self.entropy_sigma.into())?;
        check_positive("conflict.spread_s", self.spread_s)?;
        Ok(())
    }
}

/// All fusion parameters. Every field has a default (`#[serde(default)]`), so a config needs
/// only the fields it changes; unknown fields are rejected. Call [`FusionParams::validate`]
/// after loading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FusionParams {
    /// Face reliability curves.
    pub face: FaceCurves,
    /// Voice reliability curves.
    pub voice: VoiceCurves,
    /// Prior weight of the face for valence. Default 0.7 (faces carry valence best).
    pub w_face_valence: f32,
    /// Prior weight of the voice for valence. Default 0.3.
    pub w_voice_valence: f32,
    /// Prior weight of the face for arousal. Default 0.4.
    pub w_face_arousal: f32,
    /// Prior weight of the voice for arousal. Default 0.6 (prosody carries arousal best).
    pub w_voice_arousal: f32,
    /// Balance floor β: the least gate a modality keeps when both are reliable. Default 0.2.
    /// Must not exceed either modality's prior share (`w_m / (w_face + w_voice)`) in either
    /// dimension, which keeps the gates monotone in each reliability.
    pub balance_floor: f32,
    /// The floor starts to apply when the weaker modality's reliability exceeds this.
    /// Default 0.2.
    pub balance_min_reliability: f32,
    /// The floor applies in full once the weaker reliability reaches this. Default 0.5.
    pub balance_full_reliability: f32,
    /// An estimate older than this (s) counts as absent (reliability 0). Default 0.5.
    pub stale_after_s: f64,
    /// Smoother of the fused valence and arousal.
    pub smoother: OneEuroParams,
    /// Conflict mapping, smoothing and events.
    pub conflict: ConflictParams,
    /// Per-person calibration of each modality before fusion.
    pub calibration: super::calibration::CalibrationParams,
}

impl Default for FusionParams {
    fn default() -> Self {
        Self {
            face: FaceCurves::default(),
            voice: VoiceCurves::default(),
            w_face_valence: 0.7,
            w_voice_valence: 0.3,
            w_face_arousal: 0.4,
            w_voice_arousal: 0.6,
            balance_floor: 0.2,
            balance_min_reliability: 0.2,
            balance_full_reliability: 0.5,
            stale_after_s: 0.5,
            smoother: OneEuroParams::default(),
            conflict: ConflictParams::default(),
            calibration: super::calibration::CalibrationParams::default(),
        }
    }
}

impl FusionParams {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`FusionParamError`] naming the first field out of range (dotted path) and why.
    pub fn validate(&self) -> Result<(), FusionParamError> {
        self.face.validate()?;
        self.voice.validate()?;
        for (name, w) in [
            ("w_face_valence", self.w_face_valence),
            ("w_voice_valence", self.w_voice_valence),
            ("w_face_arousal", self.w_face_arousal),
            ("w_voice_arousal", self.w_voice_arousal),
        ] {
            check_positive(name, w.into())?;
        }
        check_range("balance_floor", self.balance_floor.into(), 0.0, 0.5)?;
        let share = |a: f32, b: f32| a.min(b) / (a + b);
        let min_share = share(self.w_face_valence, self.w_voice_valence)
            .min(share(self.w_face_arousal, self.w_voice_arousal));
        if self.balance_floor > min_share {
            return Err(invalid(
                "balance_floor",
                format!(
                    "must not exceed the smallest prior share of a modality ({min_share:.3}), \
                     got {}; a larger floor would let raising a modality's reliability lower \
                     its gate",
                    self.balance_floor
                ),
            ));
        }
        check_range(
            "balance_min_reliability",
            self.balance_min_reliability.into(),
            0.0,
            1.0,
        )?;
        check_range(
            "balance_full_reliability",
            self.balance_full_reliability.into(),
            0.0,
            1.0,
        )?;
        if self.balance_full_reliability <= self.balance_min_reliability {
            return Err(invalid(
                "balance_full_reliability",
                format!(
                    "must be > balance_min_reliability ({}), got {}",
                    self.balance_min_reliability, self.balance_full_reliability
                ),
            ));
        }
        check_positive("stale_after_s", self.stale_after_s)?;
        self.smoother.validate("smoother")?;
        self.conflict.validate()?;
        self.calibration.validate()
    }
}

// ---------------------------------------------------------------------------------------------
// Reliability
// ---------------------------------------------------------------------------------------------

/// The five facial landmarks, OpenCV/YuNet order: right eye, left eye, nose tip, right mouth
/// corner, left mouth corner ("right" = the person's right, on the image's left), in pixels.
pub use crate::face::detection::Landmarks;

/// Observable quality of one face estimate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaceQuality {
    /// Whether there is a face estimate at all; `false` gives reliability 0.
    pub present: bool,
    /// Seconds from the estimate's time to now; above [`FusionParams::stale_after_s`] (or NaN)
    /// the estimate is stale and gets reliability 0. Negative counts as fresh.
    pub since_update_s: f64,
    /// Detector score in [0, 1].
    pub score: f32,
    /// Face size: box side in pixels (for a non-square box, `sqrt(w·h)`).
    pub size_px: f32,
    /// Variance of the Laplacian of the grey face crop (0..255 intensities); `None` when not
    /// measured (not penalized).
    pub blur: Option<f32>,
    /// Landmarks for the frontalness term; `None` when the detector has none (e.g. a Haar
    /// fallback, which only finds near-frontal faces anyway; not penalized).
    pub landmarks: Option<Landmarks>,
    /// Seconds since the track started.
    pub track_age_s: f32,
}

/// Observable quality of one voice estimate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VoiceQuality {
    /// Whether there is a voice estimate at all; `false` gives reliability 0.
    pub present: bool,
    /// Seconds from the estimate's time to now; above [`FusionParams::stale_after_s`] (or NaN)
    /// the estimate is stale and gets reliability 0. Negative counts as fresh.
    pub since_update_s: f64,
    /// VAD speech probability in [0, 1], possibly averaged over the estimate's window.
    pub speech_prob: f32,
    /// Signal-to-noise ratio estimate in dB; `None` when not measured (not penalized).
    pub snr_db: Option<f32>,
    /// Fraction of clipped samples in the window, in [0, 1].
    pub clipping: f32,
}

/// Head pose proxies from five landmarks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadPose {
    /// Nose-tip offset from the eye midpoint along the eye line, over the inter-ocular
    /// distance; 0 when frontal, about `0.5·tan(yaw)`. Positive towards the person's left eye.
    pub yaw_ratio: f32,
    /// Angle of the eye line (right eye → left eye) against the image x axis, degrees in
    /// (−180, 180]; 0 for an upright face, ±180 for one upside down.
    pub roll_deg: f32,
}

/// Yaw and roll proxies from landmarks; `None` when a coordinate is not finite or the eyes are
/// less than 0.001 px apart.
pub fn head_pose(landmarks: &Landmarks) -> Option<HeadPose> {
    if landmarks.iter().flatten().any(|c| !c.is_finite()) {
        return None;
    }
    let [right_eye, left_eye, nose, _, _] = *landmarks;
    let ex = left_eye[0] - right_eye[0];
    let ey = left_eye[1] - right_eye[1];
    let iod = ex.hypot(ey);
    if iod.is_nan() || iod < 1e-3 {
        return None;
    }
    let mid_x = 0.5 * (left_eye[0] + right_eye[0]);
    let mid_y = 0.5 * (left_eye[1] + right_eye[1]);
    let along = (nose[0] - mid_x) * ex / iod + (nose[1] - mid_y) * ey / iod;
    Some(HeadPose {
        yaw_ratio: along / iod,
        roll_deg: ey.atan2(ex).to_degrees(),
    })
}

/// The per-signal factors of a face reliability, each in [0, 1] (1 = no penalty).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceFactors {
    /// From the detector score.
    pub score: f32,
    /// From the face size.
    pub size: f32,
    /// From the sharpness (1 when not measured).
    pub blur: f32,
    /// Yaw × roll factor (1 without landmarks; both floors with degenerate landmarks).
    pub frontal: f32,
    /// From the track age.
    pub track_age: f32,
}

impl FaceFactors {
    /// The product of all factors, in [0, 1].
    pub fn product(&self) -> f32 {
        (self.score * self.size * self.blur * self.frontal * self.track_age).clamp(0.0, 1.0)
    }
}

/// The face factors of `q`, ignoring presence and staleness.
pub fn face_factors(q: &FaceQuality, p: &FusionParams) -> FaceFactors {
    let c = &p.face;
    let frontal = match q.landmarks {
        None => 1.0,
        Some(lm) => match head_pose(&lm) {
            Some(pose) => {
                c.yaw.falling(pose.yaw_ratio.abs()) * c.roll_deg.falling(pose.roll_deg.abs())
            }
            None => c.yaw.floor * c.roll_deg.floor,
        },
    };
    FaceFactors {
        score: c.score.rising(q.score),
        size: c.size_px.rising_log(q.size_px),
        blur: q.blur.map_or(1.0, |b| c.blur.rising_log(b)),
        frontal: frontal.clamp(0.0, 1.0),
        track_age: c.track_age_s.rising(q.track_age_s),
    }
}

fn fresh(since_update_s: f64, limit: f64) -> bool {
    // NaN compares false: a NaN age is stale.
    since_update_s <= limit
}

/// Face reliability in [0, 1]: the product of [`face_factors`], or 0 when the face is absent or
/// stale.
pub fn face_reliability(q: &FaceQuality, p: &FusionParams) -> f32 {
    if !q.present || !fresh(q.since_update_s, p.stale_after_s) {
        return 0.0;
    }
    face_factors(q, p).product()
}

/// The per-signal factors of a voice reliability, each in [0, 1] (1 = no penalty).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoiceFactors {
    /// From the VAD speech probability.
    pub speech: f32,
    /// From the SNR (1 when not measured).
    pub snr: f32,
    /// From the clipping fraction.
    pub clipping: f32,
}

impl VoiceFactors {
    /// The product of all factors, in [0, 1].
    pub fn product(&self) -> f32 {
        (self.speech * self.snr * self.clipping).clamp(0.0, 1.0)
    }
}

/// The voice factors of `q`, ignoring presence and staleness.
pub fn voice_factors(q: &VoiceQuality, p: &FusionParams) -> VoiceFactors {
    let c = &p.voice;
    VoiceFactors {
        speech: c.speech_prob.rising(q.speech_prob),
        snr: q.snr_db.map_or(1.0, |s| c.snr_db.rising(s)),
        clipping: c.clipping.falling(q.clipping),
    }
}

/// Voice reliability in [0, 1]: the product of [`voice_factors`], or 0 when the voice is absent
/// or stale.
pub fn voice_reliability(q: &VoiceQuality, p: &FusionParams) -> f32 {
    if !q.present || !fresh(q.since_update_s, p.stale_after_s) {
        return 0.0;
    }
    voice_factors(q, p).product()
}

// ---------------------------------------------------------------------------------------------
// Gates
// ---------------------------------------------------------------------------------------------

/// Mixing weights per dimension, `[face, voice]` (index with [`FACE`], [`VOICE`]). Each pair
/// sums to 1 when a modality is present and is `[0, 0]` when none is.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Gates {
    /// Weights of the face and the voice for valence.
    pub valence: [f32; 2],
    /// Weights of the face and the voice for arousal.
    pub arousal: [f32; 2],
}

impl Gates {
    /// No modality present: all weights 0.
    pub const NONE: Gates = Gates {
        valence: [0.0, 0.0],
        arousal: [0.0, 0.0],
    };

    /// Whether any modality has weight (i.e. there is a fused value).
    pub fn any(&self) -> bool {
        self.valence[FACE] + self.valence[VOICE] > 0.0
    }
}

/// A reliability as used by the gates: NaN and negatives → 0, above 1 → 1.
fn sanitize_reliability(r: f32) -> f32 {
    if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) }
}

/// The balance floor φ for reliabilities `r_face`, `r_voice` (NaN/negative → 0, above 1 → 1):
/// `β · smoothstep((min(r) − r_lo) / (r_hi − r_lo))`, in [0, 0.5].
pub fn balance_floor(r_face: f32, r_voice: f32, p: &FusionParams) -> f32 {
    let weaker = sanitize_reliability(r_face).min(sanitize_reliability(r_voice));
    let t = (weaker - p.balance_min_reliability)
        / (p.balance_full_reliability - p.balance_min_reliability);
    let phi = p.balance_floor * smoothstep(t);
    if phi.is_nan() {
        0.0
    } else {
        phi.clamp(0.0, 0.5)
    }
}

/// Gates of one dimension with priors `w_face`, `w_voice` and floor `phi` ∈ [0, 0.5].
fn gate_pair(r_face: f32, r_voice: f32, w_face: f32, w_voice: f32, phi: f32) -> [f32; 2] {
    match (r_face > 0.0, r_voice > 0.0) {
        (false, false) => [0.0, 0.0],
        (true, false) => [1.0, 0.0],
        (false, true) => [0.0, 1.0],
        (true, true) => {
            let s_face = f64::from(r_face) * f64::from(w_face);
            let s_voice = f64::from(r_voice) * f64::from(w_voice);
            // 1/(1 + s_v/s_f) rather than s_f/(s_f + s_v): each operation is then monotone in
            // each reliability, so rounding cannot break monotonicity.
            let g = 1.0 / (1.0 + s_voice / s_face);
            let g = if g.is_nan() { 0.5 } else { g };
            let phi = f64::from(phi);
            let g = g.max(phi).min(1.0 - phi) as f32;
            [g, 1.0 - g]
        }
    }
}

/// Mixing weights from the two reliabilities.
///
/// Per dimension d: `g_m ∝ r_m·w^d_m` over the present modalities (r > 0), then the balance
/// floor `g_m ← clamp(g_m, φ, 1 − φ)` with φ from [`balance_floor`] (two modalities, so the
/// clamp is the renormalized floor). An absent modality (r = 0, NaN or negative) gets exactly
/// 0 and the other exactly 1; both absent give [`Gates::NONE`].
///
/// Monotone: raising a modality's reliability never lowers its gate, given
/// `balance_floor ≤` each prior share (checked by [`FusionParams::validate`]).
pub fn gates(r_face: f32, r_voice: f32, p: &FusionParams) -> Gates {
    let r_face = sanitize_reliability(r_face);
    let r_voice = sanitize_reliability(r_voice);
    let phi = balance_floor(r_face, r_voice, p);
    Gates {
        valence: gate_pair(r_face, r_voice, p.w_face_valence, p.w_voice_valence, phi),
        arousal: gate_pair(r_face, r_voice, p.w_face_arousal, p.w_voice_arousal, phi),
    }
}

// ---------------------------------------------------------------------------------------------
// One step: fused value and raw conflict
// ---------------------------------------------------------------------------------------------

/// One modality's estimate for one face and time step.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Estimate {
    /// Valence in [-1, 1] (clamped).
    pub valence: f32,
    /// Arousal in [-1, 1] (clamped).
    pub arousal: f32,
    /// Reliability in [0, 1], e.g. from [`face_reliability`] or [`voice_reliability`]; 0 means
    /// absent.
    pub reliability: f32,
    /// Uncertainty of this estimate beyond the modality's base uncertainty
    /// ([`ConflictParams::face_sigma`] / [`ConflictParams::voice_sigma`]), standard deviation per
    /// [valence, arousal], ≥ 0: the spread of the modality's recent estimates, the classifier's
    /// entropy. Only the conflict uses it.
    pub spread: [f32; 2],
}

impl Estimate {
    /// The estimate with values clamped to [-1, 1] and reliability to [0, 1], or `None` when it
    /// counts as absent (reliability ≤ 0 or NaN, or a non-finite value).
    pub fn sanitized(self) -> Option<Estimate> {
        let r = sanitize_reliability(self.reliability);
        if r <= 0.0 || !self.valence.is_finite() || !self.arousal.is_finite() {
            return None;
        }
        Some(Estimate {
            valence: self.valence.clamp(-1.0, 1.0),
            arousal: self.arousal.clamp(-1.0, 1.0),
            reliability: r,
            spread: self.spread.map(|s| {
                if s.is_finite() {
                    s.clamp(0.0, 2.0)
                } else {
                    2.0
                }
            }),
        })
    }
}

/// Audio-visual conflict in [0, 1]: overall and per dimension.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Conflict {
    /// From the distance in the valence–arousal plane.
    pub total: f32,
    /// From the valence difference alone.
    pub valence: f32,
    /// From the arousal difference alone.
    pub arousal: f32,
}

impl Conflict {
    /// No conflict.
    pub const ZERO: Conflict = Conflict {
        total: 0.0,
        valence: 0.0,
        arousal: 0.0,
    };

    /// Which dimension disagrees more (see [`ConflictDimension::classify`]).
    pub fn dimension(&self, both_ratio: f32) -> ConflictDimension {
        ConflictDimension::classify(self.valence.into(), self.arousal.into(), both_ratio)
    }
}

/// `x²/(1+x²)` of `δ/scale`: 0 at 0, 0.5 at `scale`, → 1; flat near 0 so model noise counts
/// little.
fn disagreement(delta: f64, scale: f32) -> f64 {
    let x = delta / f64::from(scale);
    let x2 = x * x;
    let h = x2 / (1.0 + x2);
    if h.is_nan() { 1.0 } else { h }
}

/// Raw conflict between two estimates, in units of their uncertainty. Per dimension d the
/// disagreement is `z_d = |x_face − x_voice| / σ_d` with
/// `σ_d² = (face_sigma_d² + spread_face_d²) / r_face + (voice_sigma_d² + spread_voice_d²) / r_voice`:
/// each modality's variance is its base uncertainty plus its own spread, inflated by how
/// unreliable it is now (r = 1: as is; r = 0.25: twice the standard deviation). The conflict is
/// `h(z)` ([`ConflictParams::scale`], in σ units) with z the per-dimension `z_d` or, for the
/// total, `hypot(z_valence, z_arousal)`. 0 when either estimate is absent.
pub fn raw_conflict(face: Option<Estimate>, voice: Option<Estimate>, p: &FusionParams) -> Conflict {
    let (Some(f), Some(v)) = (
        face.and_then(Estimate::sanitized),
        voice.and_then(Estimate::sanitized),
    ) else {
        return Conflict::ZERO;
    };
    let c = &p.conflict;
    let variance = |base: f32, spread: f32, r: f32| {
        (f64::from(base).powi(2) + f64::from(spread).powi(2)) / f64::from(r)
    };
    let sigma = |d: usize| {
        (variance(c.face_sigma[d], f.spread[d], f.reliability)
            + variance(c.voice_sigma[d], v.spread[d], v.reliability))
        .sqrt()
        .max(1e-6)
    };
    let zv = (f64::from(f.valence) - f64::from(v.valence)).abs() / sigma(0);
    let za = (f64::from(f.arousal) - f64::from(v.arousal)).abs() / sigma(1);
    let amount = |z: f64| disagreement(z, c.scale).clamp(0.0, 1.0) as f32;
    Conflict {
        total: amount(zv.hypot(za)),
        valence: amount(zv),
        arousal: amount(za),
    }
}

/// One unsmoothed fusion step.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct FusedStep {
    /// Fused valence in [-1, 1]; `None` when neither modality is present.
    pub valence: Option<f32>,
    /// Fused arousal in [-1, 1]; `None` when neither modality is present.
    pub arousal: Option<f32>,
    /// The gates used.
    pub gates: Gates,
    /// Raw (unsmoothed) conflict; zero unless both modalities are present.
    pub conflict_raw: Conflict,
}

/// Fuses one face estimate and one voice estimate (either may be `None` or have reliability
/// 0): `x = g_face·x_face + g_voice·x_voice` per dimension with [`gates`], plus
/// [`raw_conflict`].
pub fn fuse_step(face: Option<Estimate>, voice: Option<Estimate>, p: &FusionParams) -> FusedStep {
    let f = face.and_then(Estimate::sanitized);
    let v = voice.and_then(Estimate::sanitized);
    let g = gates(
        f.map_or(0.0, |e| e.reliability),
        v.map_or(0.0, |e| e.reliability),
        p,
    );
    if f.is_none() && v.is_none() {
        return FusedStep {
            valence: None,
            arousal: None,
            gates: g,
            conflict_raw: Conflict::ZERO,
        };
    }
    let mix = |w: [f32; 2], xf: f32, xv: f32| (w[FACE] * xf + w[VOICE] * xv).clamp(-1.0, 1.0);
    let (fv, fa) = f.map_or((0.0, 0.0), |e| (e.valence, e.arousal));
    let (vv, va) = v.map_or((0.0, 0.0), |e| (e.valence, e.arousal));
    FusedStep {
        valence: Some(mix(g.valence, fv, vv)),
        arousal: Some(mix(g.arousal, fa, va)),
        gates: g,
        conflict_raw: raw_conflict(f, v, p),
    }
}

// ---------------------------------------------------------------------------------------------
// One-euro smoother
// ---------------------------------------------------------------------------------------------

/// Exponential-smoothing factor for a first-order low-pass with `cutoff` Hz over `dt` s:
/// `dt / (dt + 1/(2π·cutoff))`, in [0, 1] for any input.
fn lowpass_alpha(cutoff: f64, dt: f64) -> f64 {
    let tau = 1.0 / (2.0 * PI * cutoff);
    let a = dt / (dt + tau);
    if a.is_nan() { 1.0 } else { a.clamp(0.0, 1.0) }
}

/// `from + a·(to − from)`, kept between `from` and `to` whatever the rounding.
fn step_toward(from: f64, to: f64, a: f64) -> f64 {
    let x = from + a * (to - from);
    x.max(from.min(to)).min(from.max(to))
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct OneEuroState {
    t: f64,
    x: f64,
    dx: f64,
}

/// One-euro filter (Casiez, Roussel, Vogel 2012) on timestamps in seconds, irregular spacing
/// allowed. The first sample passes through; a sample whose timestamp is not at least
/// [`MIN_DT`] after the last accepted one (repeated, backwards, non-finite), or whose value is
/// not finite, is ignored and the last output is returned, so the output never becomes NaN or
/// infinite. Each step moves the output toward the input by a factor in [0, 1]: no overshoot.
#[derive(Debug, Clone, PartialEq)]
pub struct OneEuro {
    params: OneEuroParams,
    state: Option<OneEuroState>,
}

impl OneEuro {
    /// A filter with no history.
    pub fn new(params: OneEuroParams) -> Self {
        Self {
            params,
            state: None,
        }
    }

    /// Filters sample `x` taken at time `t` (s) and returns the filtered value. Before any
    /// accepted sample, a non-finite `x` is returned as is.
    pub fn filter(&mut self, t: f64, x: f32) -> f32 {
        let Some(s) = self.state.as_mut() else {
            if t.is_finite() && x.is_finite() {
                self.state = Some(OneEuroState {
                    t,
                    x: f64::from(x),
                    dx: 0.0,
                });
            }
            return x;
        };
        let dt = t - s.t;
        if !x.is_finite() || !t.is_finite() || dt.is_nan() || dt < MIN_DT {
            return s.x as f32;
        }
        let x = f64::from(x);
        let speed = (x - s.x) / dt;
        s.dx = step_toward(s.dx, speed, lowpass_alpha(self.params.d_cutoff, dt));
        let cutoff = self.params.min_cutoff + self.params.beta * s.dx.abs();
        s.x = step_toward(s.x, x, lowpass_alpha(cutoff, dt));
        s.t = t;
        s.x as f32
    }

    /// The last output, if any sample was accepted.
    pub fn value(&self) -> Option<f32> {
        self.state.map(|s| s.x as f32)
    }

    /// Forgets the history: the next sample passes through.
    pub fn reset(&mut self) {
        self.state = None;
    }
}

// ---------------------------------------------------------------------------------------------
// Conflict events
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
struct Episode {
    start_t: f64,
    peak: f32,
    peak_t: f64,
    /// ∫ smoothed valence conflict dt, ∫ smoothed arousal conflict dt.
    area: [f64; 2],
    confirmed: bool,
}

/// Smooths a track's raw conflict over time and turns it into [`ConflictEvent`]s with
/// hysteresis and a minimum duration.
///
/// Smoothing: `s ← s + (1 − e^(−dt/τ))·(raw − s)` per component, the first sample passing
/// through. Events: idle → pending when `s.total > on`; pending → dropped when `s.total < off`
/// before `min_duration_s` has passed, → started ([`ConflictEvent::Start`]) when it has; started
/// → ended ([`ConflictEvent::End`]) when `s.total < off`. Samples at repeated, backwards or
/// non-finite times are ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictTracker {
    params: ConflictParams,
    last_t: Option<f64>,
    smoothed: Conflict,
    episode: Option<Episode>,
}

impl ConflictTracker {
    /// A tracker with no history.
    pub fn new(params: ConflictParams) -> Self {
        Self {
            params,
            last_t: None,
            smoothed: Conflict::ZERO,
            episode: None,
        }
    }

    /// The current smoothed conflict.
    pub fn smoothed(&self) -> Conflict {
        self.smoothed
    }

    /// Whether an event has started and not yet ended.
    pub fn active(&self) -> bool {
        self.episode.is_some_and(|e| e.confirmed)
    }

    /// Feeds the raw conflict at time `t` (s); returns the event this sample causes, if any.
    /// Non-finite raw components count as 0.
    pub fn update(&mut self, t: f64, raw: Conflict) -> Option<ConflictEvent> {
        if !t.is_finite() {
            return None;
        }
        let clean = |x: f32| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
        let raw = Conflict {
            total: clean(raw.total),
            valence: clean(raw.valence),
            arousal: clean(raw.arousal),
        };
        let dt = match self.last_t {
            None => {
                self.smoothed = raw;
                0.0
            }
            Some(last) => {
                let dt = t - last;
                if dt.is_nan() || dt <= 0.0 {
                    return None;
                }
                let a = if self.params.smoothing_s > 0.0 {
                    1.0 - (-dt / self.params.smoothing_s).exp()
                } else {
                    1.0
                };
                let s = &mut self.smoothed;
                let mv = |from: f32, to: f32| step_toward(from.into(), to.into(), a) as f32;
                s.total = mv(s.total, raw.total);
                s.valence = mv(s.valence, raw.valence);
                s.arousal = mv(s.arousal, raw.arousal);
                dt
            }
        };
        self.last_t = Some(t);
        self.advance(t, dt)
    }

    fn advance(&mut self, t: f64, dt: f64) -> Option<ConflictEvent> {
        let s = self.smoothed;
        let p = self.params;
        let Some(mut ep) = self.episode else {
            if s.total > p.on {
                self.episode = Some(Episode {
                    start_t: t,
                    peak: s.total,
                    peak_t: t,
                    area: [0.0, 0.0],
                    confirmed: false,
                });
                return self.confirm_if_due(t);
            }
            return None;
        };
        ep.area[0] += dt * f64::from(s.valence);
        ep.area[1] += dt * f64::from(s.arousal);
        if s.total > ep.peak {
            ep.peak = s.total;
            ep.peak_t = t;
        }
        if s.total < p.off {
            self.episode = None;
            if !ep.confirmed {
                return None;
            }
            return Some(ConflictEvent::End {
                t,
                peak: ep.peak,
                peak_t: ep.peak_t,
                duration: t - ep.start_t,
                dimension: self.attribute(&ep),
            });
        }
        self.episode = Some(ep);
        self.confirm_if_due(t)
    }

    fn confirm_if_due(&mut self, t: f64) -> Option<ConflictEvent> {
        let mut ep = self.episode?;
        if ep.confirmed || t - ep.start_t < self.params.min_duration_s {
            return None;
        }
        ep.confirmed = true;
        self.episode = Some(ep);
        Some(ConflictEvent::Start {
            t: ep.start_t,
            dimension: self.attribute(&ep),
        })
    }

    /// Time-integrated attribution; the current smoothed values when no time has passed yet.
    fn attribute(&self, ep: &Episode) -> ConflictDimension {
        let ratio = self.params.both_ratio;
        if ep.area[0] + ep.area[1] > 0.0 {
            ConflictDimension::classify(ep.area[0], ep.area[1], ratio)
        } else {
            self.smoothed.dimension(ratio)
        }
    }

    /// Ends the track at `t`: an event in progress ends (dated no earlier than the last
    /// sample), a pending one is dropped, and the history is cleared.
    pub fn close(&mut self, t: f64) -> Option<ConflictEvent> {
        let ep = self.episode.take();
        let last_t = self.last_t;
        let event = ep.filter(|e| e.confirmed).map(|e| {
            let end = match last_t {
                Some(last) if t.is_finite() => t.max(last),
                Some(last) => last,
                None => e.start_t,
            };
            ConflictEvent::End {
                t: end,
                peak: e.peak,
                peak_t: e.peak_t,
                duration: end - e.start_t,
                dimension: self.attribute(&e),
            }
        });
        self.reset();
        event
    }

    /// Forgets everything without reporting.
    pub fn reset(&mut self) {
        self.last_t = None;
        self.smoothed = Conflict::ZERO;
        self.episode = None;
    }
}

// ---------------------------------------------------------------------------------------------
// Per-track fusion
// ---------------------------------------------------------------------------------------------

/// The fused, smoothed output for one face track at one time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FusedOutput {
    /// Smoothed fused valence in [-1, 1]; `None` when neither modality is present.
    pub valence: Option<f32>,
    /// Smoothed fused arousal in [-1, 1]; `None` when neither modality is present.
    pub arousal: Option<f32>,
    /// Smoothed conflict in [0, 1] (overall and per dimension).
    pub conflict: Conflict,
    /// This step's raw conflict.
    pub conflict_raw: Conflict,
    /// Whether a conflict event is in progress.
    pub conflict_active: bool,
    /// This step's gates.
    pub gates: Gates,
    /// Conflict events caused by this step (at most one).
    pub events: Vec<ConflictEvent>,
}

/// Per-face-track fusion state: one-euro smoothers for valence and arousal and a
/// [`ConflictTracker`].
#[derive(Debug, Clone, PartialEq)]
pub struct FaceTrackFusion {
    params: FusionParams,
    valence: OneEuro,
    arousal: OneEuro,
    conflict: ConflictTracker,
    last_value_t: Option<f64>,
}

impl FaceTrackFusion {
    /// A fresh track.
    ///
    /// # Errors
    ///
    /// The [`FusionParams::validate`] error when `params` are out of range.
    pub fn new(params: FusionParams) -> Result<Self, FusionParamError> {
        params.validate()?;
        Ok(Self {
            params,
            valence: OneEuro::new(params.smoother),
            arousal: OneEuro::new(params.smoother),
            conflict: ConflictTracker::new(params.conflict),
            last_value_t: None,
        })
    }

    /// The parameters in use.
    pub fn params(&self) -> &FusionParams {
        &self.params
    }

    /// Fuses the estimates at time `t` (s; stream time, non-decreasing) and smooths the result.
    /// After a gap with no fused value longer than [`FusionParams::stale_after_s`] the
    /// smoothers restart, so old values do not bleed into a new situation.
    pub fn update(
        &mut self,
        t: f64,
        face: Option<Estimate>,
        voice: Option<Estimate>,
    ) -> FusedOutput {
        let step = fuse_step(face, voice, &self.params);
        let events: Vec<ConflictEvent> = self
            .conflict
            .update(t, step.conflict_raw)
            .into_iter()
            .collect();
        let (valence, arousal) = match (step.valence, step.arousal) {
            (Some(v), Some(a)) => {
                if self
                    .last_value_t
                    .is_some_and(|last| t - last > self.params.stale_after_s)
                {
                    self.valence.reset();
                    self.arousal.reset();
                }
                if t.is_finite() && self.last_value_t.is_none_or(|last| t > last) {
                    self.last_value_t = Some(t);
                }
                (
                    Some(self.valence.filter(t, v)),
                    Some(self.arousal.filter(t, a)),
                )
            }
            _ => (None, None),
        };
        FusedOutput {
            valence,
            arousal,
            conflict: self.conflict.smoothed(),
            conflict_raw: step.conflict_raw,
            conflict_active: self.conflict.active(),
            gates: step.gates,
            events,
        }
    }

    /// Ends the track at `t`: closes a conflict event in progress and clears all state.
    pub fn close(&mut self, t: f64) -> Vec<ConflictEvent> {
        let event = self.conflict.close(t);
        self.valence.reset();
        self.arousal.reset();
        self.last_value_t = None;
        event.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error as DeError, MapDeserializer};

    const EPS: f32 = 1e-6;

    /// Deterministic irregular time steps in [5 ms, 80 ms].
    fn irregular_times(n: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        let mut t = 0.0;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                let now = t;
                t += 0.005 + 0.075 * u;
                now
            })
            .collect()
    }

    /// Deterministic noise in [-1, 1].
    fn noise(i: usize) -> f32 {
        let x = (i as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn est(valence: f32, arousal: f32, reliability: f32) -> Option<Estimate> {
        Some(Estimate {
            valence,
            arousal,
            reliability,
            spread: [0.0, 0.0],
        })
    }

    fn params_from(pairs: Vec<(&'static str, f32)>) -> Result<FusionParams, DeError> {
        let de: MapDeserializer<'_, _, DeError> = MapDeserializer::new(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into_deserializer(), v.into_deserializer())),
        );
        FusionParams::deserialize(de)
    }

    // ----- parameters -------------------------------------------------------------------------

    #[test]
    fn defaults_validate() {
        assert_eq!(FusionParams::default().validate(), Ok(()));
    }

    #[test]
    fn deserialize_empty_gives_defaults() {
        let p = params_from(vec![]).unwrap();
        assert_eq!(p, FusionParams::default());
    }

    #[test]
    fn deserialize_overrides_only_given_fields() {
        let p = params_from(vec![("balance_floor", 0.1), ("w_face_valence", 0.8)]).unwrap();
        assert_eq!(p.balance_floor, 0.1);
        assert_eq!(p.w_face_valence, 0.8);
        assert_eq!(p.w_voice_valence, 0.3);
        assert_eq!(p.conflict, ConflictParams::default());
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn deserialize_rejects_unknown_field() {
        assert!(params_from(vec![("w_face_valance", 0.5)]).is_err());
    }

    #[test]
    fn validate_names_the_field() {
        type Edit = fn(&mut FusionParams);
        let cases: Vec<(Edit, &str)> = vec![
            (|p| p.face.score.hi = 0.4, "face.score.hi"),
            (|p| p.face.size_px.lo = 0.0, "face.size_px.lo"),
            (|p| p.face.blur.floor = 1.5, "face.blur.floor"),
            (|p| p.face.yaw.lo = f32::NAN, "face.yaw.lo"),
            (|p| p.voice.snr_db.floor = -0.1, "voice.snr_db.floor"),
            (|p| p.voice.clipping.hi = f32::INFINITY, "voice.clipping.hi"),
            (|p| p.w_voice_arousal = 0.0, "w_voice_arousal"),
            (|p| p.w_face_valence = -1.0, "w_face_valence"),
            (|p| p.balance_floor = 0.6, "balance_floor"),
            (|p| p.balance_floor = 0.35, "balance_floor"),
            (
                |p| p.balance_min_reliability = 1.2,
                "balance_min_reliability",
            ),
            (
                |p| p.balance_full_reliability = 0.1,
                "balance_full_reliability",
            ),
            (|p| p.stale_after_s = 0.0, "stale_after_s"),
            (|p| p.smoother.min_cutoff = 0.0, "smoother.min_cutoff"),
            (|p| p.smoother.beta = -0.1, "smoother.beta"),
            (|p| p.smoother.d_cutoff = f64::NAN, "smoother.d_cutoff"),
            (|p| p.conflict.scale = 0.0, "conflict.scale"),
            (|p| p.conflict.smoothing_s = -1.0, "conflict.smoothing_s"),
            (|p| p.conflict.on = 1.5, "conflict.on"),
            (|p| p.conflict.off = 0.2, "conflict.off"),
            (
                |p| p.conflict.min_duration_s = -0.1,
                "conflict.min_duration_s",
            ),
            (|p| p.conflict.both_ratio = 0.0, "conflict.both_ratio"),
        ];
        for (edit, field) in cases {
            let mut p = FusionParams::default();
            edit(&mut p);
            let err = p.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    // ----- curves and reliabilities -----------------------------------------------------------

    #[test]
    fn ramp_shapes() {
        let r = Ramp::new(10.0, 20.0, 0.2);
        assert_eq!(r.rising(5.0), 0.2);
        assert_eq!(r.rising(10.0), 0.2);
        assert!((r.rising(15.0) - 0.6).abs() < EPS);
        assert_eq!(r.rising(20.0), 1.0);
        assert_eq!(r.rising(1e9), 1.0);
        assert_eq!(r.rising(f32::NAN), 0.2);
        assert_eq!(r.falling(5.0), 1.0);
        assert!((r.falling(15.0) - 0.6).abs() < EPS);
        assert_eq!(r.falling(25.0), 0.2);
        assert_eq!(r.falling(f32::NAN), 0.2);
        let l = Ramp::new(10.0, 1000.0, 0.0);
        assert!((l.rising_log(100.0) - 0.5).abs() < EPS);
        assert_eq!(l.rising_log(0.0), 0.0);
        assert_eq!(l.rising_log(-3.0), 0.0);
        assert_eq!(l.rising_log(f32::INFINITY), 1.0);
    }

    fn frontal_landmarks() -> Landmarks {
        [
            [40.0, 50.0],
            [80.0, 50.0],
            [60.0, 70.0],
            [45.0, 90.0],
            [75.0, 90.0],
        ]
    }

    #[test]
    fn head_pose_frontal_rotated_and_turned() {
        let pose = head_pose(&frontal_landmarks()).unwrap();
        assert!(pose.yaw_ratio.abs() < EPS && pose.roll_deg.abs() < 1e-4);

        // Rotate the whole face by 30° about (60, 70): roll 30°, yaw still 0.
        let (s, c) = 30f32.to_radians().sin_cos();
        let rotated = frontal_landmarks().map(|[x, y]| {
            let (dx, dy) = (x - 60.0, y - 70.0);
            [60.0 + c * dx - s * dy, 70.0 + s * dx + c * dy]
        });
        let pose = head_pose(&rotated).unwrap();
        assert!((pose.roll_deg - 30.0).abs() < 1e-3, "{pose:?}");
        assert!(pose.yaw_ratio.abs() < 1e-5, "{pose:?}");

        // Nose moved 10 px toward the left eye (inter-ocular 40 px): yaw ratio 0.25.
        let mut turned = frontal_landmarks();
        turned[2][0] += 10.0;
        let pose = head_pose(&turned).unwrap();
        assert!((pose.yaw_ratio - 0.25).abs() < EPS);
    }

    #[test]
    fn head_pose_degenerate() {
        let mut same_eyes = frontal_landmarks();
        same_eyes[1] = same_eyes[0];
        assert_eq!(head_pose(&same_eyes), None);
        let mut nan = frontal_landmarks();
        nan[3][1] = f32::NAN;
        assert_eq!(head_pose(&nan), None);
        // Degenerate landmarks give the floors, not a veto.
        let p = FusionParams::default();
        let q = FaceQuality {
            landmarks: Some(same_eyes),
            ..good_face()
        };
        let expected = p.face.yaw.floor * p.face.roll_deg.floor;
        assert!((face_factors(&q, &p).frontal - expected).abs() < EPS);
    }

    fn good_face() -> FaceQuality {
        FaceQuality {
            present: true,
            since_update_s: 0.0,
            score: 0.95,
            size_px: 120.0,
            blur: Some(300.0),
            landmarks: Some(frontal_landmarks()),
            track_age_s: 2.0,
        }
    }

    fn good_voice() -> VoiceQuality {
        VoiceQuality {
            present: true,
            since_update_s: 0.1,
            speech_prob: 0.9,
            snr_db: Some(30.0),
            clipping: 0.0,
        }
    }

    #[test]
    fn face_reliability_cases() {
        let p = FusionParams::default();
        assert_eq!(face_reliability(&good_face(), &p), 1.0);
        let absent = FaceQuality {
            present: false,
            ..good_face()
        };
        assert_eq!(face_reliability(&absent, &p), 0.0);
        let stale = FaceQuality {
            since_update_s: 0.6,
            ..good_face()
        };
        assert_eq!(face_reliability(&stale, &p), 0.0);
        let nan_age = FaceQuality {
            since_update_s: f64::NAN,
            ..good_face()
        };
        assert_eq!(face_reliability(&nan_age, &p), 0.0);
        let tiny = FaceQuality {
            size_px: 20.0,
            ..good_face()
        };
        assert_eq!(face_reliability(&tiny, &p), 0.0);
        // 48 px is half way on the log scale from 24 to 96: factor 0.5.
        let small = FaceQuality {
            size_px: 48.0,
            ..good_face()
        };
        assert!((face_reliability(&small, &p) - 0.5).abs() < 1e-5);
        // Very blurred, new track: floors multiply, 0.25 · 0.5.
        let blurred_new = FaceQuality {
            blur: Some(1.0),
            track_age_s: 0.0,
            ..good_face()
        };
        assert!((face_reliability(&blurred_new, &p) - 0.125).abs() < 1e-6);
        // Without blur or landmarks measured: not penalized.
        let unmeasured = FaceQuality {
            blur: None,
            landmarks: None,
            ..good_face()
        };
        assert_eq!(face_reliability(&unmeasured, &p), 1.0);
    }

    #[test]
    fn voice_reliability_cases() {
        let p = FusionParams::default();
        assert_eq!(voice_reliability(&good_voice(), &p), 1.0);
        let silent = VoiceQuality {
            speech_prob: 0.1,
            ..good_voice()
        };
        assert_eq!(voice_reliability(&silent, &p), 0.0);
        let absent = VoiceQuality {
            present: false,
            ..good_voice()
        };
        assert_eq!(voice_reliability(&absent, &p), 0.0);
        let stale = VoiceQuality {
            since_update_s: 0.51,
            ..good_voice()
        };
        assert_eq!(voice_reliability(&stale, &p), 0.0);
        let noisy_clipped = VoiceQuality {
            snr_db: Some(-5.0),
            clipping: 0.5,
            ..good_voice()
        };
        assert!((voice_reliability(&noisy_clipped, &p) - 0.1 * 0.2).abs() < 1e-6);
        let half = VoiceQuality {
            snr_db: Some(10.0),
            ..good_voice()
        };
        assert!((voice_reliability(&half, &p) - 0.55).abs() < 1e-6);
    }

    fn any_f32() -> impl Strategy<Value = f32> {
        prop_oneof![
            8 => -10.0f32..400.0,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
        ]
    }

    fn any_landmarks() -> impl Strategy<Value = Option<Landmarks>> {
        prop_oneof![
            Just(None),
            proptest::array::uniform5(proptest::array::uniform2(-50.0f32..200.0)).prop_map(Some),
        ]
    }

    prop_compose! {
        fn any_face()(
            present in any::<bool>(),
            since_update_s in -1.0f64..1.0,
            score in any_f32(),
            size_px in any_f32(),
            blur in proptest::option::of(any_f32()),
            landmarks in any_landmarks(),
            track_age_s in any_f32(),
        ) -> FaceQuality {
            FaceQuality { present, since_update_s, score, size_px, blur, landmarks, track_age_s }
        }
    }

    prop_compose! {
        fn any_voice()(
            present in any::<bool>(),
            since_update_s in -1.0f64..1.0,
            speech_prob in any_f32(),
            snr_db in proptest::option::of(any_f32()),
            clipping in any_f32(),
        ) -> VoiceQuality {
            VoiceQuality { present, since_update_s, speech_prob, snr_db, clipping }
        }
    }

    proptest! {
        #[test]
        fn reliabilities_in_unit_interval(face in any_face(), voice in any_voice()) {
            let p = FusionParams::default();
            let rf = face_reliability(&face, &p);
            let rv = voice_reliability(&voice, &p);
            prop_assert!((0.0..=1.0).contains(&rf), "{rf}");
            prop_assert!((0.0..=1.0).contains(&rv), "{rv}");
            if !face.present || face.since_update_s > p.stale_after_s {
                prop_assert_eq!(rf, 0.0);
            }
            if !voice.present || voice.since_update_s > p.stale_after_s {
                prop_assert_eq!(rv, 0.0);
            }
        }

        #[test]
        fn reliabilities_monotone_in_each_signal(
            face in any_face(), voice in any_voice(), up in 0.0f32..100.0,
        ) {
            let p = FusionParams::default();
            let r = face_reliability(&face, &p);
            let better = [
                FaceQuality { score: face.score + up / 100.0, ..face },
                FaceQuality { size_px: face.size_px + up, ..face },
                FaceQuality { blur: face.blur.map(|b| b + up), ..face },
                FaceQuality { track_age_s: face.track_age_s + up / 100.0, ..face },
            ];
            for q in better {
                prop_assert!(face_reliability(&q, &p) >= r - EPS);
            }
            let r = voice_reliability(&voice, &p);
            let better = [
                VoiceQuality { speech_prob: voice.speech_prob + up / 100.0, ..voice },
                VoiceQuality { snr_db: voice.snr_db.map(|s| s + up), ..voice },
                VoiceQuality { clipping: voice.clipping - up / 100.0, ..voice },
            ];
            for q in better {
                prop_assert!(voice_reliability(&q, &p) >= r - EPS);
            }
        }

        #[test]
        fn frontal_factor_falls_with_yaw(shift in 0.0f32..40.0, more in 0.0f32..40.0) {
            let p = FusionParams::default();
            let with_nose_at = |dx: f32| {
                let mut lm = frontal_landmarks();
                lm[2][0] += dx;
                face_factors(&FaceQuality { landmarks: Some(lm), ..good_face() }, &p).frontal
            };
            prop_assert!(with_nose_at(shift + more) <= with_nose_at(shift) + EPS);
            prop_assert!((with_nose_at(shift) - with_nose_at(-shift)).abs() < EPS);
        }
    }

    // ----- gates ------------------------------------------------------------------------------

    #[test]
    fn gates_follow_priors_when_equally_reliable() {
        let p = FusionParams::default();
        let g = gates(1.0, 1.0, &p);
        assert!((g.valence[FACE] - 0.7).abs() < EPS && (g.valence[VOICE] - 0.3).abs() < EPS);
        assert!((g.arousal[FACE] - 0.4).abs() < EPS && (g.arousal[VOICE] - 0.6).abs() < EPS);
    }

    #[test]
    fn gates_absent_modalities_exact() {
        let p = FusionParams::default();
        let only_face = gates(0.3, 0.0, &p);
        assert_eq!(only_face.valence, [1.0, 0.0]);
        assert_eq!(only_face.arousal, [1.0, 0.0]);
        let only_voice = gates(f32::NAN, 0.01, &p);
        assert_eq!(only_voice.valence, [0.0, 1.0]);
        assert_eq!(only_voice.arousal, [0.0, 1.0]);
        assert_eq!(gates(0.0, -1.0, &p), Gates::NONE);
        assert!(!Gates::NONE.any() && only_face.any());
    }

    #[test]
    fn balance_floor_lifts_a_reliable_voice() {
        let p = FusionParams::default();
        // Unfloored valence voice gate 0.15/0.85 ≈ 0.176; both reliabilities ≥ 0.5: floor 0.2.
        let g = gates(1.0, 0.5, &p);
        assert!((g.valence[VOICE] - 0.2).abs() < EPS, "{g:?}");
        assert!((g.valence[FACE] - 0.8).abs() < EPS, "{g:?}");
        // Arousal is not affected (voice leads there anyway).
        assert!((g.arousal[VOICE] - 0.3 / 0.7).abs() < EPS, "{g:?}");
    }

    #[test]
    fn balance_floor_does_not_force_in_an_unreliable_voice() {
        let p = FusionParams::default();
        // Voice reliability 0.1 is below balance_min_reliability: plain r·w weighting.
        let g = gates(1.0, 0.1, &p);
        assert!((g.valence[VOICE] - 0.03 / 0.73).abs() < EPS, "{g:?}");
        assert_eq!(balance_floor(1.0, 0.1, &p), 0.0);
        // Half way up the activation ramp (0.35): half the floor, scaled by smoothstep.
        assert!((balance_floor(0.9, 0.35, &p) - 0.1).abs() < EPS);
    }

    #[test]
    fn floor_above_prior_share_breaks_monotonicity_and_is_rejected() {
        // Why validate() caps the floor at the smaller prior share: with priors 0.9 / 0.1 and a
        // floor of 0.3, raising the face's reliability from 0.3 to 0.45 (voice at 0.9) would
        // lower the face's valence gate, because it switches on the floor for the voice.
        let p = FusionParams {
            w_face_valence: 0.9,
            w_voice_valence: 0.1,
            balance_floor: 0.3,
            ..FusionParams::default()
        };
        assert_eq!(p.validate().unwrap_err().field, "balance_floor");
        let low = gates(0.3, 0.9, &p).valence[FACE];
        let high = gates(0.45, 0.9, &p).valence[FACE];
        assert!(high < low - 0.01, "{low} → {high}");
    }

    fn any_reliability() -> impl Strategy<Value = f32> {
        prop_oneof![
            6 => 0.0f32..=1.0,
            1 => Just(0.0f32),
            1 => Just(1.0f32),
            1 => -1.0f32..2.0,
            1 => Just(f32::NAN),
            1 => 0.0f32..1e-30,
        ]
    }

    prop_compose! {
        /// Valid parameters with random priors, floor and activation range.
        fn any_gate_params()(
            wfv in 0.05f32..1.0, wvv in 0.05f32..1.0, wfa in 0.05f32..1.0, wva in 0.05f32..1.0,
            floor_frac in 0.0f32..=1.0, lo in 0.0f32..0.9, width in 0.01f32..1.0,
        ) -> FusionParams {
            let share = |a: f32, b: f32| a.min(b) / (a + b);
            let max_floor = share(wfv, wvv).min(share(wfa, wva)).min(0.5);
            FusionParams {
                w_face_valence: wfv,
                w_voice_valence: wvv,
                w_face_arousal: wfa,
                w_voice_arousal: wva,
                balance_floor: floor_frac * max_floor,
                balance_min_reliability: lo,
                balance_full_reliability: (lo + width).min(1.0),
                ..FusionParams::default()
            }
        }
    }

    fn gate_checks(g: &Gates, present: bool) -> Result<(), TestCaseError> {
        for pair in [g.valence, g.arousal] {
            for x in pair {
                prop_assert!((0.0..=1.0).contains(&x), "{g:?}");
            }
            let sum = pair[FACE] + pair[VOICE];
            if present {
                prop_assert!((sum - 1.0).abs() <= EPS, "{g:?}");
            } else {
                prop_assert_eq!(sum, 0.0);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn gates_in_unit_interval_and_sum_to_one(
            rf in any_reliability(), rv in any_reliability(), p in any_gate_params(),
        ) {
            prop_assert_eq!(p.validate(), Ok(()));
            let g = gates(rf, rv, &p);
            gate_checks(&g, rf > 0.0 || rv > 0.0)?;
            if rv.is_nan() || rv <= 0.0 {
                prop_assert_eq!(g.valence[VOICE], 0.0);
                prop_assert_eq!(g.arousal[VOICE], 0.0);
                if rf > 0.0 {
                    prop_assert_eq!(g.valence[FACE], 1.0);
                    prop_assert_eq!(g.arousal[FACE], 1.0);
                }
            }
            if rf.is_nan() || rf <= 0.0 {
                prop_assert_eq!(g.valence[FACE], 0.0);
                prop_assert_eq!(g.arousal[FACE], 0.0);
                if rv > 0.0 {
                    prop_assert_eq!(g.valence[VOICE], 1.0);
                    prop_assert_eq!(g.arousal[VOICE], 1.0);
                }
            }
        }

        #[test]
        fn gates_monotone_in_own_reliability(
            a in any_reliability(), b in any_reliability(), other in any_reliability(),
            p in any_gate_params(),
        ) {
            let (lo, hi) = if a.is_nan() || a <= b { (a, b) } else { (b, a) };
            // Face rising, voice fixed.
            let (g0, g1) = (gates(lo, other, &p), gates(hi, other, &p));
            prop_assert!(g1.valence[FACE] >= g0.valence[FACE] - EPS, "{g0:?} {g1:?}");
            prop_assert!(g1.arousal[FACE] >= g0.arousal[FACE] - EPS, "{g0:?} {g1:?}");
            // Voice rising, face fixed.
            let (g0, g1) = (gates(other, lo, &p), gates(other, hi, &p));
            prop_assert!(g1.valence[VOICE] >= g0.valence[VOICE] - EPS, "{g0:?} {g1:?}");
            prop_assert!(g1.arousal[VOICE] >= g0.arousal[VOICE] - EPS, "{g0:?} {g1:?}");
        }

        #[test]
        fn gates_monotone_fine_steps(
            r in 0.0f32..1.0, step in 0.0f32..0.02, other in 0.0f32..=1.0, p in any_gate_params(),
        ) {
            // Small steps around the floor's activation range, where a kink would show.
            let r2 = (r + step).min(1.0);
            prop_assert!(gates(r2, other, &p).valence[FACE] >= gates(r, other, &p).valence[FACE] - EPS);
            prop_assert!(gates(r2, other, &p).arousal[FACE] >= gates(r, other, &p).arousal[FACE] - EPS);
            prop_assert!(gates(other, r2, &p).valence[VOICE] >= gates(other, r, &p).valence[VOICE] - EPS);
            prop_assert!(gates(other, r2, &p).arousal[VOICE] >= gates(other, r, &p).arousal[VOICE] - EPS);
        }

        #[test]
        fn balance_floor_respected_when_both_fully_reliable(
            rf in 0.0f32..=1.0, rv in 0.0f32..=1.0, p in any_gate_params(),
        ) {
            let phi = balance_floor(rf, rv, &p);
            prop_assert!((0.0..=p.balance_floor + EPS).contains(&phi));
            if rf.min(rv) >= p.balance_full_reliability && rf.min(rv) > 0.0 {
                prop_assert!((phi - p.balance_floor).abs() < EPS);
                let g = gates(rf, rv, &p);
                for x in [g.valence, g.arousal].concat() {
                    prop_assert!(x >= p.balance_floor - EPS, "{g:?}");
                }
            }
            if rf.min(rv) <= p.balance_min_reliability {
                prop_assert_eq!(phi, 0.0);
            }
        }
    }

    // ----- fuse_step and conflict -------------------------------------------------------------

    #[test]
    fn fuse_both_absent_gives_no_value() {
        let p = FusionParams::default();
        let s = fuse_step(None, est(0.5, 0.5, 0.0), &p);
        assert_eq!(s.valence, None);
        assert_eq!(s.arousal, None);
        assert_eq!(s.gates, Gates::NONE);
        assert_eq!(s.conflict_raw, Conflict::ZERO);
        let s = fuse_step(est(f32::NAN, 0.0, 1.0), None, &p);
        assert_eq!(s.valence, None);
    }

    #[test]
    fn fuse_one_present_passes_it_through() {
        let p = FusionParams::default();
        let s = fuse_step(est(0.4, -0.2, 0.3), None, &p);
        assert_eq!(s.valence, Some(0.4));
        assert_eq!(s.arousal, Some(-0.2));
        assert_eq!(s.conflict_raw, Conflict::ZERO);
        let s = fuse_step(est(0.9, 0.9, 0.0), est(-0.5, 0.7, 0.8), &p);
        assert_eq!(s.valence, Some(-0.5));
        assert_eq!(s.arousal, Some(0.7));
        assert_eq!(s.gates.valence, [0.0, 1.0]);
    }

    #[test]
    fn fuse_weights_by_gates() {
        let p = FusionParams::default();
        let s = fuse_step(est(1.0, 1.0, 1.0), est(-1.0, -1.0, 1.0), &p);
        assert!((s.valence.unwrap() - 0.4).abs() < EPS); // 0.7 − 0.3
        assert!((s.arousal.unwrap() + 0.2).abs() < EPS); // 0.4 − 0.6
    }

    /// Parameters whose combined base uncertainty is 0.5 in both dimensions.
    fn half_sigma() -> FusionParams {
        let mut p = FusionParams::default();
        p.conflict.face_sigma = [0.3, 0.3];
        p.conflict.voice_sigma = [0.4, 0.4];
        p
    }

    /// Both modalities with base uncertainty 0.4 in both dimensions.
    fn half_sigma_equal() -> FusionParams {
        let mut p = FusionParams::default();
        p.conflict.face_sigma = [0.4, 0.4];
        p.conflict.voice_sigma = [0.4, 0.4];
        p
    }

    #[test]
    fn conflict_reports_the_disagreeing_dimension() {
        let p = half_sigma();
        // Opposite valence, same arousal, both fully reliable: z = 1.2 / 0.5 = 2.4.
        let c = raw_conflict(est(0.6, 0.3, 1.0), est(-0.6, 0.3, 1.0), &p);
        assert_eq!(c.arousal, 0.0);
        assert!((c.valence - 1.44 / 2.44).abs() < EPS, "{c:?}"); // (z/2)² / (1 + (z/2)²)
        assert_eq!(c.total, c.valence);
        assert_eq!(
            c.dimension(p.conflict.both_ratio),
            ConflictDimension::Valence
        );
        // Disagreement at the scale (z = 2) when both are fully reliable: 0.5.
        let c = raw_conflict(est(0.0, 1.0, 1.0), est(0.0, 0.0, 1.0), &p);
        assert!((c.arousal - 0.5).abs() < EPS, "{c:?}");
        // A face of reliability 0.25 counts with four times its variance:
        // σ² = 0.09 / 0.25 + 0.16 = 0.52, z = 1 / sqrt(0.52).
        let c = raw_conflict(est(0.0, 1.0, 0.25), est(0.0, 0.0, 1.0), &p);
        let x = 0.5 / 0.52f64.sqrt();
        assert!(
            (f64::from(c.arousal) - x * x / (1.0 + x * x)).abs() < 1e-5,
            "{c:?}"
        );
        assert_eq!(c.dimension(0.7), ConflictDimension::Arousal);
        let c = raw_conflict(est(0.5, 0.5, 1.0), est(-0.5, -0.5, 1.0), &p);
        assert_eq!(c.dimension(0.7), ConflictDimension::Both);
        assert!(c.total > c.valence);
        // Agreement: none.
        assert_eq!(
            raw_conflict(est(0.2, 0.1, 1.0), est(0.2, 0.1, 1.0), &p),
            Conflict::ZERO
        );
    }

    #[test]
    fn an_unsure_modality_needs_a_larger_disagreement() {
        let p = half_sigma();
        let sure = raw_conflict(est(0.6, 0.0, 1.0), est(-0.4, 0.0, 1.0), &p);
        let jittery = Estimate {
            spread: [0.5, 0.0],
            ..Estimate::default()
        };
        let unsure = raw_conflict(
            Some(Estimate {
                valence: 0.6,
                reliability: 1.0,
                ..jittery
            }),
            est(-0.4, 0.0, 1.0),
            &p,
        );
        // σ grows from 0.5 to sqrt(0.5) ≈ 0.71: z from 2 to 1.41, conflict from 0.5 to 1/3.
        assert!((sure.valence - 0.5).abs() < EPS, "{sure:?}");
        assert!((unsure.valence - 1.0 / 3.0).abs() < 1e-4, "{unsure:?}");
        // The default uncertainties trust the voice's valence least: the same valence gap
        // counts less than the same arousal gap.
        let d = FusionParams::default();
        let on_valence = raw_conflict(est(0.5, 0.0, 1.0), est(-0.5, 0.0, 1.0), &d);
        let on_arousal = raw_conflict(est(0.0, 0.5, 1.0), est(0.0, -0.5, 1.0), &d);
        assert!(on_valence.total < on_arousal.total);
    }

    fn any_estimate() -> impl Strategy<Value = Option<Estimate>> {
        prop_oneof![
            1 => Just(None),
            6 => (-1.5f32..1.5, -1.5f32..1.5, any_reliability())
                .prop_map(|(v, a, r)| est(v, a, r)),
        ]
    }

    proptest! {
        #[test]
        fn conflict_symmetric_and_bounded(f in any_estimate(), v in any_estimate()) {
            // Symmetric when both modalities have the same base uncertainty.
            let same = half_sigma_equal();
            prop_assert_eq!(raw_conflict(f, v, &same), raw_conflict(v, f, &same));
            let p = FusionParams::default();
            let c = raw_conflict(f, v, &p);
            for x in [c.total, c.valence, c.arousal] {
                prop_assert!((0.0..=1.0).contains(&x), "{c:?}");
            }
            prop_assert!(c.total >= c.valence.max(c.arousal));
            let present = |e: Option<Estimate>| e.and_then(Estimate::sanitized).is_some();
            if !present(f) || !present(v) {
                prop_assert_eq!(c, Conflict::ZERO);
            }
        }

        #[test]
        fn fused_value_between_inputs(f in any_estimate(), v in any_estimate()) {
            let p = FusionParams::default();
            let s = fuse_step(f, v, &p);
            let sf = f.and_then(Estimate::sanitized);
            let sv = v.and_then(Estimate::sanitized);
            prop_assert_eq!(s.valence.is_some(), sf.is_some() || sv.is_some());
            prop_assert_eq!(s.conflict_raw, raw_conflict(f, v, &p));
            let present: Vec<Estimate> = sf.into_iter().chain(sv).collect();
            let bounds = |get: fn(&Estimate) -> f32| {
                let lo = present.iter().map(get).fold(f32::INFINITY, f32::min);
                let hi = present.iter().map(get).fold(f32::NEG_INFINITY, f32::max);
                (lo, hi)
            };
            if let (Some(val), Some(aro)) = (s.valence, s.arousal) {
                let (lo, hi) = bounds(|e| e.valence);
                prop_assert!(val >= lo - EPS && val <= hi + EPS);
                let (lo, hi) = bounds(|e| e.arousal);
                prop_assert!(aro >= lo - EPS && aro <= hi + EPS);
            }
        }
    }

    // ----- one-euro ---------------------------------------------------------------------------

    #[test]
    fn one_euro_first_sample_passes_through() {
        let mut f = OneEuro::new(OneEuroParams::default());
        assert_eq!(f.value(), None);
        assert_eq!(f.filter(12.3, 0.42), 0.42);
        assert_eq!(f.value(), Some(0.42));
        f.reset();
        assert_eq!(f.filter(0.0, -0.7), -0.7);
    }

    #[test]
    fn one_euro_repeated_backwards_and_bad_samples_stay_finite() {
        let mut f = OneEuro::new(OneEuroParams::default());
        f.filter(1.0, 0.0);
        let y = f.filter(1.1, 1.0);
        assert!(y > 0.0 && y < 1.0);
        for (t, x) in [
            (1.1, -1.0),
            (1.05, 1.0),
            (0.0, 1.0),
            (1.1 + 1e-9, 1.0),
            (f64::NAN, 1.0),
            (f64::INFINITY, 1.0),
            (f64::NEG_INFINITY, 1.0),
            (2.0, f32::NAN),
            (2.0, f32::INFINITY),
        ] {
            assert_eq!(f.filter(t, x), y, "t={t} x={x}");
        }
        // And it goes on normally afterwards.
        let z = f.filter(1.2, 1.0);
        assert!(z.is_finite() && z > y && z <= 1.0);
        // Just above MIN_DT and a huge gap: still finite.
        let w = f.filter(1.2 + 2.0 * MIN_DT, -1.0);
        assert!(w.is_finite());
        let w = f.filter(1e12, -1.0);
        assert!(w.is_finite() && (-1.0..=z).contains(&w));
    }

    fn step_response(params: OneEuroParams, times: &[f64], from: f32, to: f32) -> Vec<f32> {
        let mut f = OneEuro::new(params);
        times
            .iter()
            .enumerate()
            .map(|(i, &t)| f.filter(t, if i < 10 { from } else { to }))
            .collect()
    }

    #[test]
    fn one_euro_step_converges_monotonically_without_overshoot() {
        for (seed, from, to) in [(1, 0.0, 1.0), (2, 0.8, -0.6), (3, -1.0, 1.0)] {
            let times = irregular_times(200, seed);
            let out = step_response(OneEuroParams::default(), &times, from, to);
            assert!(out[..10].iter().all(|&y| y == from));
            let up = to > from;
            for w in out[9..].windows(2) {
                if up {
                    assert!(w[1] >= w[0] && w[1] <= to, "{w:?}");
                } else {
                    assert!(w[1] <= w[0] && w[1] >= to, "{w:?}");
                }
            }
            // Within 1e-3 of the step after 3 s.
            let settled = times.iter().position(|&t| t > times[10] + 3.0).unwrap();
            assert!(
                out[settled..].iter().all(|&y| (y - to).abs() < 1e-3),
                "seed {seed}"
            );
            // But it does smooth: the first sample after the step is well short of it.
            assert!((out[10] - from).abs() < 0.7 * (to - from).abs());
        }
    }

    #[test]
    fn one_euro_higher_beta_follows_fast_changes_faster() {
        let times = irregular_times(60, 7);
        let slow = OneEuroParams {
            beta: 0.0,
            ..OneEuroParams::default()
        };
        let fast = OneEuroParams {
            beta: 3.0,
            ..OneEuroParams::default()
        };
        let a = step_response(slow, &times, 0.0, 1.0);
        let b = step_response(fast, &times, 0.0, 1.0);
        for i in 11..30 {
            assert!(b[i] > a[i], "i={i}: beta 0 {} vs beta 3 {}", a[i], b[i]);
        }
        let i = times.iter().position(|&t| t > times[10] + 0.2).unwrap();
        assert!(b[i] - a[i] > 0.1, "{} vs {}", a[i], b[i]);
    }

    #[test]
    fn one_euro_reduces_jitter() {
        let times = irregular_times(600, 11);
        let mut f = OneEuro::new(OneEuroParams::default());
        let (mut var_in, mut var_out) = (0.0f64, 0.0f64);
        for (i, &t) in times.iter().enumerate() {
            let x = 0.3 + 0.1 * noise(i);
            let y = f.filter(t, x);
            if i > 100 {
                var_in += f64::from(x - 0.3).powi(2);
                var_out += f64::from(y - 0.3).powi(2);
            }
        }
        assert!(var_out < 0.3 * var_in, "{var_out} vs {var_in}");
    }

    // ----- conflict tracker -------------------------------------------------------------------

    fn uniform(c: f32) -> Conflict {
        Conflict {
            total: c,
            valence: c,
            arousal: c,
        }
    }

    fn valence_only(c: f32) -> Conflict {
        Conflict {
            total: c,
            valence: c,
            arousal: 0.1 * c,
        }
    }

    #[test]
    fn noisy_conflict_around_threshold_gives_one_event() {
        // The shape of the response is checked at a 0.5 s time constant.
        let p = ConflictParams {
            smoothing_s: 0.5,
            ..ConflictParams::default()
        };
        let times = irregular_times(400, 5);
        let mut tracker = ConflictTracker::new(p);
        let mut events = Vec::new();
        let (mut raw_crossings, mut smoothed_crossings) = (0, 0);
        let (mut raw_above, mut smoothed_above) = (false, false);
        let mut last_t = 0.0;
        for (i, &t) in times.iter().enumerate() {
            // 1 s calm, then a raw conflict hovering around the on-threshold (slow wobble plus
            // frame noise), then calm again.
            let raw = if (1.0..12.0).contains(&t) {
                let wobble = (2.0 * PI * t / 1.5).sin() as f32;
                p.on + 0.02 + 0.15 * wobble + 0.1 * noise(i)
            } else {
                0.0
            };
            events.extend(tracker.update(t, uniform(raw)));
            let smoothed = tracker.smoothed().total;
            raw_crossings += usize::from(raw > p.on && !raw_above);
            smoothed_crossings += usize::from(smoothed > p.on && !smoothed_above);
            raw_above = raw > p.on;
            smoothed_above = smoothed > p.on;
            last_t = t;
        }
        assert!(last_t > 14.0);
        // Even the smoothed signal crosses the on-threshold again and again: only the
        // hysteresis (and the minimum duration) keep this one event.
        assert!(raw_crossings > 20, "{raw_crossings}");
        assert!(smoothed_crossings > 3, "{smoothed_crossings}");
        assert_eq!(events.len(), 2, "{events:?}");
        let (
            ConflictEvent::Start { t: start, .. },
            ConflictEvent::End {
                t: end, duration, ..
            },
        ) = (events[0], events[1])
        else {
            panic!("{events:?}");
        };
        assert!(start > 1.0 && start < 3.0 && end > 12.0, "{events:?}");
        assert!((duration - (end - start)).abs() < 1e-9);
    }

    #[test]
    fn clear_pulse_gives_one_start_and_one_end_with_its_peak() {
        // The shape of the response is checked at a 0.5 s time constant.
        let p = ConflictParams {
            smoothing_s: 0.5,
            ..ConflictParams::default()
        };
        let times = irregular_times(300, 9);
        let mut tracker = ConflictTracker::new(p);
        let mut events = Vec::new();
        // Reference smoothing, computed independently.
        let (mut s, mut prev, mut peak, mut peak_t) = (0.0f64, None::<f64>, 0.0f64, 0.0);
        let mut crossed_on = None;
        for &t in &times {
            let raw = if (2.0..4.0).contains(&t) { 0.9 } else { 0.0 };
            if let Some(prev) = prev {
                s += (1.0 - (-(t - prev) / p.smoothing_s).exp()) * (raw - s);
            }
            prev = Some(t);
            if s > peak {
                (peak, peak_t) = (s, t);
            }
            if crossed_on.is_none() && s > f64::from(p.on) {
                crossed_on = Some(t);
            }
            let ev = tracker.update(t, valence_only(raw as f32));
            if ev.is_some() {
                assert!(tracker.active() == matches!(ev, Some(ConflictEvent::Start { .. })));
            }
            events.extend(ev);
        }
        assert_eq!(events.len(), 2, "{events:?}");
        let ConflictEvent::Start {
            t: start,
            dimension,
        } = events[0]
        else {
            panic!("{events:?}");
        };
        assert_eq!(Some(start), crossed_on);
        assert_eq!(dimension, ConflictDimension::Valence);
        let ConflictEvent::End {
            t: end,
            peak: got_peak,
            peak_t: got_peak_t,
            duration,
            dimension,
        } = events[1]
        else {
            panic!("{events:?}");
        };
        assert!(
            (f64::from(got_peak) - peak).abs() < 1e-5,
            "{got_peak} vs {peak}"
        );
        assert!(got_peak > 0.85);
        assert_eq!(got_peak_t, peak_t);
        assert!((3.9..4.1).contains(&got_peak_t));
        assert!(end > 4.0 && (duration - (end - start)).abs() < 1e-12);
        assert_eq!(dimension, ConflictDimension::Valence);
        assert!(!tracker.active());
    }

    #[test]
    fn blip_shorter_than_min_duration_is_dropped() {
        let p = ConflictParams {
            smoothing_s: 0.0,
            ..ConflictParams::default()
        };
        let mut tracker = ConflictTracker::new(p);
        let mut events = Vec::new();
        for i in 0..100 {
            let t = f64::from(i) * 0.033;
            let raw = if (1.0..1.3).contains(&t) { 0.9 } else { 0.0 };
            events.extend(tracker.update(t, uniform(raw)));
        }
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn conflict_attribution_over_the_event() {
        let p = ConflictParams {
            smoothing_s: 0.0,
            min_duration_s: 0.0,
            ..ConflictParams::default()
        };
        let mut tracker = ConflictTracker::new(p);
        let arousal = Conflict {
            total: 0.8,
            valence: 0.1,
            arousal: 0.8,
        };
        assert!(matches!(
            tracker.update(0.0, arousal),
            Some(ConflictEvent::Start {
                t: 0.0,
                dimension: ConflictDimension::Arousal
            })
        ));
        // Then valence for a shorter while: arousal still dominates the event's integral.
        assert_eq!(tracker.update(1.0, arousal), None);
        let valence = Conflict {
            total: 0.8,
            valence: 0.8,
            arousal: 0.1,
        };
        assert_eq!(tracker.update(1.5, valence), None);
        assert!(matches!(
            tracker.update(1.6, Conflict::ZERO),
            Some(ConflictEvent::End {
                dimension: ConflictDimension::Arousal,
                ..
            })
        ));
        // Equal disagreement on both.
        assert!(matches!(
            tracker.update(2.0, uniform(0.9)),
            Some(ConflictEvent::Start {
                dimension: ConflictDimension::Both,
                ..
            })
        ));
    }

    #[test]
    fn conflict_tracker_ignores_bad_times_and_close_ends_event() {
        let p = ConflictParams {
            smoothing_s: 0.0,
            min_duration_s: 0.0,
            ..ConflictParams::default()
        };
        let mut tracker = ConflictTracker::new(p);
        assert!(tracker.update(1.0, uniform(0.9)).is_some());
        assert_eq!(tracker.update(0.5, Conflict::ZERO), None);
        assert_eq!(tracker.update(1.0, Conflict::ZERO), None);
        assert_eq!(tracker.update(f64::NAN, Conflict::ZERO), None);
        assert!(tracker.active());
        assert_eq!(tracker.smoothed(), uniform(0.9));
        let end = tracker.close(3.0);
        assert!(matches!(
            end,
            Some(ConflictEvent::End {
                t: 3.0,
                duration: 2.0,
                peak: 0.9,
                ..
            })
        ));
        assert!(!tracker.active());
        assert_eq!(tracker.smoothed(), Conflict::ZERO);
        assert_eq!(tracker.close(4.0), None);
    }

    // ----- per-track fusion -------------------------------------------------------------------

    #[test]
    fn track_rejects_invalid_params() {
        let p = FusionParams {
            stale_after_s: -1.0,
            ..FusionParams::default()
        };
        assert_eq!(FaceTrackFusion::new(p).unwrap_err().field, "stale_after_s");
    }

    #[test]
    fn track_smooths_fused_output() {
        let mut track = FaceTrackFusion::new(FusionParams::default()).unwrap();
        let times = irregular_times(100, 3);
        let mut out = Vec::new();
        for (i, &t) in times.iter().enumerate() {
            let v = if i < 20 { 0.0 } else { 0.8 };
            out.push(track.update(t, est(v, 0.5, 1.0), None));
        }
        assert_eq!(out[0].valence, Some(0.0));
        assert_eq!(out[0].arousal, Some(0.5));
        let after = out[20].valence.unwrap();
        assert!(after > 0.0 && after < 0.6, "smoothed: {after}");
        assert!((out[99].valence.unwrap() - 0.8).abs() < 1e-3);
        assert!(
            out.iter()
                .all(|o| o.events.is_empty() && o.gates.valence == [1.0, 0.0])
        );
    }

    #[test]
    fn track_without_modalities_has_no_value_and_restarts_after_gap() {
        let mut track = FaceTrackFusion::new(FusionParams::default()).unwrap();
        track.update(0.0, est(0.0, 0.0, 1.0), None);
        track.update(0.1, est(0.0, 0.0, 1.0), None);
        let none = track.update(0.2, None, est(0.9, 0.9, 0.0));
        assert_eq!((none.valence, none.arousal), (None, None));
        assert_eq!(none.gates, Gates::NONE);
        // Back after more than stale_after_s: no lag from the old value.
        let back = track.update(1.0, None, est(0.9, -0.4, 0.7));
        assert_eq!(back.valence, Some(0.9));
        assert_eq!(back.arousal, Some(-0.4));
        assert_eq!(back.gates.arousal, [0.0, 1.0]);
    }

    #[test]
    fn track_reports_conflict_events() {
        let mut track = FaceTrackFusion::new(FusionParams::default()).unwrap();
        let times = irregular_times(200, 13);
        let mut events = Vec::new();
        let mut active_seen = false;
        for &t in &times {
            // Smiling face, angry-sounding voice from 1 s to 3 s; agreeing otherwise.
            let voice = if (1.0..3.0).contains(&t) {
                est(-0.7, 0.6, 0.9)
            } else {
                est(0.6, 0.5, 0.9)
            };
            let out = track.update(t, est(0.7, 0.5, 0.95), voice);
            assert!((0.0..=1.0).contains(&out.conflict.total));
            active_seen |= out.conflict_active;
            events.extend(out.events);
        }
        assert!(active_seen);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(
            events[0],
            ConflictEvent::Start {
                dimension: ConflictDimension::Valence,
                ..
            }
        ));
        assert!(matches!(
            events[1],
            ConflictEvent::End {
                dimension: ConflictDimension::Valence,
                ..
            }
        ));
        assert!(track.close(times[199]).is_empty());
    }

    #[test]
    fn track_close_ends_open_event() {
        let mut track = FaceTrackFusion::new(FusionParams::default()).unwrap();
        for i in 0..60 {
            let t = f64::from(i) / 30.0;
            track.update(t, est(0.8, 0.0, 1.0), est(-0.8, 0.0, 1.0));
        }
        let events = track.close(2.0);
        assert!(
            matches!(events[..], [ConflictEvent::End { t: 2.0, .. }]),
            "{events:?}"
        );
    }
}
