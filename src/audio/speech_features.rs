//! Speech-emotion features: librosa-compatible MFCC, averaged over coefficients per frame (the SER model's input recipe).
//!
//! The SER model was trained on
//! `librosa.feature.mfcc(y=window, sr=44100, n_mfcc=13).mean(axis=0)` (librosa 0.10/0.11 defaults):
//!
//! * STFT: `n_fft = 2048`, `hop_length = 512`, periodic Hann window
//!   (`scipy.signal.get_window('hann', 2048, fftbins=True)`), `center=True` with zero
//!   padding of `n_fft / 2` on both sides (`pad_mode='constant'`), so there are
//!   `1 + len / 512` frames;
//! * power spectrum `|STFT|^2`, Slaney-style mel filterbank (128 bands, 0 Hz – 22 050 Hz,
//!   `htk=False`, `norm='slaney'`);
//! * `power_to_db(ref=1.0, amin=1e-10, top_db=80)`: the floor is the maximum over the whole
//!   matrix of the analysed window minus 80 dB;
//! * orthonormal DCT-II along the mel axis, first 13 coefficients;
//! * the model input is the mean of those 13 coefficients per frame, zero-padded to 216 frames.
//!
//! Everything is computed in `f64` (librosa itself works in `f32` after the FFT), which keeps
//! the difference to librosa far below 1e-3.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// Sample rate the SER model expects, in Hz.
pub const SER_SAMPLE_RATE: u32 = 44_100;
/// Length of the analysed window (2.5 s at 44.1 kHz), in samples.
pub const SER_WINDOW_SAMPLES: usize = 110_250;
/// Number of frames of a full window (`1 + 110_250 / 512`), i.e. the model's input length.
pub const SER_FRAMES: usize = 216;
/// Number of MFCC coefficients kept per frame.
pub const N_MFCC: usize = 13;

/// FFT size (librosa default `n_fft`).
const N_FFT: usize = 2048;
/// Hop between frames (librosa default `hop_length`).
const HOP: usize = 512;
/// Number of one-sided spectrum bins.
const N_BINS: usize = N_FFT / 2 + 1;
/// Number of mel bands (librosa default `n_mels`).
const N_MELS: usize = 128;
/// Dynamic range kept by `power_to_db` (`top_db`).
const TOP_DB: f64 = 80.0;
/// Power floor of `power_to_db` (`amin`).
const AMIN: f64 = 1e-10;

/// One triangular mel filter, stored sparsely: `weights[i]` applies to bin `start + i`.
#[derive(Debug, Clone)]
struct MelBand {
    start: usize,
    weights: Vec<f64>,
}

/// Precomputed window, mel filterbank, DCT matrix, FFT plan and scratch buffers; reuse one per stream (no allocation per call after construction).
pub struct MfccExtractor {
    /// Periodic Hann window of length `N_FFT`.
    window: Vec<f64>,
    /// Slaney mel filterbank, `N_MELS` sparse rows over `N_BINS` bins.
    mel_bands: Vec<MelBand>,
    /// Orthonormal DCT-II rows `0..N_MFCC`, each of length `N_MELS` (row-major).
    dct: Vec<f64>,
    /// Forward real FFT of length `N_FFT`.
    fft: Arc<dyn RealToComplex<f64>>,
    /// Windowed frame (FFT input, clobbered by the FFT).
    frame: Vec<f64>,
    /// FFT output, `N_BINS` bins.
    spectrum: Vec<Complex<f64>>,
    /// FFT scratch space.
    fft_scratch: Vec<Complex<f64>>,
    /// Log-mel matrix of the current input, `frames * N_MELS` (row per frame).
    log_mel: Vec<f64>,
    /// MFCCs of the current input, row per frame.
    coeffs: Vec<[f64; N_MFCC]>,
}

impl std::fmt::Debug for MfccExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfccExtractor")
            .field("n_fft", &N_FFT)
            .field("hop", &HOP)
            .field("n_mels", &N_MELS)
            .field("n_mfcc", &N_MFCC)
            .finish_non_exhaustive()
    }
}

impl Default for MfccExtractor {
    /// Same as [`MfccExtractor::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl MfccExtractor {
    /// Builds the window, filterbank, DCT matrix and FFT plan, and sizes the scratch buffers for a full SER window.
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        let spectrum = fft.make_output_vec();
        let fft_scratch = fft.make_scratch_vec();
        Self {
            window: hann_periodic(N_FFT),
            mel_bands: slaney_mel_filterbank(f64::from(SER_SAMPLE_RATE)),
            dct: dct2_ortho_rows(),
            frame: vec![0.0; N_FFT],
            spectrum,
            fft_scratch,
            fft,
            log_mel: Vec::with_capacity(SER_FRAMES * N_MELS),
            coeffs: Vec::with_capacity(SER_FRAMES),
        }
    }

    /// MFCC matrix [frames][13] of `samples` (row per frame), librosa-identical.
    ///
    /// `samples` is mono audio at [`SER_SAMPLE_RATE`]; the whole slice is analysed (the dB
    /// floor is relative to its global maximum). Returns `1 + len / 512` frames, or none for
    /// empty input.
    pub fn mfcc(&mut self, samples: &[f32]) -> Vec<[f32; N_MFCC]> {
        let n_frames = self.compute(samples);
        self.coeffs[..n_frames]
            .iter()
            .map(|row| row.map(|c| c as f32))
            .collect()
    }

    /// SER model input: per-frame mean of the 13 MFCCs of the last ≤ 2.5 s in `samples` (if longer, use the LAST 110 250 samples), zero-padded to 216.
    ///
    /// Does not allocate: all buffers were sized for a full window in [`MfccExtractor::new`].
    pub fn ser_features(&mut self, samples: &[f32], out: &mut [f32; SER_FRAMES]) {
        let tail = &samples[samples.len().saturating_sub(SER_WINDOW_SAMPLES)..];
        let n_frames = self.compute(tail).min(SER_FRAMES);
        out.fill(0.0);
        for (o, row) in out.iter_mut().zip(&self.coeffs[..n_frames]) {
            *o = (row.iter().sum::<f64>() / N_MFCC as f64) as f32;
        }
    }

    /// Computes the MFCCs of `samples` into `self.coeffs` and returns the number of frames.
    fn compute(&mut self, samples: &[f32]) -> usize {
        let len = samples.len();
        if len == 0 {
            self.log_mel.clear();
            self.coeffs.clear();
            return 0;
        }
        let n_frames = 1 + len / HOP;
        // Within capacity for inputs up to a full SER window, so no reallocation there.
        self.log_mel.resize(n_frames * N_MELS, 0.0);
        self.coeffs.resize(n_frames, [0.0; N_MFCC]);

        let Self {
            window,
            mel_bands,
            dct,
            fft,
            frame,
            spectrum,
            fft_scratch,
            log_mel,
            coeffs,
        } = self;

        let half = N_FFT / 2;
        let mut max_db = f64::NEG_INFINITY;
        for (t, mel_row) in log_mel.chunks_exact_mut(N_MELS).enumerate() {
            // Frame t is centred on sample t * HOP of the input, which is zero-padded by
            // N_FFT / 2 on both sides (librosa center=True, pad_mode='constant').
            // Frame position j maps to input index center + j - half; valid for j in lo..hi.
            let center = t * HOP; // <= len because t <= len / HOP
            let lo = half.saturating_sub(center);
            let hi = N_FFT.min(len + half - center);
            frame[..lo].fill(0.0);
            frame[hi..].fill(0.0);
            for ((f, &w), &x) in frame[lo..hi]
                .iter_mut()
                .zip(&window[lo..hi])
                .zip(&samples[center + lo - half..center + hi - half])
            {
                *f = w * f64::from(x);
            }

            if fft
                .process_with_scratch(frame, spectrum, fft_scratch)
                .is_err()
            {
                // Cannot happen: all three buffers were created for this plan's length. Treat
                // a failure as a silent frame instead of panicking.
                spectrum.fill(Complex::new(0.0, 0.0));
            }

            for (m, band) in mel_row.iter_mut().zip(mel_bands.iter()) {
                let bins = &spectrum[band.start..band.start + band.weights.len()];
                let energy: f64 = band
                    .weights
                    .iter()
                    .zip(bins)
                    .map(|(&w, c)| w * c.norm_sqr())
                    .sum();
                // power_to_db with ref = 1.0: 10 * log10(max(amin, S)) - 10 * log10(1.0)
                let db = 10.0 * energy.max(AMIN).log10();
                max_db = max_db.max(db);
                *m = db;
            }
        }

        let floor = max_db - TOP_DB;
        for (mel_row, out) in log_mel.chunks_exact_mut(N_MELS).zip(coeffs.iter_mut()) {
            for m in mel_row.iter_mut() {
                *m = m.max(floor);
            }
            for (c, dct_row) in out.iter_mut().zip(dct.chunks_exact(N_MELS)) {
                *c = dct_row.iter().zip(mel_row.iter()).map(|(d, m)| d * m).sum();
            }
        }
        n_frames
    }
}

/// Periodic Hann window as `scipy.signal.get_window('hann', n, fftbins=True)` computes it:
/// `0.5 + 0.5 * cos(fac)` with `fac = linspace(-pi, pi, n + 1)`, last point dropped.
fn hann_periodic(n: usize) -> Vec<f64> {
    let step = 2.0 * std::f64::consts::PI / n as f64;
    (0..n)
        .map(|i| 0.5 + 0.5 * (i as f64 * step - std::f64::consts::PI).cos())
        .collect()
}

/// Slaney mel scale (`librosa.hz_to_mel(htk=False)`): linear below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= MIN_LOG_HZ {
        min_log_mel + (hz / MIN_LOG_HZ).ln() / logstep
    } else {
        hz / F_SP
    }
}

/// Inverse of [`hz_to_mel`] (`librosa.mel_to_hz(htk=False)`).
fn mel_to_hz(mel: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        MIN_LOG_HZ * (logstep * (mel - min_log_mel)).exp()
    } else {
        F_SP * mel
    }
}

/// `librosa.filters.mel(sr, n_fft=2048, n_mels=128, fmin=0, fmax=sr/2, htk=False, norm='slaney')`.
///
/// Mirrors librosa's arithmetic, including its `float32` storage of the weights.
fn slaney_mel_filterbank(sr: f64) -> Vec<MelBand> {
    // np.fft.rfftfreq(n_fft, 1/sr) = k * (1 / (n_fft * (1/sr)))
    let bin_hz = 1.0 / (N_FFT as f64 * (1.0 / sr));
    let fft_freqs: Vec<f64> = (0..N_BINS).map(|k| k as f64 * bin_hz).collect();

    // mel_frequencies(n_mels + 2, fmin=0, fmax=sr/2): np.linspace in mel, then back to Hz.
    let n_pts = N_MELS + 2;
    let min_mel = hz_to_mel(0.0);
    let max_mel = hz_to_mel(sr / 2.0);
    let step = (max_mel - min_mel) / (n_pts - 1) as f64;
    let mel_f: Vec<f64> = (0..n_pts)
        .map(|i| {
            let m = if i == n_pts - 1 {
                max_mel
            } else {
                i as f64 * step + min_mel
            };
            mel_to_hz(m)
        })
        .collect();

    (0..N_MELS)
        .map(|i| {
            let fdiff_lo = mel_f[i + 1] - mel_f[i];
            let fdiff_hi = mel_f[i + 2] - mel_f[i + 1];
            let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
            let dense: Vec<f64> = fft_freqs
                .iter()
                .map(|&f| {
                    let lower = -(mel_f[i] - f) / fdiff_lo;
                    let upper = (mel_f[i + 2] - f) / fdiff_hi;
                    let w = 0.0f64.max(lower.min(upper));
                    // librosa stores the triangle in float32, then scales it in place.
                    f64::from((f64::from(w as f32) * enorm) as f32)
                })
                .collect();
            let start = dense.iter().position(|&w| w != 0.0).unwrap_or(0);
            let end = dense
                .iter()
                .rposition(|&w| w != 0.0)
                .map_or(start, |e| e + 1);
            MelBand {
                start,
                weights: dense[start..end].to_vec(),
            }
        })
        .collect()
}

/// Rows `0..N_MFCC` of the orthonormal DCT-II matrix of size `N_MELS` (`scipy.fft.dct(norm='ortho')`).
fn dct2_ortho_rows() -> Vec<f64> {
    let n = N_MELS as f64;
    let mut rows = Vec::with_capacity(N_MFCC * N_MELS);
    for k in 0..N_MFCC {
        let scale = if k == 0 {
            (1.0 / n).sqrt()
        } else {
            (2.0 / n).sqrt()
        };
        for i in 0..N_MELS {
            let arg = std::f64::consts::PI * k as f64 * (2 * i + 1) as f64 / (2.0 * n);
            rows.push(scale * arg.cos());
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixture generated by `tests/fixtures/make_ser_reference.py` (librosa 0.11.0).
    const REFERENCE_JSON: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ser_features_reference.json"
    );
    const TOLERANCE: f64 = 1e-3;

    /// Dense row `band` of the mel filterbank.
    fn mel_row(ex: &MfccExtractor, band: usize) -> Vec<f64> {
        let mut row = vec![0.0; N_BINS];
        let b = &ex.mel_bands[band];
        row[b.start..b.start + b.weights.len()].copy_from_slice(&b.weights);
        row
    }

    /// The deterministic synthetic test signal, same expression and order as the generator script.
    fn synthetic(n: usize) -> Vec<f32> {
        use std::f64::consts::PI;
        (0..SER_WINDOW_SAMPLES)
            .take(n)
            .map(|i| {
                let i = i as f64;
                (0.3 * (2.0 * PI * 220.0 * i / 44100.0).sin()
                    + 0.1 * (2.0 * PI * 3000.0 * i / 44100.0 * (1.0 + i / 110250.0)).sin())
                    as f32
            })
            .collect()
    }

    fn load_reference() -> serde_json::Value {
        let text = std::fs::read_to_string(REFERENCE_JSON).expect("reference fixture readable");
        serde_json::from_str(&text).expect("reference fixture is valid JSON")
    }

    fn as_f64_vec(v: &serde_json::Value) -> Vec<f64> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect()
    }

    /// Max abs errors of `ser_features` and of the first MFCC frames against one reference case.
    fn check_case(case: &serde_json::Value, samples: &[f32]) -> (f64, f64) {
        assert_eq!(
            case["n_samples"].as_u64(),
            Some(samples.len().min(SER_WINDOW_SAMPLES) as u64)
        );
        let mut ex = MfccExtractor::new();
        let mut out = [0.0f32; SER_FRAMES];
        ex.ser_features(samples, &mut out);
        let expected = as_f64_vec(&case["features"]);
        assert_eq!(expected.len(), SER_FRAMES);
        let mut feat_err = 0.0f64;
        for (t, (&got, &want)) in out.iter().zip(&expected).enumerate() {
            let err = (f64::from(got) - want).abs();
            assert!(err <= TOLERANCE, "frame {t}: got {got}, librosa {want}");
            feat_err = feat_err.max(err);
        }
        let mut mfcc_err = 0.0f64;

        let tail = &samples[samples.len().saturating_sub(SER_WINDOW_SAMPLES)..];
        let m = ex.mfcc(tail);
        assert_eq!(Some(m.len() as u64), case["n_frames"].as_u64());
        for (t, want_row) in case["mfcc_first_frames"]
            .as_array()
            .expect("array")
            .iter()
            .enumerate()
        {
            for (c, &want) in as_f64_vec(want_row).iter().enumerate() {
                let err = (f64::from(m[t][c]) - want).abs();
                assert!(
                    err <= TOLERANCE,
                    "mfcc[{t}][{c}]: got {}, librosa {want}",
                    m[t][c]
                );
                mfcc_err = mfcc_err.max(err);
            }
        }
        (feat_err, mfcc_err)
    }

    #[test]
    fn hann_window_is_scipy_periodic_hann() {
        let ex = MfccExtractor::new();
        let w = &ex.window;
        assert_eq!(w.len(), N_FFT);
        // scipy.signal.get_window('hann', 2048, fftbins=True)
        assert!(w[0].abs() < 1e-15);
        assert!((w[1] - 2.353_095_211_904_41e-6).abs() < 1e-15);
        assert!((w[100] - 0.023_346_979_822_903_07).abs() < 1e-15);
        assert!((w[512] - 0.5).abs() < 1e-12);
        assert!((w[1024] - 1.0).abs() < 1e-15);
        for n in 1..N_FFT {
            assert!(
                (w[n] - w[N_FFT - n]).abs() < 1e-12,
                "periodic symmetry at {n}"
            );
        }
    }

    #[test]
    fn mel_filterbank_matches_librosa() {
        let ex = MfccExtractor::new();
        assert_eq!(ex.mel_bands.len(), N_MELS);
        // Nonzero entries of librosa.filters.mel(sr=44100, n_fft=2048) (float32 values).
        let expected: [(usize, &[(usize, f64)]); 4] = [
            (
                0,
                &[(1, 0.022_401_496_767_997_74), (2, 0.019_705_099_985_003_47)],
            ),
            (
                1,
                &[
                    (2, 0.012_548_946_775_496_006),
                    (3, 0.029_557_647_183_537_483),
                    (4, 0.007_156_151_812_523_603_4),
                ],
            ),
            (
                2,
                &[
                    (3, 0.002_696_397_248_655_557_6),
                    (4, 0.025_097_893_550_992_012),
                    (5, 0.017_008_701_339_364_052),
                ],
            ),
            (
                127,
                &[
                    (961, 2.027_231_494_139_414_3e-5),
                    (962, 6.718_948_861_816_898e-5),
                ],
            ),
        ];
        for (band, entries) in expected {
            let row = mel_row(&ex, band);
            assert_eq!(row.len(), N_BINS);
            for &(bin, want) in entries {
                assert!(
                    (row[bin] - want).abs() < 1e-9,
                    "mel[{band}][{bin}] = {}, librosa {want}",
                    row[bin]
                );
            }
        }
        // Support of the first rows and of the last row.
        assert_eq!(ex.mel_bands[0].start, 1);
        assert_eq!(ex.mel_bands[0].weights.len(), 2);
        assert_eq!(ex.mel_bands[1].start, 2);
        assert_eq!(ex.mel_bands[1].weights.len(), 3);
        assert_eq!(ex.mel_bands[127].start, 961);
        assert_eq!(
            ex.mel_bands[127].start + ex.mel_bands[127].weights.len(),
            N_BINS
        );
    }

    #[test]
    fn dct_rows_are_orthonormal() {
        let ex = MfccExtractor::new();
        for a in 0..N_MFCC {
            for b in 0..N_MFCC {
                let dot: f64 = ex.dct[a * N_MELS..(a + 1) * N_MELS]
                    .iter()
                    .zip(&ex.dct[b * N_MELS..(b + 1) * N_MELS])
                    .map(|(x, y)| x * y)
                    .sum();
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn empty_input_gives_zeros() {
        let mut ex = MfccExtractor::new();
        assert!(ex.mfcc(&[]).is_empty());
        let mut out = [1.0f32; SER_FRAMES];
        ex.ser_features(&[], &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn short_input_has_few_frames_and_zero_padding() {
        let mut ex = MfccExtractor::new();
        let x = synthetic(1000);
        assert_eq!(ex.mfcc(&x).len(), 1 + 1000 / HOP);
        let mut out = [1.0f32; SER_FRAMES];
        ex.ser_features(&x, &mut out);
        assert!(out[..2].iter().all(|v| v.is_finite() && *v != 0.0));
        assert!(out[2..].iter().all(|&v| v == 0.0));
        // A single sample still gives one frame, as in librosa.
        assert_eq!(ex.mfcc(&[0.5]).len(), 1);
    }

    #[test]
    fn longer_input_uses_last_window() {
        let mut ex = MfccExtractor::new();
        let x = synthetic(SER_WINDOW_SAMPLES);
        let mut longer: Vec<f32> = (0..5000).map(|i| (i as f32 * 0.01).sin()).collect();
        longer.extend_from_slice(&x);
        let (mut a, mut b) = ([0.0f32; SER_FRAMES], [0.0f32; SER_FRAMES]);
        ex.ser_features(&x, &mut a);
        ex.ser_features(&longer, &mut b);
        assert_eq!(a, b);
        assert!(a.iter().all(|&v| v != 0.0));
    }

    #[test]
    fn parity_synthetic_full_window() {
        let reference = load_reference();
        let err = check_case(
            &reference["cases"]["synthetic_full"],
            &synthetic(SER_WINDOW_SAMPLES),
        );
        println!(
            "synthetic_full: max abs error features {:.3e}, mfcc first frames {:.3e}",
            err.0, err.1
        );
    }

    #[test]
    fn parity_synthetic_30000_samples() {
        let reference = load_reference();
        let err = check_case(&reference["cases"]["synthetic_30000"], &synthetic(30_000));
        println!(
            "synthetic_30000: max abs error features {:.3e}, mfcc first frames {:.3e}",
            err.0, err.1
        );
    }

    #[test]
    fn parity_short_1000_samples() {
        let reference = load_reference();
        let err = check_case(&reference["cases"]["short_1000"], &synthetic(1000));
        println!(
            "short_1000: max abs error features {:.3e}, mfcc first frames {:.3e}",
            err.0, err.1
        );
    }

    /// Real speech (RAVDESS) parity; needs the raw f32 input written by the generator script,
    /// which is too large to commit, so the test is skipped when it is absent.
    #[test]
    fn parity_speech_clip_if_available() {
        let reference = load_reference();
        let case = &reference["cases"]["speech"];
        let Some(raw_name) = case["raw_input"].as_str() else {
            println!("no speech case in the reference fixture; skipped");
            return;
        };
        let path = format!("{}/tests/fixtures/{raw_name}", env!("CARGO_MANIFEST_DIR"));
        let Ok(bytes) = std::fs::read(&path) else {
            println!("{path} missing (run make_ser_reference.py); speech parity skipped");
            return;
        };
        let samples: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let err = check_case(case, &samples);
        println!(
            "speech: max abs error features {:.3e}, mfcc first frames {:.3e}",
            err.0, err.1
        );
    }
}
