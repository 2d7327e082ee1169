//! Smoothing over time: the one-euro filter ([`OneEuro`]) of the fused valence and arousal, and
//! the first-order low-pass helpers it and the conflict smoothing share. Timestamps are stream
//! seconds with any spacing; repeated, backwards or non-finite samples are ignored, so the
//! output never becomes NaN or infinite.

use std::f64::consts::PI;

use super::params::OneEuroParams;

/// Time steps shorter than this (seconds) count as a repeated timestamp and are ignored by the
/// time-based filters, so a derivative never divides by (almost) zero.
pub const MIN_DT: f64 = 1e-6;

/// Exponential-smoothing factor for a first-order low-pass with `cutoff` Hz over `dt` s:
/// `dt / (dt + 1/(2π·cutoff))`, in [0, 1] for any input.
fn lowpass_alpha(cutoff: f64, dt: f64) -> f64 {
    let tau = 1.0 / (2.0 * PI * cutoff);
    let a = dt / (dt + tau);
    if a.is_nan() { 1.0 } else { a.clamp(0.0, 1.0) }
}

/// `from + a·(to − from)`, kept between `from` and `to` whatever the rounding.
pub(super) fn step_toward(from: f64, to: f64, a: f64) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::test_support::{irregular_times, noise};

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
}
