//! Helpers shared by the fusion unit tests: deterministic irregular time steps and noise, and
//! estimates and reliabilities (including the degenerate ones) for the property tests.

use proptest::prelude::*;

use super::gates::Estimate;

/// Tolerance of the comparisons of `f32` results.
pub(super) const EPS: f32 = 1e-6;

/// Deterministic irregular time steps in [5 ms, 80 ms].
pub(super) fn irregular_times(n: usize, seed: u64) -> Vec<f64> {
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
pub(super) fn noise(i: usize) -> f32 {
    let x = (i as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// A present estimate with no spread (reliability as given: 0 or NaN counts as absent).
pub(super) fn est(valence: f32, arousal: f32, reliability: f32) -> Option<Estimate> {
    Some(Estimate {
        valence,
        arousal,
        reliability,
        spread: [0.0, 0.0],
    })
}

/// Reliabilities in [0, 1] with the edge cases: exactly 0 and 1, out of range, NaN, tiny.
pub(super) fn any_reliability() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => 0.0f32..=1.0,
        1 => Just(0.0f32),
        1 => Just(1.0f32),
        1 => -1.0f32..2.0,
        1 => Just(f32::NAN),
        1 => 0.0f32..1e-30,
    ]
}

/// `None` or an estimate with values a little beyond [-1, 1] and any reliability.
pub(super) fn any_estimate() -> impl Strategy<Value = Option<Estimate>> {
    prop_oneof![
        1 => Just(None),
        6 => (-1.5f32..1.5, -1.5f32..1.5, any_reliability())
            .prop_map(|(v, a, r)| est(v, a, r)),
    ]
}
