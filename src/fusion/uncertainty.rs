//! How unsure a modality is of itself: the running spread of its own recent estimates and,
//! for a classifier, the entropy of its class probabilities. The conflict score divides a
//! disagreement by these (docs/fusion.md §4), so a modality that jitters or hesitates needs a
//! larger disagreement before a conflict is shown.

/// Exponentially weighted mean and standard deviation of a (valence, arousal) series on
/// timestamps (time constant `tau_s`); the first sample has spread 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    tau_s: f64,
    last_t: Option<f64>,
    mean: [f64; 2],
    var: [f64; 2],
}

impl Spread {
    /// A tracker with no history.
    pub fn new(tau_s: f64) -> Self {
        Self {
            tau_s,
            last_t: None,
            mean: [0.0; 2],
            var: [0.0; 2],
        }
    }

    /// Adds the sample `x` at time `t` (s) and returns the standard deviation per dimension.
    /// Non-finite, repeated or backwards samples leave the state as it is.
    pub fn update(&mut self, t: f64, x: [f32; 2]) -> [f32; 2] {
        if !t.is_finite() || !x.iter().all(|v| v.is_finite()) {
            return self.std();
        }
        match self.last_t {
            None => {
                self.mean = x.map(f64::from);
                self.var = [0.0; 2];
            }
            Some(last) if t > last => {
                let a = if self.tau_s > 0.0 {
                    1.0 - (-(t - last) / self.tau_s).exp()
                } else {
                    1.0
                };
                for ((mean, var), x) in self.mean.iter_mut().zip(&mut self.var).zip(x) {
                    let diff = f64::from(x) - *mean;
                    *mean += a * diff;
                    *var = (1.0 - a) * (*var + a * diff * diff);
                }
            }
            Some(_) => return self.std(),
        }
        self.last_t = Some(t);
        self.std()
    }

    /// The current standard deviation per dimension.
    pub fn std(&self) -> [f32; 2] {
        self.var.map(|v| v.max(0.0).sqrt() as f32)
    }
}

/// Entropy of a probability vector divided by its maximum `ln(n)`: 0 for a one-hot, 1 for a
/// uniform distribution; 0 for fewer than two classes. Negative or non-finite entries count
/// as 0.
pub fn normalized_entropy(probs: &[f32]) -> f32 {
    if probs.len() < 2 {
        return 0.0;
    }
    let clean = |p: &f32| if p.is_finite() { p.max(0.0) } else { 0.0 };
    let total: f32 = probs.iter().map(clean).sum();
    if total <= 0.0 {
        return 1.0;
    }
    let h: f32 = probs
        .iter()
        .map(|p| clean(p) / total)
        .filter(|p| *p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    (h / (probs.len() as f32).ln()).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_series_has_no_spread_and_a_jittery_one_has() {
        let mut steady = Spread::new(2.0);
        let mut jitter = Spread::new(2.0);
        for i in 0..100 {
            let t = f64::from(i) / 30.0;
            steady.update(t, [0.3, -0.2]);
            let s = if i % 2 == 0 { 0.4 } else { -0.4 };
            jitter.update(t, [s, 0.0]);
        }
        assert!(steady.std()[0] < 1e-6);
        let j = jitter.std();
        assert!((0.3..0.45).contains(&j[0]) && j[1] < 1e-6, "{j:?}");
        // Bad samples change nothing.
        let before = jitter.clone();
        jitter.update(f64::NAN, [0.0, 0.0]);
        jitter.update(1.0, [f32::NAN, 0.0]);
        jitter.update(0.5, [1.0, 1.0]);
        assert_eq!(jitter, before);
    }

    #[test]
    fn entropy_is_normalised() {
        assert_eq!(normalized_entropy(&[1.0, 0.0, 0.0]), 0.0);
        assert!((normalized_entropy(&[0.25; 4]) - 1.0).abs() < 1e-6);
        assert_eq!(normalized_entropy(&[1.0]), 0.0);
        assert_eq!(normalized_entropy(&[0.0, 0.0]), 1.0);
        let h = normalized_entropy(&[0.7, 0.2, 0.1, f32::NAN]);
        assert!(h > 0.0 && h < 1.0);
    }
}
