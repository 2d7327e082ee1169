//! Per-stage micro-benchmarks on fixed, real inputs: every model is loaded once (CPU, one
//! intra-op thread, as the pipeline runs it) and each stage is measured per call.
//!
//! Inputs come from the test media (`../shared/testdata`, or `$AFFECTSTREAM_TESTDATA`): the
//! first decoded frame of a 256x256 and of a 1280x720 clip, and a few seconds of the 256x256
//! clip's audio at 16 kHz (VAD) and 44.1 kHz (speech emotion).
//!
//! ```text
//! cargo bench --bench stages                 # everything (about a minute)
//! cargo bench --bench stages -- face_detect  # one group
//! ```
//!
//! Medians are in `target/criterion/<group>/<input>/new/estimates.json`. `cargo test` skips
//! bench targets; `cargo test --release --benches` runs each benchmark once (a few seconds).

// Like the integration tests: a missing model or media file ends the run with its message.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};

#[path = "../tests/common/mod.rs"]
mod common;
use common::testdata;

use affectstream::audio::speech_features::{
    MfccExtractor, SER_FRAMES, SER_SAMPLE_RATE, SER_WINDOW_SAMPLES,
};
use affectstream::audio::vad::{SileroVad, VAD_CHUNK, VAD_RATE};
use affectstream::capture::{Capture, Source, VideoFrame};
use affectstream::encode::ClassHead;
use affectstream::encode::runtime::{DeviceRequest, Runtime};
use affectstream::encode::speech::SpeechEncoder;
use affectstream::face::{FaceBatch, TrackedFace};
use affectstream::fusion::gates::Estimate;
use affectstream::fusion::params::FusionParams;
use affectstream::fusion::reliability::{
    FaceQuality, VoiceQuality, face_reliability, voice_reliability,
};
use affectstream::fusion::track::fuse_step;
use affectstream::manifest::Manifest;
use affectstream::pipeline::{self, Models, RunOptions};
use affectstream::record::Record;
use affectstream::sink::JsonlTarget;

/// 256x256, 25 fps, one face, speech.
const SMALL: &str = "av/streams/tedlieu_60s_256.mp4";
/// 1280x720, 29.97 fps, one face of about 100x141 px.
const HD: &str = "av/streams/obama_dnc2020_cspan_64s_720p.mp4";
/// Audio decoded from the start of `SMALL`; the benchmarked windows are its last seconds.
const AUDIO_SECONDS: f64 = 6.0;
/// Give up decoding the inputs after this long.
const DECODE_LIMIT: Duration = Duration::from_secs(60);
/// How long the pipeline runs to produce the benchmarked record.
const RECORD_RUN: Duration = Duration::from_secs(2);

/// A decoded frame (the decoder's planes), kept so each iteration can take a fresh copy.
struct Still {
    frame: VideoFrame,
}

impl Still {
    fn frame(&self) -> VideoFrame {
        self.frame.clone()
    }

    fn label(&self) -> String {
        format!("{}x{}", self.frame.meta.width, self.frame.meta.height)
    }
}

/// The head of a media file: its first frame and its first `audio_seconds` of audio at both
/// rates (empty when `audio_seconds` is 0).
struct Head {
    still: Still,
    audio16: Vec<f32>,
    audio44: Vec<f32>,
}

fn decode_head(path: &Path, audio_seconds: f64) -> Head {
    let name = path.to_str().expect("UTF-8 media path");
    let source = Source::parse(name).unwrap_or_else(|e| panic!("{e}"));
    let (capture, outputs) = Capture::start(&source).unwrap_or_else(|e| panic!("{e}"));
    let want16 = (audio_seconds * f64::from(VAD_RATE)) as usize;
    let want44 = (audio_seconds * f64::from(SER_SAMPLE_RATE)) as usize;
    let (mut still, mut audio16, mut audio44) = (None, Vec::new(), Vec::new());
    let deadline = Instant::now() + DECODE_LIMIT;
    // Both branches are drained together: a full channel on one would stall the other.
    while still.is_none() || audio16.len() < want16 || audio44.len() < want44 {
        let left = deadline.saturating_duration_since(Instant::now());
        crossbeam_channel::select! {
            recv(outputs.video) -> frame => {
                let frame = frame.unwrap_or_else(|_| panic!("{name}: video ended early"));
                if still.is_none() {
                    // A copy owns its planes, so the decoder's buffer goes back at once.
                    still = Some(Still { frame: frame.clone() });
                }
            }
            recv(outputs.audio) -> block => {
                let block = block.unwrap_or_else(|_| panic!("{name}: audio ended early"));
                match block.rate {
                    VAD_RATE => audio16.extend_from_slice(&block.samples),
                    SER_SAMPLE_RATE => audio44.extend_from_slice(&block.samples),
                    _ => {}
                }
            }
            default(left) => panic!("{name}: inputs not decoded within {DECODE_LIMIT:?}"),
        }
    }
    // Receivers first, so the streaming threads unblock, then the pipeline.
    drop(outputs);
    drop(capture);
    Head {
        still: still.expect("loop ends with a frame"),
        audio16,
        audio44,
    }
}

/// A real record for `path`: the pipeline runs on it for a moment and the last record with
/// exactly one face and a voice estimate is kept (so every field the pipeline fills is filled).
fn pipeline_record(options: &RunOptions, path: &Path) -> Record {
    let mut options = options.clone();
    options.source = path.to_str().expect("UTF-8 media path").to_owned();
    options.out = JsonlTarget::Discard;
    options.max_duration = Some(RECORD_RUN);
    let source = Source::parse(&options.source).unwrap_or_else(|e| panic!("{e}"));
    let models = Models::load(&options).expect("models");
    let kept: Arc<Mutex<Option<Record>>> = Arc::default();
    let slot = kept.clone();
    pipeline::run_with_models(&options, &source, models, move |r| {
        let voiced = r.voice.as_ref().is_some_and(|v| v.valence.is_some());
        if r.faces.len() == 1
            && voiced
            && let Ok(mut slot) = slot.lock()
        {
            *slot = Some(r.clone());
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let record = kept.lock().ok().and_then(|mut k| k.take());
    record.unwrap_or_else(|| {
        panic!(
            "{}: no record with one face and a voice in {RECORD_RUN:?}",
            path.display()
        )
    })
}

fn stages(c: &mut Criterion) {
    let data = testdata();
    let small = decode_head(&data.join(SMALL), AUDIO_SECONDS);
    let hd = decode_head(&data.join(HD), 0.0);

    let mut options = RunOptions {
        device: DeviceRequest::Cpu,
        ..RunOptions::new("")
    };
    // Detect on every frame (the default detects every 2nd and tracks between).
    options.face.detect_interval = 1;
    let mut models = Models::load(&options).expect("models (run scripts/setup.sh)");
    // The audio models live inside `models.audio`; load our own to call them directly.
    let manifest = Manifest::load(&options.manifest, &options.model_dir).expect("manifest");
    let runtime = Runtime::new(DeviceRequest::Cpu).expect("ONNX Runtime");
    let mut vad =
        SileroVad::new(&runtime, &manifest.verified_path("vad").expect("vad model")).expect("VAD");
    let ser_head = ClassHead::from_entry(
        "speech_emotion",
        manifest
            .entry("speech_emotion")
            .expect("speech_emotion entry"),
    )
    .expect("speech_emotion head");
    let mut speech = SpeechEncoder::new(
        &runtime,
        &manifest
            .verified_path("speech_emotion")
            .expect("speech model"),
        ser_head,
    )
    .expect("speech encoder");

    // Face detection (+ tracking and crop geometry), one fresh frame per call.
    let mut group = c.benchmark_group("face_detect");
    for still in [&small.still, &hd.still] {
        group.bench_function(BenchmarkId::from_parameter(still.label()), |b| {
            b.iter_batched(
                || still.frame(),
                |frame| models.face.process(frame).expect("detect"),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();

    // Crop + expression encoder on the 720p frame's face, the face repeated for batch 4.
    let hd_batch = models.face.process(hd.still.frame()).expect("detect");
    let face = *hd_batch
        .faces
        .first()
        .expect("a face in the first 720p frame");
    let mut group = c.benchmark_group("expression");
    for n in [1usize, 4] {
        let faces: Vec<TrackedFace> = (0..n as u64)
            .map(|i| TrackedFace { id: i, ..face })
            .collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("crop_encode", format!("batch{n}")), |b| {
            b.iter_batched(
                || FaceBatch {
                    faces: faces.clone(),
                    frame: hd.still.frame(),
                },
                |batch| models.expression.process(batch).expect("encode"),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();

    // VAD: one 512-sample chunk per call, cycling through a second of real speech.
    let chunks: Vec<[f32; VAD_CHUNK]> = small.audio16[small.audio16.len() - VAD_RATE as usize..]
        .chunks_exact(VAD_CHUNK)
        .map(|c| c.try_into().expect("chunk of 512"))
        .collect();
    let mut group = c.benchmark_group("vad");
    let mut next = 0;
    group.bench_function("chunk512", |b| {
        b.iter(|| {
            next = (next + 1) % chunks.len();
            vad.process(black_box(&chunks[next])).expect("vad")
        })
    });
    group.finish();

    // Speech emotion: features alone, then features + model (what the audio stage calls).
    let window = &small.audio44[small.audio44.len() - SER_WINDOW_SAMPLES..];
    let mut extractor = MfccExtractor::new();
    let mut features = [0.0f32; SER_FRAMES];
    let mut group = c.benchmark_group("speech");
    group.bench_function("ser_features_2.5s", |b| {
        b.iter(|| extractor.ser_features(black_box(window), &mut features))
    });
    group.bench_function("classify_2.5s", |b| {
        b.iter(|| speech.classify(black_box(window)).expect("classify"))
    });
    group.finish();

    // Fusion of one face with the voice: reliabilities from the observable quality, then one
    // (unsmoothed) fusion step.
    let params = FusionParams::default();
    let d = face.detection;
    let face_quality = FaceQuality {
        present: true,
        score: d.score,
        size_px: (d.bbox.w * d.bbox.h).sqrt(),
        blur: Some(150.0),
        landmarks: d.landmarks,
        track_age_s: 12.0,
        ..FaceQuality::default()
    };
    let voice_quality = VoiceQuality {
        present: true,
        speech_prob: 0.83,
        snr_db: Some(18.0),
        clipping: 0.0,
        ..VoiceQuality::default()
    };
    let face_estimate = Estimate {
        valence: 0.08,
        arousal: -0.28,
        reliability: face_reliability(&face_quality, &params),
        spread: [0.05, 0.1],
    };
    let voice_estimate = Estimate {
        valence: 0.12,
        arousal: 0.35,
        reliability: voice_reliability(&voice_quality, &params),
        spread: [0.1, 0.05],
    };
    let mut group = c.benchmark_group("fusion");
    group.bench_function("fuse_step", |b| {
        b.iter(|| {
            fuse_step(
                black_box(Some(face_estimate)),
                black_box(Some(voice_estimate)),
                &params,
            )
        })
    });
    group.bench_function("reliability_and_fuse_step", |b| {
        b.iter(|| {
            let face = Estimate {
                reliability: face_reliability(black_box(&face_quality), &params),
                ..face_estimate
            };
            let voice = Estimate {
                reliability: voice_reliability(black_box(&voice_quality), &params),
                ..voice_estimate
            };
            fuse_step(Some(face), Some(voice), &params)
        })
    });
    group.finish();

    // One JSON Lines record, as the sink writes it.
    let record = pipeline_record(&options, &data.join(SMALL));
    let mut group = c.benchmark_group("record");
    group.bench_function("to_json", |b| {
        b.iter(|| serde_json::to_string(black_box(&record)).expect("serialize"))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40)
        .noise_threshold(0.03)
}

criterion::criterion_group! {
    name = benches;
    config = config();
    targets = stages
}
criterion::criterion_main!(benches);
