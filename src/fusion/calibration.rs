//! Per-person calibration: each face track, and the voice, keeps a robust running baseline of
//! its own (valence, arousal), and fusion works on the deviation from it.
//!
//! The idea is OpenFace's person-specific normalisation: a person's resting face or voice is
//! not the population's (a resting face often reads "neutral"/"sad", a calm speaker's prosody
//! reads low arousal), so a running median of the person's own estimates stands in for their
//! neutral state, assuming that at least a quarter to a half of what they show is ordinary.
//! The baseline starts at a population prior and moves towards the person's running quantile
//! as evidence accumulates (shrinkage), so a 4-second clip still gets a sensible value while a
//! minute of someone's resting face is taken as theirs.
//!
//! ```text
//! samples  = reliable estimates, at most one per sample_interval_s, from the last window_s
//! q        = quantile(samples, quantile)                       per dimension
//! w        = n·sample_interval_s / (n·sample_interval_s + prior_weight_s)
//! baseline = prior + w·(q − prior)
//! offset   = clamp(baseline, −max_offset, max_offset)          (calibrated neutral is (0, 0))
//! value    = clamp(raw − offset, −1, 1)
//! ```
//!
//! Pure and deterministic: the same samples give the same baseline; non-finite inputs are
//! ignored and every output is finite and within [−1, 1].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::params::FusionParamError;

pub use crate::record::CalibrationState;

/// Whether calibration is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CalibrationMode {
    /// Raw model values go to fusion unchanged.
    Off,
    /// Each face track and the voice are calibrated against their own running baseline.
    #[default]
    Track,
}

impl CalibrationMode {
    /// The names `FromStr` accepts, for help texts.
    pub const NAMES: &'static [&'static str] = &["off", "track"];

    /// The mode's name, as `FromStr` reads it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Track => "track",
        }
    }
}

impl std::str::FromStr for CalibrationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "track" => Ok(Self::Track),
            _ => Err(format!("unknown calibration mode '{s}' (off or track)")),
        }
    }
}

/// Calibration parameters (`[fusion.calibration]` in the config; docs/fusion.md §0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalibrationParams {
    /// `off` or `track`. Default `track`.
    pub mode: CalibrationMode,
    /// Length (s, stream time) of the window the running quantile is taken over. Default 30:
    /// long enough that a minute-long emotional episode does not become the baseline at once,
    /// short enough to follow a change of lighting, camera or microphone.
    pub window_s: f64,
    /// How many seconds of observation the population prior is worth. Default 5: after 5 s
    /// of reliable estimates the person's own quantile counts as much as the prior (and the
    /// track reports itself warmed up); a 4 s clip moves 44 % of the way, 30 s 86 %.
    pub prior_weight_s: f64,
    /// At most one sample per this many seconds enters the window. Default 0.25 (4 Hz), so
    /// frame rate does not change the weights and a 30 s window holds at most 120 samples.
    pub sample_interval_s: f64,
    /// Quantile of the samples taken as the person's resting value. Default 0.5 (the median):
    /// it holds while at least half of the window is the person's ordinary state and is not
    /// moved by short expressions however strong.
    pub quantile: f32,
    /// Largest correction (per dimension) calibration may apply. Default 0.6: a person who
    /// smiles all the time keeps part of the smile; no baseline can flip a full-scale reading.
    pub max_offset: f32,
    /// Estimates with a lower reliability do not enter the baseline. Default 0.3 (a voice
    /// window without speech, a tiny or blurred face).
    pub min_reliability: f32,
    /// Population prior of the raw face (valence, arousal) of a person at rest.
    pub face_prior: [f32; 2],
    /// Population prior of the raw voice (valence, arousal) of a person speaking normally.
    pub voice_prior: [f32; 2],
}

impl Default for CalibrationParams {
    fn default() -> Self {
        Self {
            mode: CalibrationMode::Track,
            window_s: 30.0,
            prior_weight_s: 5.0,
            sample_interval_s: 0.25,
            quantile: 0.5,
            max_offset: 0.6,
            min_reliability: 0.3,
            face_prior: DEFAULT_FACE_PRIOR,
            voice_prior: DEFAULT_VOICE_PRIOR,
        }
    }
}

/// Default face prior (see docs/fusion.md §0 for how it was fitted).
pub const DEFAULT_FACE_PRIOR: [f32; 2] = [-0.02, 0.02];
/// Default voice prior (see docs/fusion.md §0 for how it was fitted).
pub const DEFAULT_VOICE_PRIOR: [f32; 2] = [0.03, -0.05];

fn invalid(field: &str, reason: String) -> FusionParamError {
    FusionParamError {
        field: format!("calibration.{field}"),
        reason,
    }
}

impl CalibrationParams {
    /// Checks every field; the error names it (`calibration.window_s`, ...).
    pub fn validate(&self) -> Result<(), FusionParamError> {
        let positive = |name: &str, x: f64| {
            if x.is_finite() && x > 0.0 {
                Ok(())
            } else {
                Err(invalid(
                    name,
                    format!("must be a finite number > 0, got {x}"),
                ))
            }
        };
        positive("window_s", self.window_s)?;
        positive("prior_weight_s", self.prior_weight_s)?;
        positive("sample_interval_s", self.sample_interval_s)?;
        if self.sample_interval_s > self.window_s {
            return Err(invalid(
                "sample_interval_s",
                format!(
                    "must not exceed calibration.window_s ({}), got {}",
                    self.window_s, self.sample_interval_s
                ),
            ));
        }
        let within = |name: &str, x: f32, lo: f32, hi: f32| {
            if x.is_finite() && (lo..=hi).contains(&x) {
                Ok(())
            } else {
                Err(invalid(name, format!("must be in [{lo}, {hi}], got {x}")))
            }
        };
        within("quantile", self.quantile, 0.0, 1.0)?;
        within("max_offset", self.max_offset, 0.0, 2.0)?;
        within("min_reliability", self.min_reliability, 0.0, 1.0)?;
        for (name, prior) in [
            ("face_prior", self.face_prior),
            ("voice_prior", self.voice_prior),
        ] {
            for x in prior {
                within(name, x, -1.0, 1.0)?;
            }
        }
        Ok(())
    }
}

/// A running baseline of one person's (valence, arousal) in one modality.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibrator {
    params: CalibrationParams,
    prior: [f32; 2],
    samples: VecDeque<(f64, [f32; 2])>,
    last_sample_t: Option<f64>,
    baseline: [f32; 2],
}

/// The `q` quantile of `values` (linear interpolation between order statistics); `None` when
/// empty. Sorts `values` in place.
fn quantile(values: &mut [f32], q: f32) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f32::total_cmp);
    let pos = f64::from(q.clamp(0.0, 1.0)) * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = (pos - lo as f64) as f32;
    let (a, b) = (values.get(lo)?, values.get(hi)?);
    Some(a + frac * (b - a))
}

impl Calibrator {
    /// A calibrator with no observations, starting from `prior` (clamped to [−1, 1]).
    pub fn new(params: CalibrationParams, prior: [f32; 2]) -> Self {
        let prior = prior.map(|x| {
            if x.is_finite() {
                x.clamp(-1.0, 1.0)
            } else {
                0.0
            }
        });
        let mut c = Self {
            params,
            prior,
            samples: VecDeque::new(),
            last_sample_t: None,
            baseline: prior,
        };
        c.baseline = c.compute_baseline();
        c
    }

    /// A calibrator for a face track.
    pub fn face(params: CalibrationParams) -> Self {
        Self::new(params, params.face_prior)
    }

    /// A calibrator for the voice.
    pub fn voice(params: CalibrationParams) -> Self {
        Self::new(params, params.voice_prior)
    }

    /// Whether calibration is applied at all.
    pub fn enabled(&self) -> bool {
        self.params.mode == CalibrationMode::Track
    }

    /// Feeds a raw estimate seen at stream time `t` (s) with its reliability. Unreliable,
    /// non-finite, too frequent or backwards samples are ignored.
    pub fn observe(&mut self, t: f64, raw: [f32; 2], reliability: f32) {
        if !self.enabled()
            || !t.is_finite()
            || !raw.iter().all(|x| x.is_finite())
            || reliability.is_nan()
            || reliability < self.params.min_reliability
        {
            return;
        }
        if self
            .last_sample_t
            .is_some_and(|last| t - last < self.params.sample_interval_s)
        {
            return;
        }
        self.last_sample_t = Some(t);
        self.samples.push_back((t, raw.map(|x| x.clamp(-1.0, 1.0))));
        let oldest = t - self.params.window_s;
        while self.samples.front().is_some_and(|(ts, _)| *ts < oldest) {
            self.samples.pop_front();
        }
        self.baseline = self.compute_baseline();
    }

    fn observed_s(&self) -> f64 {
        self.samples.len() as f64 * self.params.sample_interval_s
    }

    fn compute_baseline(&self) -> [f32; 2] {
        let observed = self.observed_s();
        let w = (observed / (observed + self.params.prior_weight_s)) as f32;
        let mut column = Vec::with_capacity(self.samples.len());
        let mut out = self.prior;
        for (d, slot) in out.iter_mut().enumerate() {
            column.clear();
            column.extend(self.samples.iter().map(|(_, v)| v[d]));
            if let Some(q) = quantile(&mut column, self.params.quantile) {
                *slot = self.prior[d] + w * (q - self.prior[d]);
            }
            let limit = self.params.max_offset;
            *slot = slot.clamp(-limit, limit);
            if !slot.is_finite() {
                *slot = 0.0;
            }
        }
        out
    }

    /// The calibrated value of `raw`: `raw − baseline`, clamped to [−1, 1]; `raw` unchanged
    /// (clamped) when calibration is off. Non-finite inputs give 0.
    pub fn apply(&self, raw: [f32; 2]) -> [f32; 2] {
        let enabled = self.enabled();
        let mut out = [0.0; 2];
        for ((slot, x), b) in out.iter_mut().zip(raw).zip(self.baseline) {
            let x = if enabled { x - b } else { x };
            *slot = if x.is_finite() {
                x.clamp(-1.0, 1.0)
            } else {
                0.0
            };
        }
        out
    }

    /// The state to report; `None` when calibration is off.
    pub fn state(&self) -> Option<CalibrationState> {
        self.enabled().then(|| CalibrationState {
            baseline: self.baseline,
            observed_s: self.observed_s() as f32,
            warmed_up: self.observed_s() >= self.params.prior_weight_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mode_names_read_back() {
        for name in CalibrationMode::NAMES {
            let mode: CalibrationMode = name.parse().unwrap();
            assert_eq!(mode.name(), *name);
        }
    }

    fn params() -> CalibrationParams {
        CalibrationParams {
            face_prior: [-0.2, 0.1],
            ..CalibrationParams::default()
        }
    }

    #[test]
    fn starts_at_the_prior_and_moves_to_the_person_median() {
        let mut c = Calibrator::face(params());
        assert_eq!(c.apply([-0.2, 0.1]), [0.0, 0.0]);
        assert!(!c.state().unwrap().warmed_up);
        // 4 s of a resting face at (-0.5, -0.4): 17 samples of 0.25 s against the prior's 5 s.
        for i in 0..=16 {
            c.observe(f64::from(i) * 0.25, [-0.5, -0.4], 1.0);
        }
        let b = c.state().unwrap().baseline;
        let w = (17.0 * 0.25) / (17.0 * 0.25 + 5.0);
        assert!((b[0] - (-0.2 + w * -0.3)).abs() < 1e-5, "{b:?}");
        assert!(!c.state().unwrap().warmed_up);
        // A minute: the person's own median dominates and the track is warmed up.
        for i in 17..240 {
            c.observe(f64::from(i) * 0.25, [-0.5, -0.4], 1.0);
        }
        let s = c.state().unwrap();
        assert!(s.warmed_up);
        let w = 30.0 / 35.0;
        assert!((s.baseline[0] - (-0.2 + w * -0.3)).abs() < 1e-3, "{s:?}");
        assert!(c.apply([-0.5, -0.4])[0].abs() < 0.1);
    }

    #[test]
    fn short_expressions_do_not_move_the_median() {
        let mut c = Calibrator::face(params());
        for i in 0..120 {
            // 30 s: resting at 0, with a 5 s smile in the middle.
            let v = if (50..70).contains(&i) { 0.9 } else { 0.0 };
            c.observe(f64::from(i) * 0.25, [v, 0.0], 1.0);
        }
        let b = c.state().unwrap().baseline;
        assert!(b[0].abs() < 0.06, "{b:?}");
        assert!(c.apply([0.9, 0.0])[0] > 0.8);
    }

    #[test]
    fn unreliable_and_too_frequent_samples_are_ignored() {
        let mut c = Calibrator::face(params());
        c.observe(0.0, [0.9, 0.9], 0.1);
        c.observe(f64::NAN, [0.9, 0.9], 1.0);
        c.observe(0.0, [f32::NAN, 0.9], 1.0);
        assert_eq!(c.state().unwrap().observed_s, 0.0);
        c.observe(0.0, [0.9, 0.9], 1.0);
        c.observe(0.1, [0.9, 0.9], 1.0);
        assert_eq!(c.state().unwrap().observed_s, 0.25);
    }

    #[test]
    fn the_window_forgets_old_samples() {
        let mut c = Calibrator::face(params());
        for i in 0..400 {
            let v = if i < 200 { 0.8 } else { -0.3 };
            c.observe(f64::from(i) * 0.25, [v, 0.0], 1.0);
        }
        // The last 30 s are all -0.3.
        let b = c.state().unwrap().baseline;
        assert!((b[0] - (-0.2 + 30.0 / 35.0 * -0.1)).abs() < 0.02, "{b:?}");
    }

    #[test]
    fn the_offset_is_limited() {
        let mut c = Calibrator::face(CalibrationParams {
            max_offset: 0.3,
            ..params()
        });
        for i in 0..200 {
            c.observe(f64::from(i) * 0.25, [0.95, -0.95], 1.0);
        }
        assert_eq!(c.state().unwrap().baseline, [0.3, -0.3]);
    }

    #[test]
    fn off_passes_raw_values_through() {
        let mut c = Calibrator::face(CalibrationParams {
            mode: CalibrationMode::Off,
            ..params()
        });
        c.observe(0.0, [0.5, 0.5], 1.0);
        assert_eq!(c.apply([0.5, -0.7]), [0.5, -0.7]);
        assert!(c.state().is_none());
    }

    #[test]
    fn invalid_parameters_name_the_field() {
        let bad = CalibrationParams {
            window_s: 0.0,
            ..params()
        };
        assert_eq!(bad.validate().unwrap_err().field, "calibration.window_s");
        let bad = CalibrationParams {
            quantile: 1.5,
            ..params()
        };
        assert_eq!(bad.validate().unwrap_err().field, "calibration.quantile");
        let bad = CalibrationParams {
            voice_prior: [0.0, f32::NAN],
            ..params()
        };
        assert_eq!(bad.validate().unwrap_err().field, "calibration.voice_prior");
        assert!(CalibrationParams::default().validate().is_ok());
    }

    #[test]
    fn quantile_interpolates() {
        assert_eq!(quantile(&mut [], 0.5), None);
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&mut [1.0, 2.0], 0.5), Some(1.5));
        assert_eq!(quantile(&mut [1.0, 2.0, 3.0, 4.0, 5.0], 0.25), Some(2.0));
    }

    fn any_f32() -> impl Strategy<Value = f32> {
        prop_oneof![
            -3.0f32..3.0,
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(f32::NEG_INFINITY),
            Just(1.0),
            Just(-1.0),
        ]
    }

    proptest! {
        #[test]
        fn calibrated_values_are_finite_and_in_range(
            samples in proptest::collection::vec(
                (0.0f64..0.6, any_f32(), any_f32(), any_f32()), 0..300),
            raw in (any_f32(), any_f32()),
            quantile_q in 0.0f32..=1.0,
            max_offset in 0.0f32..=2.0,
            prior in (-1.0f32..=1.0, -1.0f32..=1.0),
        ) {
            let p = CalibrationParams {
                quantile: quantile_q,
                max_offset,
                face_prior: [prior.0, prior.1],
                ..CalibrationParams::default()
            };
            prop_assert!(p.validate().is_ok());
            let mut c = Calibrator::face(p);
            let mut t = 0.0;
            for (dt, v, a, r) in samples {
                t += dt;
                c.observe(t, [v, a], r);
                let out = c.apply([raw.0, raw.1]);
                for x in out {
                    prop_assert!(x.is_finite() && (-1.0..=1.0).contains(&x), "{out:?}");
                }
                let s = c.state().unwrap();
                for b in s.baseline {
                    prop_assert!(b.is_finite() && b.abs() <= max_offset + 1e-6);
                }
            }
        }
    }
}
