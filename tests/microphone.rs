//! The cpal microphone path through real ALSA device configurations made here: an asoundrc
//! (in a temporary HOME) whose default PCM is the ALSA `file` plugin reading a RAVDESS WAV
//! from the test media, and one pointing at a sound card that does not exist.
//!
//! ALSA reads its configuration once per process, so each case runs in a child process (this
//! test binary again, one ignored test, with HOME set) and the parent checks it passed.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use affectstream::capture::AudioBlock;
use affectstream::capture::microphone::{Microphone, MicrophoneOptions, OUTPUT_RATES};
use affectstream::capture::resample::Resampler;

const CHILD: &str = "AFFECTSTREAM_MIC_CHILD";

fn wav() -> PathBuf {
    common::testdata().join("speech/ravdess/03-01-06-02-02-01-01.wav")
}

/// Runs the ignored test `name` in a child process with HOME holding the asoundrc that
/// `asoundrc(home)` makes.
fn run_child(name: &str, asoundrc: impl Fn(&Path) -> String) -> std::process::Output {
    let home = common::temp_dir(&format!("mic-{name}"));
    std::fs::write(home.join(".asoundrc"), asoundrc(&home)).unwrap();
    // Something to read while cpal probes the device; the child writes the clip later.
    std::fs::write(home.join("in.raw"), vec![0u8; 4096]).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HOME", &home)
        .env(CHILD, "1")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    std::fs::remove_dir_all(&home).ok();
    out
}

fn assert_child_passed(name: &str, out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {name} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

/// The default PCM is the ALSA `file` plugin over `null`: capture reads `in.raw` beside the
/// asoundrc, in whatever format the client opened the PCM with (the child writes the clip there
/// in the format cpal chose), and playback goes nowhere.
fn file_asoundrc(home: &Path) -> String {
    format!(
        r#"pcm.!default {{
  type file
  slave.pcm "null"
  file "/dev/null"
  infile "{}"
  format "raw"
}}
"#,
        home.join("in.raw").display()
    )
}

#[test]
fn microphone_delivers_the_device_audio_in_order_at_16k_and_44k() {
    let out = run_child("child_capture_from_file_pcm", file_asoundrc);
    assert_child_passed("child_capture_from_file_pcm", &out);
}

#[test]
fn microphone_without_a_device_fails_clearly() {
    let asoundrc = "pcm.!default { type hw card 29 device 0 }\nctl.!default { type hw card 29 }\n";
    let out = run_child("child_open_missing_device", |_| asoundrc.to_owned());
    assert_child_passed("child_open_missing_device", &out);
}

fn clock() -> affectstream::capture::microphone::StreamClock {
    let start = Instant::now();
    Arc::new(move || start.elapsed())
}

/// Mean-square per 20 ms window.
fn envelope(x: &[f32], rate: usize) -> Vec<f64> {
    x.chunks(rate / 50)
        .map(|c| c.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / c.len() as f64)
        .collect()
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ma, mb) = (
        a.iter().sum::<f64>() / n as f64,
        b.iter().sum::<f64>() / n as f64,
    );
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt().max(1e-12)
}

#[test]
#[ignore = "run by microphone_delivers_the_device_audio_in_order_at_16k_and_44k in a child process"]
fn child_capture_from_file_pcm() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let options = MicrophoneOptions {
        // The file plugin is not paced: it delivers as fast as it is read. A ring and queue
        // big enough for the whole clip keep every sample.
        ring_seconds: 30.0,
        queue: 1 << 16,
        ..MicrophoneOptions::default()
    };
    let reader = hound::WavReader::open(wav()).unwrap();
    let spec = reader.spec();
    assert_eq!((spec.sample_rate, spec.channels), (48_000, 1));
    let clip: Vec<f32> = reader
        .into_samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect();
    let clip_seconds = clip.len() as f64 / 48_000.0;
    // What cpal will open: write the clip for the file plugin in exactly that shape.
    use cpal::traits::{DeviceTrait, HostTrait};
    let config = cpal::default_host()
        .default_input_device()
        .expect("a default input")
        .default_input_config()
        .expect("its default config");
    let device_rate = config.sample_rate();
    let channels = usize::from(config.channels());
    let mut at_device_rate = Vec::new();
    Resampler::new(48_000, device_rate).process(&clip, &mut at_device_rate);
    let mut raw = Vec::new();
    for s in &at_device_rate {
        for _ in 0..channels {
            match config.sample_format() {
                cpal::SampleFormat::F32 => raw.extend_from_slice(&s.to_le_bytes()),
                cpal::SampleFormat::I16 => {
                    raw.extend_from_slice(&((s * 32767.0) as i16).to_le_bytes())
                }
                other => panic!("the test writes f32 or i16, cpal chose {other}"),
            }
        }
    }
    let home = PathBuf::from(std::env::var_os("HOME").unwrap());
    std::fs::write(home.join("in.raw"), raw).unwrap();
    eprintln!("device default: {config:?}");

    let (mic, rx) = Microphone::start(&options, clock()).expect("open the file PCM");

    let mut blocks: Vec<AudioBlock> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let seconds_at = |blocks: &[AudioBlock], rate: u32| {
        blocks
            .iter()
            .filter(|b| b.rate == rate)
            .map(|b| b.samples.len())
            .sum::<usize>() as f64
            / f64::from(rate)
    };
    while OUTPUT_RATES
        .iter()
        .any(|&r| seconds_at(&blocks, r) < clip_seconds + 0.5)
    {
        assert!(Instant::now() < deadline, "audio stopped arriving");
        if let Ok(block) = rx.recv_timeout(Duration::from_millis(200)) {
            blocks.push(block);
        }
    }
    let dropped = mic
        .stats
        .dropped_blocks
        .load(std::sync::atomic::Ordering::Relaxed);
    mic.stop();
    assert_eq!(dropped, 0, "blocks dropped");

    for rate in OUTPUT_RATES {
        let mine: Vec<&AudioBlock> = blocks.iter().filter(|b| b.rate == rate).collect();
        assert!(mine.len() > 2, "{rate} Hz: {} blocks", mine.len());
        // Timestamps: increasing, each block starting where the previous ended.
        for pair in mine.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let end =
                a.pts.unwrap() + Duration::from_secs_f64(a.samples.len() as f64 / f64::from(rate));
            let gap = b.pts.unwrap().as_secs_f64() - end.as_secs_f64();
            assert!(gap.abs() < 1e-4, "{rate} Hz: gap of {gap} s between blocks");
            assert!(b.pts > a.pts);
        }
        let samples: Vec<f32> = mine
            .iter()
            .flat_map(|b| b.samples.iter().copied())
            .collect();
        assert!(samples.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
        // The clip as our resampler makes it from the file, for comparison.
        let mut expected = Vec::new();
        Resampler::new(48_000, rate).process(&clip, &mut expected);
        let n = expected.len().min(samples.len());
        let r = correlation(
            &envelope(&samples[..n], rate as usize),
            &envelope(&expected[..n], rate as usize),
        );
        eprintln!(
            "{rate} Hz: {} samples, envelope correlation {r:.3}",
            samples.len()
        );
        assert!(
            r > 0.95,
            "{rate} Hz: the audio does not follow the clip (r = {r:.3})"
        );
        // Sample by sample too, at the small lag the WAV header and ALSA add.
        let best = (0..64)
            .map(|lag| {
                let a: Vec<f64> = samples[lag..n].iter().map(|v| f64::from(*v)).collect();
                let b: Vec<f64> = expected[..n - lag].iter().map(|v| f64::from(*v)).collect();
                (lag, correlation(&a, &b))
            })
            .fold((0, f64::MIN), |best, x| if x.1 > best.1 { x } else { best });
        eprintln!(
            "{rate} Hz: best lag {} samples, correlation {:.3}",
            best.0, best.1
        );
        assert!(
            best.1 > 0.9,
            "{rate} Hz: samples out of order (best correlation {:.3})",
            best.1
        );
    }
}

#[test]
#[ignore = "run by microphone_without_a_device_fails_clearly in a child process"]
fn child_open_missing_device() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let err = match Microphone::start(&MicrophoneOptions::default(), clock()) {
        Ok(_) => panic!("a microphone opened on a sound card that does not exist"),
        Err(e) => e.to_string(),
    };
    eprintln!("{err}");
    assert!(
        err.contains("microphone"),
        "the error does not say what is missing: {err}"
    );
    let named = MicrophoneOptions {
        device: Some("no-such-microphone".into()),
        ..MicrophoneOptions::default()
    };
    let err = match Microphone::start(&named, clock()) {
        Ok(_) => panic!("a microphone named no-such-microphone opened"),
        Err(e) => e.to_string(),
    };
    eprintln!("{err}");
    assert!(
        err.contains("no microphone named 'no-such-microphone'"),
        "{err}"
    );
}
