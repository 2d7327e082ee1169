//! The real binary on real media: the 60 s talking-head stream, audio-only, video-only and
//! still-image sources.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{read_jsonl, run_binary, temp_dir, testdata};

const LIMIT: Duration = Duration::from_secs(300);

#[test]
fn sixty_second_stream_gives_a_record_per_frame_with_face_and_voice() {
    let dir = temp_dir("ted");
    let out = dir.join("records.jsonl");
    let src = testdata().join("av/streams/tedlieu_60s_256.mp4");
    let o = run_binary(
        &[
            "run",
            "--source",
            src.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        LIMIT,
    );
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    let records = read_jsonl(&out);
    // 1499 frames decode (Python reference and ffprobe agree).
    assert!(
        (1498..=1500).contains(&records.len()),
        "{} records",
        records.len()
    );
    let with_face = records
        .iter()
        .filter(|r| !r["faces"].as_array().unwrap().is_empty())
        .count();
    assert!(
        with_face as f64 >= 0.95 * records.len() as f64,
        "faces in {with_face} of {}",
        records.len()
    );
    // Frames in order, timestamps increasing, one track for the one speaker.
    let mut last_t = -1.0;
    let mut ids = std::collections::BTreeSet::new();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["frame"].as_u64(), Some(i as u64));
        let t = r["t"].as_f64().unwrap();
        assert!(t > last_t, "time goes forward at frame {i}");
        last_t = t;
        assert_eq!(r["device"], "cpu");
        assert!(r["latency_ms"].as_f64().unwrap() >= 0.0);
        for f in r["faces"].as_array().unwrap() {
            ids.insert(f["id"].as_u64().unwrap());
            let probs: f64 = f["probs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_f64().unwrap())
                .sum();
            assert!((probs - 1.0).abs() < 1e-3);
            for k in ["valence", "arousal"] {
                assert!((-1.0..=1.0).contains(&f[k].as_f64().unwrap()));
            }
            assert_eq!(f["landmarks"].as_array().unwrap().len(), 5);
        }
        let fused = &r["fused"];
        assert!(fused.is_object(), "fused value at frame {i}");
        assert!((0.0..=1.0).contains(&fused["conflict"].as_f64().unwrap()));
    }
    assert!(
        ids.len() <= 3,
        "one person should keep one track id, got {ids:?}"
    );
    // The speaker talks most of the time: the Python reference finds speech (p > 0.5) in 83 %
    // of frames.
    let voiced = records
        .iter()
        .filter(|r| r["voice"]["speech_prob"].as_f64().unwrap_or(0.0) > 0.5)
        .count();
    assert!(
        voiced as f64 >= 0.75 * records.len() as f64,
        "speech in {voiced} of {}",
        records.len()
    );
    // After the first window the speech model has an opinion.
    let late = &records[records.len() - 1]["voice"];
    assert_eq!(late["probs"].as_array().unwrap().len(), 10);
}

#[test]
fn audio_only_source_gives_one_record_per_voice_hop() {
    let src = testdata().join("speech/ravdess/03-01-01-01-01-01-05.wav");
    let o = run_binary(
        &["run", "--source", src.to_str().unwrap(), "--device", "cpu"],
        LIMIT,
    );
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    let records = common::parse_jsonl(&o.stdout);
    // A 3.6 s clip with a 0.5 s hop.
    assert!(
        (6..=8).contains(&records.len()),
        "{} records",
        records.len()
    );
    for r in &records {
        assert!(r["faces"].as_array().unwrap().is_empty());
        assert!(r["frame"].is_null());
        assert!(r["voice"]["probs"].is_array());
    }
    let speech = records
        .iter()
        .filter(|r| r["voice"]["speech_prob"].as_f64().unwrap() > 0.5)
        .count();
    assert!(speech >= 1, "the actor speaks in the middle of the clip");
}

#[test]
fn video_without_audio_has_no_voice() {
    let src = testdata().join("face_video/mead_dreamtalk/M030_front_happy_level3_001.mp4");
    let o = run_binary(
        &["run", "--source", src.to_str().unwrap(), "--device", "cpu"],
        LIMIT,
    );
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    let records = common::parse_jsonl(&o.stdout);
    assert!(records.len() > 50);
    assert!(records.iter().all(|r| r["voice"].is_null()));
    let happy = records
        .iter()
        .filter(|r| r["fused"]["valence"].as_f64().is_some_and(|v| v > 0.0))
        .count();
    assert!(
        happy * 2 > records.len(),
        "a happy face reads as positive valence"
    );
}

#[test]
fn still_image_gives_one_record() {
    let dir = testdata().join("faces/fer2013/happy");
    let img = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let o = run_binary(
        &[
            "run",
            "--source",
            img.to_str().unwrap(),
            "--face-threshold",
            "0.6",
            "--device",
            "cpu",
        ],
        LIMIT,
    );
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    let records = common::parse_jsonl(&o.stdout);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["faces"].as_array().unwrap().len(), 1);
    assert!(records[0]["voice"].is_null());
}

#[test]
fn without_yunet_files_the_haar_cascade_takes_over_with_a_warning() {
    let dir = temp_dir("haar-models");
    let models = affectstream::manifest::default_model_dir();
    for entry in std::fs::read_dir(&models).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("face_detection_yunet") {
            std::fs::copy(&p, dir.join(&name)).unwrap();
        }
    }
    let src = testdata().join("face_video/mead_dreamtalk/M030_front_happy_level3_001.mp4");
    let o = run_binary(
        &[
            "run",
            "--source",
            src.to_str().unwrap(),
            "--device",
            "cpu",
            "--model-dir",
            dir.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    assert!(
        o.stderr.contains("Haar cascade"),
        "a warning says so: {}",
        o.stderr
    );
    let records = common::parse_jsonl(&o.stdout);
    let with_face = records
        .iter()
        .filter(|r| !r["faces"].as_array().unwrap().is_empty())
        .count();
    assert!(
        with_face * 10 >= records.len() * 9,
        "faces in {with_face} of {}",
        records.len()
    );
    let face = &records
        .iter()
        .find(|r| !r["faces"].as_array().unwrap().is_empty())
        .unwrap()["faces"][0];
    assert!(face["landmarks"].is_null(), "the cascade has no landmarks");
}

#[test]
fn a_stage_error_names_the_frame_and_its_stream_time() {
    use affectstream::capture::VideoFrame;
    use affectstream::pipeline::{Models, RunOptions};
    let options = RunOptions {
        device: affectstream::encode::runtime::DeviceRequest::Cpu,
        ..RunOptions::new("")
    };
    let models = Models::load(&options).expect("models (run scripts/setup.sh)");
    let (frames_tx, frames_rx) = crossbeam_channel::bounded(1);
    let (batches_tx, _batches_rx) = crossbeam_channel::bounded(1);
    // 16x16 RGB needs 768 bytes; this frame has 10.
    frames_tx
        .send(VideoFrame::from_rgb(
            3,
            Duration::from_millis(120),
            16,
            16,
            vec![0; 10],
        ))
        .unwrap();
    drop(frames_tx);
    let error = models
        .face
        .run(frames_rx, batches_tx)
        .err()
        .expect("a malformed frame is an error");
    let text = error.to_string();
    assert!(
        text.starts_with("frame 3 at 0.120 s of stream time: "),
        "{text}"
    );
    assert!(text.contains("expected 768"), "{text}");
}

#[test]
fn invalid_fusion_parameters_set_in_code_fail_the_run_naming_the_field() {
    use affectstream::pipeline::{self, PipelineError, RunOptions};
    use affectstream::sink::JsonlTarget;
    let dir = temp_dir("bad-fusion");
    let out = dir.join("records.jsonl");
    let src = testdata().join("face_video/mead_dreamtalk/M030_front_happy_level3_001.mp4");
    let mut options = RunOptions {
        device: affectstream::encode::runtime::DeviceRequest::Cpu,
        out: JsonlTarget::File(out.clone()),
        ..RunOptions::new(src.to_str().unwrap())
    };
    // Set in code, past the config file's validation: the run itself must refuse it.
    options.fusion.params.smoother.min_cutoff = -1.0;
    let error = pipeline::run(&options)
        .err()
        .expect("invalid fusion parameters fail the run instead of falling back to defaults");
    assert!(
        matches!(&error, PipelineError::Fusion(e) if e.field == "smoother.min_cutoff"),
        "{error}"
    );
    assert!(error.to_string().contains("smoother.min_cutoff"), "{error}");
    let written = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(written.is_empty(), "no record is fused: {written}");
}

/// The two audio branches (16 kHz for voice activity, 44.1 kHz for speech emotion) reach the
/// audio stage from separate GStreamer threads, so which is ahead varies from run to run. The
/// voice estimates, SNR included, must not depend on it.
#[test]
fn the_voice_does_not_depend_on_which_audio_branch_arrives_first() {
    use affectstream::capture::AudioBlock;
    use affectstream::pipeline::{Models, RunOptions};
    let options = RunOptions {
        device: affectstream::runtime::DeviceRequest::Cpu,
        ..RunOptions::new("")
    };
    let mut audio = Models::load(&options).expect("models").audio;
    let wav = testdata().join("speech/ravdess/03-01-05-02-01-01-05.wav");
    let mut reader = hound::WavReader::open(&wav).unwrap();
    let spec = reader.spec();
    let scale = f32::from(i16::MAX);
    let samples: Vec<f32> = reader
        .samples::<i16>()
        .step_by(usize::from(spec.channels))
        .map(|s| f32::from(s.unwrap()) / scale)
        .collect();
    // Linear interpolation is enough here: both orders get the same signal.
    let resample = |rate: u32| -> Vec<f32> {
        let n = samples.len() as u64 * u64::from(rate) / u64::from(spec.sample_rate);
        (0..n)
            .map(|i| {
                let x = i as f64 * f64::from(spec.sample_rate) / f64::from(rate);
                let (j, f) = (x as usize, (x.fract()) as f32);
                let a = samples[j.min(samples.len() - 1)];
                let b = samples[(j + 1).min(samples.len() - 1)];
                a + (b - a) * f
            })
            .collect()
    };
    let blocks = |rate: u32| -> Vec<AudioBlock> {
        let per = rate as usize / 10;
        resample(rate)
            .chunks(per)
            .enumerate()
            .map(|(i, c)| AudioBlock {
                rate,
                pts: Some(Duration::from_millis(100 * i as u64)),
                samples: c.to_vec(),
            })
            .collect()
    };
    let (b16, b44) = (blocks(16_000), blocks(44_100));
    let interleaved: Vec<&AudioBlock> = b16.iter().zip(&b44).flat_map(|(a, b)| [a, b]).collect();
    let vad_first: Vec<&AudioBlock> = b16.iter().chain(&b44).collect();
    let mut run = |order: &[&AudioBlock]| {
        let mut out = Vec::new();
        for block in order {
            out.extend(audio.push(block).unwrap());
        }
        out.extend(audio.finish().unwrap());
        audio.reset();
        out.iter()
            .map(|e| {
                let emotion = e.emotion.as_ref();
                (
                    e.t_end,
                    emotion.and_then(|m| m.snr_db),
                    emotion.map(|m| (m.valence, m.arousal)),
                )
            })
            .collect::<Vec<_>>()
    };
    let a = run(&interleaved);
    let b = run(&vad_first);
    assert!(
        a.iter().any(|(_, snr, _)| snr.is_some()),
        "speech gives an SNR"
    );
    assert_eq!(a, b);
}
