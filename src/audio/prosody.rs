//! Prosody: loudness, pitch, voicing, rate and spectral shape of a speech window, and a linear head that maps them to arousal (and weakly valence).
//!
//! Frames are 10 ms apart. Per frame the extractor computes an RMS level
//! (dBFS), a YIN pitch estimate (60–500 Hz; cumulative-mean-normalised
//! difference function computed through an FFT cross-correlation; the first dip
//! under 0.15, else the global minimum; parabolic interpolation) and a 32 ms
//! Hann-windowed power spectrum. Frames within 30 dB of the window's loudest
//! frame (and above -80 dBFS) are *active*; active frames whose YIN dip is
//! under 0.3 are *voiced*. The window-level statistics in [`FEATURE_NAMES`] are
//! pooled over those frames.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

/// Sample rate (Hz) the extractor expects: mono f32, nominally in [-1, 1].
pub const PROSODY_RATE: u32 = 16_000;

/// Number of features returned by [`ProsodyExtractor::features`].
pub const N_FEATURES: usize = 15;

/// Feature names, in the order of [`ProsodyExtractor::features`].
///
/// * `loud_mean_db`: mean frame RMS level over voiced frames (dBFS).
/// * `loud_std_db`: standard deviation of the frame level over active frames (dB).
/// * `loud_range_db`: 95th minus 5th percentile of the frame level over active frames (dB).
/// * `f0_mean_st`: mean F0 over voiced frames, semitones relative to 100 Hz.
/// * `f0_std_st`: standard deviation of F0 over voiced frames (semitones).
/// * `f0_range_st`: 90th minus 10th percentile of F0 over voiced frames (semitones).
/// * `f0_delta_st`: mean absolute F0 change between consecutive voiced frames,
///   each step capped at 2 semitones (jitter-like micro-variability).
/// * `voiced_frac`: voiced frames / all frames.
/// * `voicing_strength`: mean of 1 − (YIN dip) over voiced frames (periodicity, 0..1).
/// * `syllable_rate`: loudness peaks (≥ 3 dB prominence, voiced) per second of active speech.
/// * `onset_rate`: voiced runs of ≥ 50 ms starting in the window, per second of window.
/// * `centroid_khz`: mean spectral centroid (0–8 kHz) over voiced frames (kHz).
/// * `alpha_ratio_db`: mean over voiced frames of energy 1–5 kHz over energy 50 Hz–1 kHz (dB).
/// * `hammarberg_db`: mean over voiced frames of peak level 0–2 kHz minus peak level 2–5 kHz (dB).
/// * `spectral_slope_db_khz`: mean over voiced frames of the least-squares slope of the
///   band levels of ten 500 Hz bands over 0.1–5.1 kHz (dB per kHz; band energies, not
///   per-bin dB, so the harmonics dominate rather than the noise between them).
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "loud_mean_db",
    "loud_std_db",
    "loud_range_db",
    "f0_mean_st",
    "f0_std_st",
    "f0_range_st",
    "f0_delta_st",
    "voiced_frac",
    "voicing_strength",
    "syllable_rate",
    "onset_rate",
    "centroid_khz",
    "alpha_ratio_db",
    "hammarberg_db",
    "spectral_slope_db_khz",
];

/// Shortest window [`ProsodyExtractor::features`] accepts (0.25 s at 16 kHz).
pub const MIN_SAMPLES: usize = 4_000;

const RATE: f32 = PROSODY_RATE as f32;
/// Hop between frames: 10 ms.
const HOP: usize = 160;
/// Spectral / loudness frame: 32 ms.
const SPEC_LEN: usize = 512;
const SPEC_BINS: usize = SPEC_LEN / 2 + 1;
/// Smallest YIN lag: 16000 / 500 Hz.
const TAU_MIN: usize = 32;
/// Largest YIN lag: ceil(16000 / 60 Hz).
const TAU_MAX: usize = 267;
/// YIN integration window (24 ms).
const YIN_W: usize = 384;
/// Samples a pitch frame needs: window + largest lag + one more for interpolation.
const PITCH_LEN: usize = YIN_W + TAU_MAX + 2;
/// FFT size for the cross-correlation; ≥ YIN_W + TAU_MAX + 2 so no circular wrap reaches the used lags.
const PITCH_FFT: usize = 1024;
const FRAME_LEN: usize = if PITCH_LEN > SPEC_LEN {
    PITCH_LEN
} else {
    SPEC_LEN
};
/// YIN absolute threshold: the first dip below it picks the period.
const YIN_THRESHOLD: f32 = 0.15;
/// A frame is voiced when the chosen dip (the first one under [`YIN_THRESHOLD`],
/// else the global minimum) is below this.
const VOICING_THRESHOLD: f32 = 0.3;
/// Frames more than this far below the loudest frame are inactive.
const ACTIVE_RANGE_DB: f32 = 30.0;
/// Frames below this level are inactive whatever the window's maximum.
const ABS_FLOOR_DB: f32 = -80.0;
/// Fewer voiced frames than this and the window yields no features.
const MIN_VOICED: usize = 3;
/// Prominence (dB) of a loudness peak counted as a syllable nucleus.
const PEAK_DB: f32 = 3.0;
/// Loudness smoothing for nucleus detection (frames, odd).
const SMOOTH: usize = 5;
/// Minimum length (frames) of a voiced run counted as an onset.
const MIN_RUN: usize = 5;
/// Cap on one frame-to-frame F0 step in the jitter-like feature (semitones).
const DELTA_CAP_ST: f32 = 2.0;
/// Samples are clamped to this magnitude, keeping squares and sums finite.
const SAMPLE_CLAMP: f32 = 1_000.0;

// Spectral band edges in 31.25 Hz bins of the 512-point FFT.
const BIN_50: usize = 2;
const BIN_100: usize = 3;
const BIN_1K: usize = 32;
const BIN_2K: usize = 64;
const BIN_5K: usize = 160;
/// Spectral slope bands: 10 bands of 16 bins (500 Hz) from 94 Hz to 5.09 kHz.
const SLOPE_BANDS: usize = 10;
const SLOPE_BAND_BINS: usize = 16;

/// Reusable extractor (FFT plans and scratch buffers; no allocation per call after new()).
///
/// The per-frame tracks grow to the longest window seen; after that, calls do
/// not allocate.
pub struct ProsodyExtractor {
    spec_fft: Arc<dyn RealToComplex<f32>>,
    pitch_fwd: Arc<dyn RealToComplex<f32>>,
    pitch_inv: Arc<dyn ComplexToReal<f32>>,
    hann: Vec<f32>,
    spec_in: Vec<f32>,
    spec_out: Vec<Complex<f32>>,
    spec_scratch: Vec<Complex<f32>>,
    power: Vec<f32>,
    slope_x: Vec<f32>,
    slope_x_mean: f32,
    slope_sxx: f32,
    pa_in: Vec<f32>,
    pb_in: Vec<f32>,
    pa_out: Vec<Complex<f32>>,
    pb_out: Vec<Complex<f32>>,
    fwd_scratch: Vec<Complex<f32>>,
    inv_scratch: Vec<Complex<f32>>,
    corr: Vec<f32>,
    cumsq: Vec<f64>,
    cmndf: Vec<f32>,
    signal: Vec<f32>,
    db: Vec<f32>,
    smooth: Vec<f32>,
    f0_st: Vec<f32>,
    strength: Vec<f32>,
    yin_ok: Vec<bool>,
    voiced: Vec<bool>,
    active: Vec<bool>,
    centroid: Vec<f32>,
    alpha: Vec<f32>,
    hammar: Vec<f32>,
    slope: Vec<f32>,
    sort_buf: Vec<f32>,
}

impl Default for ProsodyExtractor {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-frame pitch result: (voiced by YIN, F0 in Hz, periodicity 1 − dip).
type PitchFrame = (bool, f32, f32);

impl ProsodyExtractor {
    /// Plans the FFTs and allocates scratch buffers.
    pub fn new() -> Self {
        let mut planner = RealFftPlanner::<f32>::new();
        let spec_fft = planner.plan_fft_forward(SPEC_LEN);
        let pitch_fwd = planner.plan_fft_forward(PITCH_FFT);
        let pitch_inv = planner.plan_fft_inverse(PITCH_FFT);
        let hann = (0..SPEC_LEN)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / SPEC_LEN as f32).cos())
            .collect();
        // Centre frequency (kHz) of each slope band.
        let slope_x: Vec<f32> = (0..SLOPE_BANDS)
            .map(|b| {
                (BIN_100 as f32 + (b as f32 + 0.5) * SLOPE_BAND_BINS as f32 - 0.5) * RATE
                    / SPEC_LEN as f32
                    / 1000.0
            })
            .collect();
        let slope_x_mean = slope_x.iter().sum::<f32>() / slope_x.len() as f32;
        let slope_sxx = slope_x.iter().map(|x| (x - slope_x_mean).powi(2)).sum();
        let spec_scratch = vec![Complex::default(); spec_fft.get_scratch_len()];
        let fwd_scratch = vec![Complex::default(); pitch_fwd.get_scratch_len()];
        let inv_scratch = vec![Complex::default(); pitch_inv.get_scratch_len()];
        Self {
            spec_in: vec![0.0; SPEC_LEN],
            spec_out: vec![Complex::default(); SPEC_BINS],
            spec_scratch,
            power: vec![0.0; SPEC_BINS],
            slope_x,
            slope_x_mean,
            slope_sxx,
            pa_in: vec![0.0; PITCH_FFT],
            pb_in: vec![0.0; PITCH_FFT],
            pa_out: vec![Complex::default(); PITCH_FFT / 2 + 1],
            pb_out: vec![Complex::default(); PITCH_FFT / 2 + 1],
            fwd_scratch,
            inv_scratch,
            corr: vec![0.0; PITCH_FFT],
            cumsq: vec![0.0; PITCH_LEN + 1],
            cmndf: vec![1.0; TAU_MAX + 2],
            spec_fft,
            pitch_fwd,
            pitch_inv,
            hann,
            signal: Vec::new(),
            db: Vec::new(),
            smooth: Vec::new(),
            f0_st: Vec::new(),
            strength: Vec::new(),
            yin_ok: Vec::new(),
            voiced: Vec::new(),
            active: Vec::new(),
            centroid: Vec::new(),
            alpha: Vec::new(),
            hammar: Vec::new(),
            slope: Vec::new(),
            sort_buf: Vec::new(),
        }
    }

    /// Prosody features of one 16 kHz mono window, in [`FEATURE_NAMES`] order.
    ///
    /// Returns `None` when the window is shorter than [`MIN_SAMPLES`], has fewer
    /// than 3 voiced frames (silence, noise) or a feature comes out non-finite.
    /// Non-finite samples are treated as 0 and the window's DC offset is removed.
    pub fn features(&mut self, samples: &[f32]) -> Option<[f32; N_FEATURES]> {
        if samples.len() < MIN_SAMPLES.max(FRAME_LEN) {
            return None;
        }
        self.load_signal(samples);
        // len ≥ FRAME_LEN (checked above), so n_frames ≥ 1 and every frame
        // `f * HOP .. f * HOP + FRAME_LEN` lies inside the signal.
        let n_frames = (self.signal.len() - FRAME_LEN) / HOP + 1;
        self.analyse_frames(n_frames);
        self.mark_frames(n_frames)?;
        let out = self.summarise(n_frames, samples.len())?;
        out.iter().all(|v| v.is_finite()).then_some(out)
    }

    /// Copies the input, replacing non-finite samples, clamping and removing DC.
    fn load_signal(&mut self, samples: &[f32]) {
        self.signal.clear();
        self.signal.extend(samples.iter().map(|&x| {
            if x.is_finite() {
                x.clamp(-SAMPLE_CLAMP, SAMPLE_CLAMP)
            } else {
                0.0
            }
        }));
        let mean =
            self.signal.iter().map(|&x| f64::from(x)).sum::<f64>() / self.signal.len() as f64;
        let mean = mean as f32;
        for x in &mut self.signal {
            *x -= mean;
        }
    }

    /// Fills the per-frame tracks (level, pitch, spectral shape).
    fn analyse_frames(&mut self, n_frames: usize) {
        for v in [
            &mut self.db,
            &mut self.f0_st,
            &mut self.strength,
            &mut self.centroid,
            &mut self.alpha,
            &mut self.hammar,
            &mut self.slope,
        ] {
            v.clear();
        }
        self.yin_ok.clear();
        for f in 0..n_frames {
            let start = f * HOP;
            self.spectral_frame(start);
            let (ok, f0, strength) = self.pitch_frame(start);
            self.yin_ok.push(ok);
            self.f0_st.push(if ok { semitones(f0) } else { 0.0 });
            self.strength.push(strength);
        }
    }

    /// Level and spectral shape of the 32 ms frame starting at `start`.
    fn spectral_frame(&mut self, start: usize) {
        let frame = &self.signal[start..start + SPEC_LEN];
        let energy: f32 = frame.iter().map(|x| x * x).sum::<f32>() / SPEC_LEN as f32;
        self.db.push(10.0 * (energy + 1e-10).log10());
        for ((dst, &x), &w) in self.spec_in.iter_mut().zip(frame).zip(&self.hann) {
            *dst = x * w;
        }
        let ok = self
            .spec_fft
            .process_with_scratch(
                &mut self.spec_in,
                &mut self.spec_out,
                &mut self.spec_scratch,
            )
            .is_ok();
        if !ok {
            // Cannot happen with buffers sized from the plan; keep the tracks aligned anyway.
            for v in [
                &mut self.centroid,
                &mut self.alpha,
                &mut self.hammar,
                &mut self.slope,
            ] {
                v.push(0.0);
            }
            return;
        }
        for (p, c) in self.power.iter_mut().zip(&self.spec_out) {
            *p = c.norm_sqr() + 1e-12;
        }
        let bin_hz = RATE / SPEC_LEN as f32;
        let total: f32 = self.power.iter().sum();
        let weighted: f32 = self
            .power
            .iter()
            .enumerate()
            .map(|(k, p)| k as f32 * bin_hz * p)
            .sum();
        self.centroid.push(weighted / total / 1000.0);
        let low: f32 = self.power[BIN_50..BIN_1K].iter().sum();
        let high: f32 = self.power[BIN_1K..=BIN_5K].iter().sum();
        self.alpha.push(10.0 * (high / low).log10());
        let max_low = self.power[1..BIN_2K].iter().fold(0.0f32, |a, &b| a.max(b));
        let max_high = self.power[BIN_2K..=BIN_5K]
            .iter()
            .fold(0.0f32, |a, &b| a.max(b));
        self.hammar.push(10.0 * (max_low / max_high).log10());
        let x_mean = self.slope_x_mean;
        let sxy: f32 = self.power[BIN_100..BIN_100 + SLOPE_BANDS * SLOPE_BAND_BINS]
            .chunks_exact(SLOPE_BAND_BINS)
            .zip(&self.slope_x)
            .map(|(band, &x)| (x - x_mean) * 10.0 * band.iter().sum::<f32>().log10())
            .sum();
        self.slope.push(sxy / self.slope_sxx);
    }

    /// YIN on the frame starting at `start`.
    fn pitch_frame(&mut self, start: usize) -> PitchFrame {
        let frame = &self.signal[start..start + PITCH_LEN];
        self.pa_in.fill(0.0);
        self.pb_in.fill(0.0);
        self.pa_in[..YIN_W].copy_from_slice(&frame[..YIN_W]);
        self.pb_in[..PITCH_LEN].copy_from_slice(frame);
        self.cumsq[0] = 0.0;
        for (i, &x) in frame.iter().enumerate() {
            self.cumsq[i + 1] = self.cumsq[i] + f64::from(x) * f64::from(x);
        }
        let ok_a = self
            .pitch_fwd
            .process_with_scratch(&mut self.pa_in, &mut self.pa_out, &mut self.fwd_scratch)
            .is_ok();
        let ok_b = self
            .pitch_fwd
            .process_with_scratch(&mut self.pb_in, &mut self.pb_out, &mut self.fwd_scratch)
            .is_ok();
        if !(ok_a && ok_b) {
            return (false, 0.0, 0.0);
        }
        for (a, b) in self.pa_out.iter_mut().zip(&self.pb_out) {
            *a = a.conj() * b;
        }
        // The c2r transform requires real DC and Nyquist bins.
        self.pa_out[0].im = 0.0;
        self.pa_out[PITCH_FFT / 2].im = 0.0;
        if self
            .pitch_inv
            .process_with_scratch(&mut self.pa_out, &mut self.corr, &mut self.inv_scratch)
            .is_err()
        {
            return (false, 0.0, 0.0);
        }
        let scale = 1.0 / PITCH_FFT as f64;
        let e0 = self.cumsq[YIN_W];
        self.cmndf[0] = 1.0;
        let mut running = 0.0f64;
        for tau in 1..=TAU_MAX + 1 {
            let e_tau = self.cumsq[tau + YIN_W] - self.cumsq[tau];
            let d = (e0 + e_tau - 2.0 * f64::from(self.corr[tau]) * scale).max(0.0);
            running += d;
            self.cmndf[tau] = if running > 1e-12 {
                (d * tau as f64 / running) as f32
            } else {
                1.0
            };
        }
        let mut found = None;
        let mut tau = TAU_MIN;
        while tau <= TAU_MAX {
            if self.cmndf[tau] < YIN_THRESHOLD {
                while tau < TAU_MAX && self.cmndf[tau + 1] < self.cmndf[tau] {
                    tau += 1;
                }
                found = Some(tau);
                break;
            }
            tau += 1;
        }
        let tau = found.unwrap_or_else(|| {
            // No dip under the threshold: fall back to the global minimum.
            let mut best = TAU_MIN;
            for t in TAU_MIN..=TAU_MAX {
                if self.cmndf[t] < self.cmndf[best] {
                    best = t;
                }
            }
            best
        });
        let (a, b, c) = (self.cmndf[tau - 1], self.cmndf[tau], self.cmndf[tau + 1]);
        let denom = a - 2.0 * b + c;
        let shift = if denom > 1e-9 {
            (0.5 * (a - c) / denom).clamp(-1.0, 1.0)
        } else {
            0.0
        };
        let period = tau as f32 + shift;
        (
            b < VOICING_THRESHOLD,
            RATE / period,
            (1.0 - b).clamp(0.0, 1.0),
        )
    }

    /// Marks active and voiced frames; `None` when too few frames are voiced.
    fn mark_frames(&mut self, n_frames: usize) -> Option<()> {
        let max_db = self.db.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let threshold = (max_db - ACTIVE_RANGE_DB).max(ABS_FLOOR_DB);
        self.active.clear();
        self.voiced.clear();
        for f in 0..n_frames {
            let active = self.db[f] >= threshold;
            self.active.push(active);
            self.voiced.push(active && self.yin_ok[f]);
        }
        let n_voiced = self.voiced.iter().filter(|&&v| v).count();
        (n_voiced >= MIN_VOICED).then_some(())
    }

    /// Pools the frame tracks into the feature vector.
    fn summarise(&mut self, n_frames: usize, n_samples: usize) -> Option<[f32; N_FEATURES]> {
        let n_voiced = self.voiced.iter().filter(|&&v| v).count();
        let n_active = self.active.iter().filter(|&&v| v).count();
        if n_voiced == 0 || n_active == 0 {
            return None;
        }
        let loud_mean = masked_mean(&self.db, &self.voiced);
        let loud_std = masked_std(&self.db, &self.active);
        let loud_range = masked_percentile(&mut self.sort_buf, &self.db, &self.active, 0.95)
            - masked_percentile(&mut self.sort_buf, &self.db, &self.active, 0.05);
        let f0_mean = masked_mean(&self.f0_st, &self.voiced);
        let f0_std = masked_std(&self.f0_st, &self.voiced);
        let f0_range = masked_percentile(&mut self.sort_buf, &self.f0_st, &self.voiced, 0.9)
            - masked_percentile(&mut self.sort_buf, &self.f0_st, &self.voiced, 0.1);
        let (mut delta_sum, mut delta_n) = (0.0f32, 0usize);
        for f in 1..n_frames {
            if self.voiced[f] && self.voiced[f - 1] {
                delta_sum += (self.f0_st[f] - self.f0_st[f - 1]).abs().min(DELTA_CAP_ST);
                delta_n += 1;
            }
        }
        let f0_delta = if delta_n > 0 {
            delta_sum / delta_n as f32
        } else {
            0.0
        };
        let voiced_frac = n_voiced as f32 / n_frames as f32;
        let strength = masked_mean(&self.strength, &self.voiced);
        let active_s = (n_active * HOP) as f32 / RATE;
        let syllable_rate = self.count_nuclei(n_frames) as f32 / active_s.max(0.25);
        let onset_rate = count_runs(&self.voiced, MIN_RUN) as f32 / (n_samples as f32 / RATE);
        Some([
            loud_mean,
            loud_std,
            loud_range,
            f0_mean,
            f0_std,
            f0_range,
            f0_delta,
            voiced_frac,
            strength,
            syllable_rate,
            onset_rate,
            masked_mean(&self.centroid, &self.voiced),
            masked_mean(&self.alpha, &self.voiced),
            masked_mean(&self.hammar, &self.voiced),
            masked_mean(&self.slope, &self.voiced),
        ])
    }

    /// Counts voiced loudness peaks with ≥ 3 dB prominence on both sides (hysteresis).
    fn count_nuclei(&mut self, n_frames: usize) -> usize {
        let half = SMOOTH / 2;
        self.smooth.clear();
        for f in 0..n_frames {
            let lo = f.saturating_sub(half);
            let hi = (f + half + 1).min(n_frames);
            let s: f32 = self.db[lo..hi].iter().sum();
            self.smooth.push(s / (hi - lo) as f32);
        }
        let voiced_near = |i: usize| {
            let lo = i.saturating_sub(2);
            let hi = (i + 3).min(n_frames);
            self.voiced[lo..hi].iter().any(|&v| v)
        };
        let mut count = 0;
        let mut rising = true;
        let Some(&first) = self.smooth.first() else {
            return 0;
        };
        let mut vmin = first;
        let mut vmax = first;
        let mut imax = 0;
        for (i, &x) in self.smooth.iter().enumerate().skip(1) {
            if rising {
                if x > vmax {
                    vmax = x;
                    imax = i;
                }
                if x < vmax - PEAK_DB {
                    if vmax - vmin >= PEAK_DB && voiced_near(imax) {
                        count += 1;
                    }
                    rising = false;
                    vmin = x;
                }
            } else {
                if x < vmin {
                    vmin = x;
                }
                if x > vmin + PEAK_DB {
                    rising = true;
                    vmax = x;
                    imax = i;
                }
            }
        }
        if rising && vmax - vmin >= PEAK_DB && voiced_near(imax) {
            count += 1;
        }
        count
    }
}

/// Semitones relative to 100 Hz.
fn semitones(f0: f32) -> f32 {
    12.0 * (f0 / 100.0).log2()
}

fn masked_mean(values: &[f32], mask: &[bool]) -> f32 {
    let (sum, n) = values
        .iter()
        .zip(mask)
        .filter(|&(_, &m)| m)
        .fold((0.0f64, 0usize), |(s, n), (&v, _)| {
            (s + f64::from(v), n + 1)
        });
    if n == 0 { 0.0 } else { (sum / n as f64) as f32 }
}

fn masked_std(values: &[f32], mask: &[bool]) -> f32 {
    let mean = f64::from(masked_mean(values, mask));
    let (sum, n) = values
        .iter()
        .zip(mask)
        .filter(|&(_, &m)| m)
        .fold((0.0f64, 0usize), |(s, n), (&v, _)| {
            (s + (f64::from(v) - mean).powi(2), n + 1)
        });
    if n == 0 {
        0.0
    } else {
        (sum / n as f64).sqrt() as f32
    }
}

/// Percentile `q` (0..1, linear interpolation) of the masked values; 0 when none.
fn masked_percentile(buf: &mut Vec<f32>, values: &[f32], mask: &[bool], q: f32) -> f32 {
    buf.clear();
    buf.extend(
        values
            .iter()
            .zip(mask)
            .filter(|&(_, &m)| m)
            .map(|(&v, _)| v),
    );
    if buf.is_empty() {
        return 0.0;
    }
    buf.sort_unstable_by(f32::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (buf.len() - 1) as f32;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(buf.len() - 1);
    let frac = pos - lo as f32;
    buf[lo] * (1.0 - frac) + buf[hi] * frac
}

/// Number of runs of `true` at least `min_len` long.
fn count_runs(mask: &[bool], min_len: usize) -> usize {
    let mut runs = 0;
    let mut len = 0;
    for &m in mask.iter().chain(std::iter::once(&false)) {
        if m {
            len += 1;
        } else {
            if len >= min_len {
                runs += 1;
            }
            len = 0;
        }
    }
    runs
}

/// A linear head: standardisation (mean, std per feature) then weights + bias, output clamped to [-1, 1].
///
/// `predict` returns `clamp(bias + Σ wᵢ·(xᵢ − meanᵢ)/stdᵢ, −1, 1)` (a plain clamp,
/// not tanh, so in-range outputs equal the fitted ridge regression). A feature
/// whose std is ≤ 1e-6 or whose value is non-finite contributes 0; a length
/// mismatch uses the common prefix.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LinearHead {
    /// Per-feature mean used for standardisation.
    pub mean: Vec<f32>,
    /// Per-feature standard deviation used for standardisation.
    pub std: Vec<f32>,
    /// Weights on the standardised features.
    pub weights: Vec<f32>,
    /// Intercept.
    pub bias: f32,
}

impl LinearHead {
    /// Prediction in [-1, 1] for one feature vector (in [`FEATURE_NAMES`] order).
    pub fn predict(&self, features: &[f32]) -> f32 {
        let mut y = self.bias;
        for (((&x, &m), &s), &w) in features
            .iter()
            .zip(&self.mean)
            .zip(&self.std)
            .zip(&self.weights)
        {
            if x.is_finite() && s > 1e-6 {
                y += w * (x - m) / s;
            }
        }
        if y.is_finite() {
            y.clamp(-1.0, 1.0)
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;

    fn idx(name: &str) -> usize {
        FEATURE_NAMES
            .iter()
            .position(|&n| n == name)
            .expect("feature name exists")
    }

    /// Harmonic tone (8 harmonics, 1/k amplitudes) scaled to `amp`.
    fn tone(f0: f32, secs: f32, amp: f32) -> Vec<f32> {
        let n = (secs * RATE) as usize;
        (0..n)
            .map(|i| {
                let t = i as f32 / RATE;
                let s: f32 = (1..=8)
                    .map(|k| (2.0 * PI * k as f32 * f0 * t).sin() / k as f32)
                    .sum();
                amp * s / 2.0
            })
            .collect()
    }

    fn f0_hz(feats: &[f32; N_FEATURES]) -> f32 {
        100.0 * 2f32.powf(feats[idx("f0_mean_st")] / 12.0)
    }

    #[test]
    fn harmonic_tone_f0_within_2_percent() {
        let mut ex = ProsodyExtractor::new();
        for f0 in [75.0, 150.0, 220.0, 400.0] {
            let feats = ex.features(&tone(f0, 1.0, 0.3)).expect("voiced tone");
            let est = f0_hz(&feats);
            assert!((est - f0).abs() / f0 < 0.02, "f0 {f0}: estimated {est}");
            assert!(feats[idx("voiced_frac")] > 0.9, "{feats:?}");
            assert!(feats[idx("f0_std_st")] < 0.2);
        }
    }

    #[test]
    fn silence_and_degenerate_inputs() {
        let mut ex = ProsodyExtractor::new();
        assert!(ex.features(&[]).is_none());
        assert!(ex.features(&[0.0; 100]).is_none());
        assert!(ex.features(&vec![0.0; 40_000]).is_none());
        assert!(ex.features(&vec![f32::NAN; 40_000]).is_none());
        assert!(ex.features(&vec![f32::INFINITY; 40_000]).is_none());
        // Deterministic white-ish noise: aperiodic, so (almost) no voiced frames.
        let mut state = 12345u32;
        let noise: Vec<f32> = (0..40_000)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        if let Some(f) = ex.features(&noise) {
            assert!(f[idx("voiced_frac")] < 0.05, "{f:?}");
        }
        // NaN sprinkled into a tone, and a hard-clipped tone: no panic, still voiced.
        let mut t = tone(150.0, 1.0, 0.3);
        t[100] = f32::NAN;
        t[5000] = f32::NEG_INFINITY;
        assert!(ex.features(&t).is_some());
        let clipped: Vec<f32> = tone(150.0, 1.0, 20.0)
            .iter()
            .map(|x| x.clamp(-1.0, 1.0))
            .collect();
        let f = ex.features(&clipped).expect("clipped tone is voiced");
        assert!((f0_hz(&f) - 150.0).abs() < 3.0);
        // Huge finite values do not produce non-finite features.
        let huge: Vec<f32> = tone(150.0, 1.0, 1e30);
        if let Some(f) = ex.features(&huge) {
            assert!(f.iter().all(|v| v.is_finite()));
        }
        // Half a second works.
        assert!(ex.features(&tone(150.0, 0.5, 0.3)).is_some());
    }

    #[test]
    fn louder_is_louder() {
        let mut ex = ProsodyExtractor::new();
        let quiet = ex.features(&tone(150.0, 1.0, 0.05)).expect("voiced");
        let loud = ex.features(&tone(150.0, 1.0, 0.5)).expect("voiced");
        let i = idx("loud_mean_db");
        assert!(loud[i] > quiet[i] + 15.0, "{} vs {}", loud[i], quiet[i]);
    }

    #[test]
    fn gain_changes_level_only() {
        let mut ex = ProsodyExtractor::new();
        let base = syllables(4.0);
        let quiet: Vec<f32> = base.iter().map(|x| x * 0.1).collect();
        let a = ex.features(&base).expect("voiced");
        let b = ex.features(&quiet).expect("voiced");
        let i = idx("loud_mean_db");
        assert!((a[i] - b[i] - 20.0).abs() < 0.1, "{} vs {}", a[i], b[i]);
        for name in [
            "f0_mean_st",
            "loud_range_db",
            "alpha_ratio_db",
            "syllable_rate",
        ] {
            let j = idx(name);
            assert!((a[j] - b[j]).abs() < 0.05, "{name}: {} vs {}", a[j], b[j]);
        }
    }

    /// 2.5 s tone with a raised-cosine envelope at `rate` Hz (one "syllable" per period).
    fn syllables(rate: f32) -> Vec<f32> {
        tone(140.0, 2.5, 0.3)
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let t = i as f32 / RATE;
                x * (0.1 + 0.9 * (0.5 - 0.5 * (2.0 * PI * rate * t).cos()))
            })
            .collect()
    }

    #[test]
    fn more_onsets_higher_rate() {
        let mut ex = ProsodyExtractor::new();
        let slow = ex.features(&syllables(2.0)).expect("voiced");
        let fast = ex.features(&syllables(5.0)).expect("voiced");
        let i = idx("syllable_rate");
        assert!(fast[i] > slow[i] * 1.8, "{} vs {}", fast[i], slow[i]);
        assert!((fast[i] - 5.0).abs() < 1.0, "{}", fast[i]);
    }

    #[test]
    fn head_predicts_and_clamps() {
        let head = LinearHead {
            mean: vec![1.0, 0.0],
            std: vec![2.0, 0.0],
            weights: vec![0.5, 3.0],
            bias: 0.1,
        };
        assert!((head.predict(&[3.0, 10.0]) - 0.6).abs() < 1e-6);
        assert_eq!(head.predict(&[100.0, 0.0]), 1.0);
        assert!((head.predict(&[f32::NAN, 0.0]) - 0.1).abs() < 1e-6);
        assert!((head.predict(&[]) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn no_reallocation_for_same_length() {
        let mut ex = ProsodyExtractor::new();
        let t = tone(150.0, 2.5, 0.3);
        let _ = ex.features(&t);
        let cap = (
            ex.signal.capacity(),
            ex.db.capacity(),
            ex.sort_buf.capacity(),
        );
        let _ = ex.features(&t);
        assert_eq!(
            cap,
            (
                ex.signal.capacity(),
                ex.db.capacity(),
                ex.sort_buf.capacity()
            )
        );
    }
}
