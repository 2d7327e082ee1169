//! Gates: the mixing weights of the two modalities per dimension. Reliabilities and the
//! per-dimension priors give `g ∝ r·w`, and a balance floor ([`balance_floor`]) keeps either
//! modality from silencing the other while both are reliable ([`gates`]). [`Estimate`] is one
//! modality's input to a fusion step (value, reliability, spread).
//!
//! Pure and allocation-free; NaN and negative reliabilities count as absent.

use serde::Serialize;

use super::params::{FusionParams, smoothstep};

/// Index of the face in a gate pair (`Gates::valence[FACE]`).
pub const FACE: usize = 0;
/// Index of the voice in a gate pair (`Gates::valence[VOICE]`).
pub const VOICE: usize = 1;

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

/// One modality's estimate for one face and time step.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Estimate {
    /// Valence in [-1, 1] (clamped).
    pub valence: f32,
    /// Arousal in [-1, 1] (clamped).
    pub arousal: f32,
    /// Reliability in [0, 1], e.g. from
    /// [`face_reliability`](super::reliability::face_reliability) or
    /// [`voice_reliability`](super::reliability::voice_reliability); 0 means absent.
    pub reliability: f32,
    /// Uncertainty of this estimate beyond the modality's base uncertainty
    /// ([`ConflictParams::face_sigma`](super::params::ConflictParams::face_sigma) /
    /// [`ConflictParams::voice_sigma`](super::params::ConflictParams::voice_sigma)), standard
    /// deviation per [valence, arousal], ≥ 0: the spread of the modality's recent estimates, the
    /// classifier's entropy. Only the conflict uses it.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::test_support::{EPS, any_reliability};
    use proptest::prelude::*;

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
}
