//! Integer-factor decimation with a Blackman-windowed-sinc low-pass (used to
//! turn 48 kHz RAVDESS into the 16 kHz the prosody stage expects).
//!
//! The FIR has 241 taps at the input rate and a cutoff at 0.44 × the output
//! rate (7.04 kHz for 48 → 16 kHz). Blackman's transition width is about
//! 5.5 / 241 × 48 kHz ≈ 1.1 kHz, so the response is flat to ≈ 6.5 kHz and
//! reaches its ≈ -74 dB stopband by ≈ 7.6 kHz, below the 8 kHz output Nyquist.
//! The filter is zero-phase (centred), only every `factor`-th output is
//! computed, and the edges are zero-padded.

/// Number of FIR taps (odd, so the filter is centred on a sample).
const TAPS: usize = 241;
/// Cutoff as a fraction of the output sample rate.
const CUTOFF_OF_OUTPUT_RATE: f64 = 0.44;

/// Low-pass filters `input` and keeps every `factor`-th sample.
///
/// `factor` 0 or 1 returns a copy. Output length is `ceil(len / factor)`.
pub fn decimate(input: &[f32], factor: usize) -> Vec<f32> {
    if factor <= 1 {
        return input.to_vec();
    }
    let taps = design(factor);
    let half = TAPS / 2;
    let n_out = input.len().div_ceil(factor);
    let mut out = Vec::with_capacity(n_out);
    for m in 0..n_out {
        let centre = m * factor;
        let mut acc = 0.0f64;
        for (k, &h) in taps.iter().enumerate() {
            // input index = centre + half - k
            let Some(i) = (centre + half).checked_sub(k) else {
                break;
            };
            if let Some(&x) = input.get(i) {
                acc += h * f64::from(x);
            }
        }
        out.push(acc as f32);
    }
    out
}

/// Resamples 48 kHz (or 32 kHz, or 16 kHz) audio to 16 kHz; `None` for other rates.
pub fn to_16k(input: &[f32], rate: u32) -> Option<Vec<f32>> {
    match rate {
        16_000 => Some(input.to_vec()),
        32_000 => Some(decimate(input, 2)),
        48_000 => Some(decimate(input, 3)),
        _ => None,
    }
}

/// Blackman-windowed sinc taps normalised to unit DC gain.
fn design(factor: usize) -> Vec<f64> {
    let fc = CUTOFF_OF_OUTPUT_RATE / factor as f64; // cycles per input sample
    let mid = (TAPS / 2) as f64;
    let n = (TAPS - 1) as f64;
    let mut taps: Vec<f64> = (0..TAPS)
        .map(|i| {
            let x = i as f64 - mid;
            let sinc = if x == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * x).sin() / (std::f64::consts::PI * x)
            };
            let w = 0.42 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n).cos()
                + 0.08 * (4.0 * std::f64::consts::PI * i as f64 / n).cos();
            sinc * w
        })
        .collect();
    let sum: f64 = taps.iter().sum();
    for t in &mut taps {
        *t /= sum;
    }
    taps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(f: f64, rate: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * f * i as f64 / rate).sin() as f32)
            .collect()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn passes_speech_band_rejects_alias_band() {
        let pass = decimate(&sine(1000.0, 48_000.0, 48_000), 3);
        assert_eq!(pass.len(), 16_000);
        assert!((rms(&pass[500..15_500]) - std::f64::consts::FRAC_1_SQRT_2).abs() < 0.01);
        // 12 kHz would alias onto 4 kHz; it must be strongly attenuated.
        let stop = decimate(&sine(12_000.0, 48_000.0, 48_000), 3);
        assert!(rms(&stop[500..15_500]) < 1e-3);
    }
}
