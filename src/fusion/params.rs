//! Fusion parameters: every number of the fusion math, with its default and the reason for it
//! ([`FusionParams`] and its sections [`OneEuroParams`], [`ConflictParams`]), the reliability
//! curves the quality signals go through ([`Ramp`], [`FaceCurves`], [`VoiceCurves`]), and their
//! validation: [`FusionParams::validate`] rejects a value out of range with a
//! [`FusionParamError`] that names the field as the config spells it. `docs/fusion.md` gives
//! the reasons for the defaults.

use serde::{Deserialize, Serialize};
use thiserror::Error;

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
pub(super) fn smoothstep(t: f32) -> f32 {
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

/// Reliability curves of the face signals (see [`FaceQuality`](super::reliability::FaceQuality)
/// for the signals themselves).
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

/// Reliability curves of the voice signals (see
/// [`VoiceQuality`](super::reliability::VoiceQuality)).
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
    /// Disagreement, in units of the combined uncertainty σ (see
    /// [`raw_conflict`](super::conflict::raw_conflict)), that
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::test_support::EPS;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error as DeError, MapDeserializer};

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
}
