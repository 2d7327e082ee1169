//! Dumps prosody features of every RAVDESS WAV to CSV.
//!
//! Usage: `cargo run --release --example prosody_features -- [WAV_DIR] [OUT_DIR]`
//! (defaults: ../shared/testdata/speech/ravdess and ./out).
//!
//! Writes `OUT_DIR/features_utt.csv` (whole utterance) and
//! `OUT_DIR/features_win.csv` (2.5 s windows every 0.5 s, as the product slides
//! them; a file shorter than 2.5 s gives one window). Audio is resampled
//! 48 → 16 kHz with the 241-tap Blackman-windowed-sinc decimator in
//! `resample.rs` beside this file. Prints the mean extraction time per 2.5 s window.
//! Robustness / multi-condition data: `PROSODY_GAIN_DB=-20` scales the input,
//! `PROSODY_NOISE_DBFS=-60` adds white noise of that RMS, and
//! `PROSODY_NOISE_COLOR=pink` makes that noise pink.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod resample;

use affectstream::audio::prosody::{FEATURE_NAMES, ProsodyExtractor};

const WIN: usize = 40_000;
const HOP: usize = 8_000;

fn read_wav(path: &Path) -> Result<(Vec<f32>, u32), Box<dyn std::error::Error>> {
    let mut reader = hound::WavReader::open(path)?;
    let spec = reader.spec();
    let ch = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1i64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()?
        }
    };
    let mono = interleaved
        .chunks(ch)
        .map(|c| c.iter().sum::<f32>() / ch as f32)
        .collect();
    Ok((mono, spec.sample_rate))
}

/// Adds white or pink noise scaled to an RMS of `dbfs`.
fn add_noise(audio: &mut [f32], dbfs: f32, pink: bool, rng: &mut u32) {
    let mut noise: Vec<f32> = Vec::with_capacity(audio.len());
    // Paul Kellet's economy pink filter state.
    let (mut b0, mut b1, mut b2) = (0.0f32, 0.0f32, 0.0f32);
    for _ in 0..audio.len() {
        // xorshift32, uniform in [-1, 1]
        *rng ^= *rng << 13;
        *rng ^= *rng >> 17;
        *rng ^= *rng << 5;
        let w = *rng as f32 / u32::MAX as f32 * 2.0 - 1.0;
        noise.push(if pink {
            b0 = 0.99765 * b0 + w * 0.0990460;
            b1 = 0.96300 * b1 + w * 0.2965164;
            b2 = 0.57000 * b2 + w * 1.0526913;
            b0 + b1 + b2 + w * 0.1848
        } else {
            w
        });
    }
    let rms = (noise.iter().map(|v| v * v).sum::<f32>() / noise.len().max(1) as f32).sqrt();
    let scale = 10f32.powf(dbfs / 20.0) / rms.max(1e-12);
    for (x, n) in audio.iter_mut().zip(&noise) {
        *x += n * scale;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let wav_dir = PathBuf::from(
        args.get(1)
            .map_or("../shared/testdata/speech/ravdess", String::as_str),
    );
    let out_dir = PathBuf::from(args.get(2).map_or("out", String::as_str));
    fs::create_dir_all(&out_dir)?;
    let mut files: Vec<PathBuf> = fs::read_dir(&wav_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav")))
        .collect();
    files.sort();

    let header = FEATURE_NAMES.join(",");
    let mut utt = fs::File::create(out_dir.join("features_utt.csv"))?;
    writeln!(utt, "file,actor,emotion,intensity,duration_s,{header}")?;
    let mut win = fs::File::create(out_dir.join("features_win.csv"))?;
    writeln!(win, "file,actor,emotion,intensity,start_s,{header}")?;

    // Optional robustness check: PROSODY_GAIN_DB scales the input.
    let gain_db: f32 = std::env::var("PROSODY_GAIN_DB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let gain = 10f32.powf(gain_db / 20.0);
    // Optional noise condition: PROSODY_NOISE_DBFS adds noise of that RMS level (at 48 kHz,
    // before resampling); PROSODY_NOISE_COLOR=pink makes it pink (-3 dB/octave), else white.
    let noise_dbfs: Option<f32> = std::env::var("PROSODY_NOISE_DBFS")
        .ok()
        .and_then(|v| v.parse().ok());
    let pink = std::env::var("PROSODY_NOISE_COLOR").is_ok_and(|c| c == "pink");
    let mut rng: u32 = 0x9E37_79B9;
    let mut ex = ProsodyExtractor::new();
    let (mut n_win, mut t_win) = (0usize, Duration::ZERO);
    let mut windows: Vec<Vec<f32>> = Vec::new();
    for path in &files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let stem = name.trim_end_matches(".wav");
        let parts: Vec<&str> = stem.split('-').collect();
        if parts.len() != 7 {
            eprintln!("skipping {name}: not a RAVDESS name");
            continue;
        }
        let (emotion, intensity, actor) = (parts[2], parts[3], parts[6]);
        let (mut audio, rate) = read_wav(path)?;
        for x in &mut audio {
            *x *= gain;
        }
        if let Some(db) = noise_dbfs {
            add_noise(&mut audio, db, pink, &mut rng);
        }
        let Some(audio) = resample::to_16k(&audio, rate) else {
            eprintln!("skipping {name}: rate {rate}");
            continue;
        };
        let dur = audio.len() as f32 / 16_000.0;
        let fmt = |f: &[f32]| {
            f.iter()
                .map(|v| format!("{v:.5}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        match ex.features(&audio) {
            Some(f) => writeln!(
                utt,
                "{name},{actor},{emotion},{intensity},{dur:.3},{}",
                fmt(&f)
            )?,
            None => eprintln!("{name}: no utterance features"),
        }
        // Full 2.5 s windows every 0.5 s; a shorter file gives one whole-file window.
        let mut start = 0;
        loop {
            let end = (start + WIN).min(audio.len());
            let t0 = Instant::now();
            let f = ex.features(&audio[start..end]);
            t_win += t0.elapsed();
            n_win += 1;
            if end - start == WIN {
                windows.push(audio[start..end].to_vec());
            }
            if let Some(f) = f {
                let s = start as f32 / 16_000.0;
                writeln!(
                    win,
                    "{name},{actor},{emotion},{intensity},{s:.2},{}",
                    fmt(&f)
                )?;
            }
            if start + HOP + WIN > audio.len() {
                break;
            }
            start += HOP;
        }
    }
    println!(
        "{} files, {} windows, {:.3} ms per window (first pass)",
        files.len(),
        n_win,
        t_win.as_secs_f64() * 1e3 / n_win.max(1) as f64
    );
    // Timing: five warm passes over the full-length 2.5 s windows; report the best.
    let mut best = f64::INFINITY;
    let mut voiced = 0;
    for _ in 0..5 {
        let t0 = Instant::now();
        voiced = windows
            .iter()
            .filter(|w| ex.features(std::hint::black_box(w)).is_some())
            .count();
        best = best.min(t0.elapsed().as_secs_f64() / windows.len().max(1) as f64);
    }
    println!(
        "timing: {:.3} ms per 2.5 s window (best of 5 passes over {} windows, {} voiced)",
        best * 1e3,
        windows.len(),
        voiced
    );
    Ok(())
}
