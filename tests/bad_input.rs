//! Bad input gets one clear error line naming the file and the problem, a non-zero exit code,
//! and loses nothing that decoded. Never a panic, never a hang (every run has a time limit).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{assert_clear_failure, read_jsonl, run_binary, temp_dir, testdata};
use gstreamer as gst;
use gstreamer::prelude::*;

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn missing_file() {
    let o = run_binary(&["run", "--source", "/no/such/clip.mp4"], LIMIT);
    assert_clear_failure(&o, "/no/such/clip.mp4", "no such file");
}

#[test]
fn text_file_named_mp4() {
    let dir = temp_dir("text");
    let path = dir.join("notes.mp4");
    std::fs::write(&path, "this is not a video\n").unwrap();
    let o = run_binary(&["run", "--source", path.to_str().unwrap()], LIMIT);
    assert_clear_failure(&o, "notes.mp4", "not a media file");
}

#[test]
fn empty_file() {
    let dir = temp_dir("empty");
    let path = dir.join("empty.mp4");
    std::fs::write(&path, b"").unwrap();
    let o = run_binary(&["run", "--source", path.to_str().unwrap()], LIMIT);
    assert_clear_failure(&o, "empty.mp4", "empty");
}

/// Remuxes a testdata clip into an MP4 with its index first (as cameras and encoders that
/// stream write it), so that a cut in the middle leaves decodable frames.
fn faststart_copy(src: &std::path::Path, dst: &std::path::Path) {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! qtdemux name=d d.video_0 ! queue ! h264parse ! mp4mux faststart=true name=m ! filesink location={} d.audio_0 ! queue ! aacparse ! m.",
        src.display(),
        dst.display()
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("remux finished");
    assert!(
        matches!(msg.view(), gst::MessageView::Eos(..)),
        "remux failed: {msg:?}"
    );
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn mp4_truncated_at_several_offsets_keeps_what_decodes() {
    let dir = temp_dir("trunc");
    let whole = dir.join("whole.mp4");
    faststart_copy(&testdata().join("av/streams/tedlieu_60s_256.mp4"), &whole);
    let bytes = std::fs::read(&whole).unwrap();
    let mut last = 0;
    for percent in [10, 50, 90] {
        let cut = dir.join(format!("cut{percent}.mp4"));
        std::fs::write(&cut, &bytes[..bytes.len() * percent / 100]).unwrap();
        let out = dir.join(format!("cut{percent}.jsonl"));
        let o = run_binary(
            &[
                "run",
                "--source",
                cut.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            LIMIT,
        );
        assert_clear_failure(&o, &format!("cut{percent}.mp4"), "truncated");
        let records = read_jsonl(&out);
        assert!(
            records.len() > last,
            "{percent} %: more decodes than before ({})",
            records.len()
        );
        assert!(records.len() < 1499, "{percent} %: not the whole stream");
        last = records.len();
    }
    assert!(
        last > 1200,
        "90 % of the file decodes to most of it: {last}"
    );
}

/// Runs the happy MEAD clip with the models in `dir` and the `all` face ensemble (every face
/// model loaded).
fn run_with_model_dir(dir: &std::path::Path) -> common::Output {
    run_with_model_dir_and_set(dir, "all")
}

/// Runs the happy MEAD clip with the models in `dir` and the face ensemble `set`.
fn run_with_model_dir_and_set(dir: &std::path::Path, set: &str) -> common::Output {
    let src = testdata().join("face_video/mead_dreamtalk/M030_front_happy_level3_001.mp4");
    run_binary(
        &[
            "run",
            "--source",
            src.to_str().unwrap(),
            "--model-dir",
            dir.to_str().unwrap(),
            "--face-encoders",
            set,
        ],
        LIMIT,
    )
}

/// A copy of the model directory, with `change` applied.
fn model_copy(name: &str, change: impl Fn(&std::path::Path)) -> std::path::PathBuf {
    let dir = temp_dir(name);
    let models = affectstream::manifest::default_model_dir();
    for entry in std::fs::read_dir(&models).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    change(&dir);
    dir
}

#[test]
fn missing_model_file_says_to_run_setup() {
    let dir = model_copy("missing-model", |d| {
        std::fs::remove_file(d.join("silero_vad.onnx")).unwrap();
    });
    let o = run_with_model_dir(&dir);
    assert_clear_failure(&o, "silero_vad.onnx", "scripts/setup.sh");
}

/// Runs the happy MEAD clip with a copy of the models whose manifest text went through `edit`,
/// with the `all` face ensemble (every face model loaded).
fn run_with_edited_manifest(name: &str, edit: impl Fn(String) -> String) -> common::Output {
    let dir = model_copy(name, |_| {});
    let manifest_src = affectstream::manifest::default_manifest_path();
    let manifest = std::fs::read_to_string(&manifest_src).unwrap();
    let manifest_path = dir.join("models.toml");
    std::fs::write(&manifest_path, edit(manifest)).unwrap();
    std::fs::copy(
        manifest_src.with_file_name("prosody_head.json"),
        dir.join("prosody_head.json"),
    )
    .unwrap();
    let src = testdata().join("face_video/mead_dreamtalk/M030_front_happy_level3_001.mp4");
    run_binary(
        &[
            "run",
            "--source",
            src.to_str().unwrap(),
            "--models",
            manifest_path.to_str().unwrap(),
            "--model-dir",
            dir.to_str().unwrap(),
            "--face-encoders",
            "all",
        ],
        LIMIT,
    )
}

const VAD_SHA: &str = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3";

#[test]
fn model_of_the_wrong_shape_is_refused_at_load() {
    // A manifest whose expression model is, checksum and all, the VAD model.
    let fer_sha = "f9c106ffdb84ad433a827aa48c1b6ac9afed1419550609b03249e715d0ae7a4e";
    let o = run_with_edited_manifest("wrong-shape", |m| {
        m.replace(
            "file = \"fer_mini_xception_fer2013.onnx\"",
            "file = \"silero_vad.onnx\"",
        )
        .replace(fer_sha, VAD_SHA)
    });
    assert_clear_failure(&o, "silero_vad.onnx", "does not fit its role");
}

const FACEAPI_SHA: &str = "e9bf84a44f0e322f70c277248e4253ba4b3e7fa58f0975ce25f9492e2c92802f";

#[test]
fn a_missing_optional_ensemble_member_is_left_out_with_one_warning() {
    let dir = model_copy("missing-member", |d| {
        std::fs::remove_file(d.join("faceapi_expression_112.onnx")).unwrap();
    });
    let o = run_with_model_dir(&dir);
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    assert_eq!(
        o.stderr
            .matches("optional model face_expression_faceapi")
            .count(),
        1,
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("scripts/setup.sh"), "{}", o.stderr);
    assert!(o.stdout.lines().count() > 50, "records still come");
}

#[test]
fn a_face_ensemble_with_no_member_left_says_to_run_setup() {
    let dir = model_copy("no-member", |d| {
        for f in [
            "faceapi_expression_112.onnx",
            "human_emotion_big_xception_fer2013.onnx",
        ] {
            std::fs::remove_file(d.join(f)).unwrap();
        }
    });
    let o = run_with_model_dir_and_set(&dir, "big+faceapi");
    assert_clear_failure(&o, "big+faceapi", "scripts/setup.sh");
}

#[test]
fn ensemble_member_corrupt_is_named() {
    let dir = model_copy("corrupt-member", |d| {
        let p = d.join("human_emotion_big_xception_fer2013.onnx");
        let mut bytes = std::fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
    });
    let o = run_with_model_dir(&dir);
    assert_clear_failure(&o, "human_emotion_big_xception_fer2013.onnx", "sha256");
    assert!(o.stderr.contains("face_expression_big"), "{}", o.stderr);
}

#[test]
fn ensemble_member_of_the_wrong_shape_is_named() {
    // The face-api member's entry points at the big Xception (64x64 gray, not 112x112 RGB).
    let big_sha = "90062a419e0e27d955da644618019337b07cad14c5befbfd7340c70269944ba2";
    let o = run_with_edited_manifest("wrong-member", |m| {
        m.replace(
            "file = \"faceapi_expression_112.onnx\"",
            "file = \"human_emotion_big_xception_fer2013.onnx\"",
        )
        .replace(FACEAPI_SHA, big_sha)
    });
    assert_clear_failure(
        &o,
        "human_emotion_big_xception_fer2013.onnx (face_expression_faceapi)",
        "input shape",
    );
}

#[test]
fn ensemble_naming_an_unknown_member_is_refused() {
    let o = run_with_edited_manifest("unknown-member", |m| {
        m.replace(
            "all = [\"face_expression\",",
            "all = [\"face_expression_nope\", \"face_expression\",",
        )
    });
    assert_clear_failure(
        &o,
        "face_expression_nope",
        "no [models.face_expression_nope] entry",
    );
}

#[test]
fn bad_option_values_are_refused() {
    let src = testdata().join("av/streams/tedlieu_60s_256.mp4");
    let o = run_binary(
        &[
            "run",
            "--source",
            src.to_str().unwrap(),
            "--face-threshold",
            "1.5",
        ],
        LIMIT,
    );
    assert_ne!(o.code, Some(0));
    assert!(o.stderr.contains("outside 0..1"), "{}", o.stderr);
}

#[test]
fn wrong_model_file_is_named() {
    let dir = model_copy("models", |d| {
        std::fs::write(d.join("fer_mini_xception_fer2013.onnx"), b"garbage").unwrap();
    });
    let o = run_with_model_dir(&dir);
    assert_clear_failure(&o, "fer_mini_xception_fer2013.onnx", "sha256");
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error_not_a_silent_cpu_fallback() {
    if std::path::Path::new("/dev/nvidia0").exists() {
        return; // a GPU machine: CUDA may well work here
    }
    let src = testdata().join("face_video/mead_dreamtalk/M030_front_happy_level3_001.mp4");
    let o = run_binary(
        &["run", "--source", src.to_str().unwrap(), "--device", "cuda"],
        LIMIT,
    );
    assert_clear_failure(&o, "cuda", "could not be registered");
    assert!(o.stdout.is_empty(), "no records on CPU: {}", o.stdout);
}

#[test]
fn random_bytes_named_mp4() {
    let dir = temp_dir("random-mp4");
    let path = dir.join("random.mp4");
    let bytes: Vec<u8> = (0u32..200_000)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    std::fs::write(&path, bytes).unwrap();
    let o = run_binary(&["run", "--source", path.to_str().unwrap()], LIMIT);
    assert_clear_failure(&o, "random.mp4", "");
}

#[test]
fn manifest_with_a_wrong_sha256_names_the_model() {
    let o = run_with_edited_manifest("wrong-sha", |m| m.replace(VAD_SHA, &"ab".repeat(32)));
    assert_clear_failure(&o, "silero_vad.onnx", "sha256");
}

#[test]
fn config_value_out_of_range_names_the_key() {
    let dir = temp_dir("bad-config");
    let config = dir.join("bad.toml");
    std::fs::write(&config, "[fusion.conflict]\non = 7.0\n").unwrap();
    let src = testdata().join("face_video/mead_dreamtalk/M030_front_happy_level3_001.mp4");
    let o = run_binary(
        &[
            "run",
            "--source",
            src.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_clear_failure(&o, "bad.toml", "conflict.on");
}

#[test]
fn config_with_a_negative_cutoff_or_on_below_off_names_the_key() {
    let dir = temp_dir("bad-config-fusion");
    let src = testdata().join("face_video/mead_dreamtalk/M030_front_happy_level3_001.mp4");
    for (name, text, key) in [
        (
            "cutoff.toml",
            "[fusion.smoother]\nmin_cutoff = -1.0\n",
            "smoother.min_cutoff",
        ),
        // `on` below the default `off` (0.1): no hysteresis band.
        (
            "hysteresis.toml",
            "[fusion.conflict]\non = 0.05\n",
            "conflict.off",
        ),
    ] {
        let config = dir.join(name);
        std::fs::write(&config, text).unwrap();
        let o = run_binary(
            &[
                "run",
                "--source",
                src.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ],
            LIMIT,
        );
        assert_clear_failure(&o, name, key);
    }
}
