//! Face valence/arousal regressor heads (`va`, `classes_va`) declared in the manifest, with
//! small ONNX models generated here (tests/common/onnx.rs) and run through the real ONNX Runtime
//! via the manifest path: the regressed values land in the face's valence and arousal, the
//! classes in the common label order; a head that asks for more outputs than the model gives
//! is refused at load with an error naming the model. Also the encode schedule.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use affectstream::capture::{Capture, Source};
use affectstream::encode::expression::FaceEstimate;
use affectstream::encode::runtime::DeviceRequest;
use affectstream::manifest;
use affectstream::pipeline::{Models, RunOptions};
use toml::Value;

/// A model directory (links to the real models plus `extra` generated files) and a manifest:
/// the project's, with `entries` (role → TOML table text) added and `sets` (name → roles).
fn setup(
    name: &str,
    extra: &[(&str, Vec<u8>)],
    entries: &[(&str, String)],
    sets: &[(&str, &[&str])],
) -> (PathBuf, PathBuf) {
    let dir = common::temp_dir(name);
    let models = manifest::default_model_dir();
    for entry in std::fs::read_dir(&models).unwrap() {
        let p = entry.unwrap().path();
        let link = dir.join(p.file_name().unwrap());
        std::fs::remove_file(&link).ok();
        std::os::unix::fs::symlink(&p, &link).unwrap();
    }
    for (file, bytes) in extra {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    let project = manifest::default_manifest_path();
    std::fs::copy(
        project.with_file_name("prosody_head.json"),
        dir.join("prosody_head.json"),
    )
    .unwrap();
    let mut doc: Value = toml::from_str(&std::fs::read_to_string(&project).unwrap()).unwrap();
    for (role, text) in entries {
        let table: Value = toml::from_str(text).unwrap();
        doc["models"]
            .as_table_mut()
            .unwrap()
            .insert((*role).into(), table);
    }
    let ensemble = doc["face_ensemble"].as_table_mut().unwrap();
    let table = ensemble
        .entry("sets")
        .or_insert_with(|| Value::Table(Default::default()));
    for (set, roles) in sets {
        table.as_table_mut().unwrap().insert(
            (*set).into(),
            Value::Array(roles.iter().map(|r| Value::String((*r).into())).collect()),
        );
    }
    let path = dir.join("models.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    (path, dir)
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn options(manifest: &Path, model_dir: &Path, set: &str) -> RunOptions {
    let mut o = RunOptions {
        device: DeviceRequest::Cpu,
        manifest: manifest.to_owned(),
        model_dir: model_dir.to_owned(),
        ..RunOptions::new("")
    };
    o.expression.set = Some(set.into());
    o.face.detector.score_threshold = 0.6;
    o
}

/// The faces of the first frame of `media` (a testdata path).
fn faces_of(models: &mut Models, media: &str) -> Vec<FaceEstimate> {
    let path = common::testdata().join(media);
    let source = Source::parse(path.to_str().unwrap()).unwrap();
    let (capture, outputs) = Capture::start(&source).unwrap();
    let frame = outputs.video.recv().expect("a decoded frame");
    models.face.reset();
    let batch = models.face.process(frame).unwrap();
    drop(outputs);
    capture.wait().unwrap();
    models.expression.process(batch).unwrap().faces
}

const HAPPY: &str = "faces/fer2013/happy";

fn first_happy() -> String {
    let dir = common::testdata().join(HAPPY);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    format!("{HAPPY}/{}", files[0])
}

/// `[models.ROLE]` text for a generated model.
fn entry(file: &str, bytes: &[u8], input: &str, head: &str) -> String {
    format!(
        "file = '{file}'\nsha256 = '{}'\n[input]\n{input}\n[head]\n{head}\n",
        sha(bytes)
    )
}

const GRAY64: &str = "layout = 'NHWC'\ncolor = 'GRAY'\nsize = [64, 64]\nmean = [0.5]\nstd = [0.5]";

#[test]
fn va_head_gives_the_face_valence_and_arousal() {
    // Output [v, a] = [0.75, 0.25] in range [0, 1] whatever the face: (0.5, -0.5) rescaled.
    // The arousal sits first, to check the indices are honoured.
    let model = common::onnx::pooled_linear(64, 1, true, &[0.0, 0.0], &[0.25, 0.75]);
    let head = "kind = 'va'\nvalence_index = 1\narousal_index = 0\nrange = [0.0, 1.0]";
    let (toml, dir) = setup(
        "va-head",
        &[("test_va.onnx", model.clone())],
        &[("test_va", entry("test_va.onnx", &model, GRAY64, head))],
        &[("mini+va", &["face_expression", "test_va"])],
    );
    let image = first_happy();
    let mut mini = Models::load(&options(&toml, &dir, "mini")).unwrap();
    let reference = faces_of(&mut mini, &image);
    let mut models = Models::load(&options(&toml, &dir, "mini+va")).unwrap();
    assert_eq!(
        models.expression.member_roles(),
        ["face_expression", "test_va"]
    );
    let faces = faces_of(&mut models, &image);
    assert_eq!(faces.len(), 1);
    let f = &faces[0];
    assert!(f.regressed && f.encoded);
    assert!((f.valence - 0.5).abs() < 1e-5, "valence {}", f.valence);
    assert!((f.arousal + 0.5).abs() < 1e-5, "arousal {}", f.arousal);
    // The probabilities are the classifying member's alone; the table is not used.
    assert_eq!(f.probs, reference[0].probs);
    assert!(!reference[0].regressed);
    assert_ne!(reference[0].valence, f.valence);
}

#[test]
fn classes_va_head_maps_classes_and_regresses() {
    // HSEmotion's layout: 8 logits (Anger, Contempt, Disgust, Fear, Happiness, Neutral,
    // Sadness, Surprise), valence at 8, arousal at 9; NCHW RGB 112 input.
    let ln = |x: f32| x.ln();
    let bias = [
        ln(1.0),
        ln(3.0), // contempt: dropped
        ln(1.0),
        ln(1.0),
        ln(4.0),
        ln(2.0),
        ln(1.0),
        ln(1.0),
        0.6,
        -0.4,
    ];
    let model = common::onnx::pooled_linear(112, 3, false, &[0.0; 30], &bias);
    let input = "layout = 'NCHW'\ncolor = 'RGB'\nsize = [112, 112]\nmean = [0.5]\nstd = [0.5]";
    let head = "kind = 'classes_va'\nactivation = 'logits'\n\
        labels = ['Anger', 'Contempt', 'Disgust', 'Fear', 'Happiness', 'Neutral', 'Sadness', 'Surprise']\n\
        valence_index = 8\narousal_index = 9\n\
        [head.map]\nAnger = 'angry'\nContempt = ''\nDisgust = 'disgust'\nFear = 'fear'\n\
        Happiness = 'happy'\nNeutral = 'neutral'\nSadness = 'sad'\nSurprise = 'surprise'";
    let (toml, dir) = setup(
        "classes-va-head",
        &[("test_cva.onnx", model.clone())],
        &[("test_cva", entry("test_cva.onnx", &model, input, head))],
        &[("cva", &["test_cva"])],
    );
    let mut models = Models::load(&options(&toml, &dir, "cva")).unwrap_or_else(|e| {
        panic!("{e}");
    });
    let faces = faces_of(&mut models, &first_happy());
    let f = &faces[0];
    // Common order angry, disgust, fear, happy, sad, surprise, neutral; weights 1,1,1,4,1,1,2
    // over 11 once contempt is dropped.
    let want = [1.0, 1.0, 1.0, 4.0, 1.0, 1.0, 2.0].map(|w| w / 11.0);
    for (p, w) in f.probs.iter().zip(want) {
        assert!((p - w).abs() < 1e-5, "{:?} vs {want:?}", f.probs);
    }
    assert!(f.regressed);
    assert!((f.valence - 0.6).abs() < 1e-5 && (f.arousal + 0.4).abs() < 1e-5);
    assert_eq!(models.expression.head().labels.len(), 7);
}

#[test]
fn a_head_asking_for_more_outputs_than_the_model_gives_names_the_model() {
    // Two outputs, but the head wants the arousal at index 5.
    let model = common::onnx::pooled_linear(64, 1, true, &[0.0, 0.0], &[0.1, 0.2]);
    let head = "kind = 'va'\nvalence_index = 0\narousal_index = 5";
    let (toml, dir) = setup(
        "va-short",
        &[("short_va.onnx", model.clone())],
        &[("short_va", entry("short_va.onnx", &model, GRAY64, head))],
        &[("mini+short", &["face_expression", "short_va"])],
    );
    let err = Models::load(&options(&toml, &dir, "mini+short"))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("short_va.onnx") && err.contains("(short_va)") && err.contains("too few"),
        "{err}"
    );
    // A classifier whose label count does not match its outputs.
    let head = "kind = 'classes'\nlabels = ['angry', 'happy', 'sad']";
    let (toml, dir) = setup(
        "classes-short",
        &[("short_cls.onnx", model.clone())],
        &[("short_cls", entry("short_cls.onnx", &model, GRAY64, head))],
        &[("short", &["short_cls"])],
    );
    let err = Models::load(&options(&toml, &dir, "short"))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("short_cls.onnx") && err.contains("3 labels"),
        "{err}"
    );
}

#[test]
fn missing_or_invalid_indices_are_manifest_errors_naming_the_model() {
    let model = common::onnx::pooled_linear(64, 1, true, &[0.0, 0.0], &[0.1, 0.2]);
    for (head, what) in [
        ("kind = 'va'\nvalence_index = 0", "arousal_index"),
        (
            "kind = 'va'\nvalence_index = 1\narousal_index = 1",
            "both 1",
        ),
        (
            "kind = 'classes_va'\nlabels = ['happy', 'sad']\nvalence_index = 1\narousal_index = 2",
            "among the 2 class outputs",
        ),
        (
            "kind = 'va'\nvalence_index = 0\narousal_index = 1\nrange = [1.0, -1.0]",
            "low < high",
        ),
    ] {
        let (toml, dir) = setup(
            "bad-index",
            &[("bad_va.onnx", model.clone())],
            &[("bad_va", entry("bad_va.onnx", &model, GRAY64, head))],
            &[("mini+bad", &["face_expression", "bad_va"])],
        );
        let err = Models::load(&options(&toml, &dir, "mini+bad"))
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("'bad_va'") && err.contains("bad_va.onnx") && err.contains(what),
            "{what}: {err}"
        );
    }
}

#[test]
fn schedule_encodes_every_kth_frame_and_new_tracks_at_once() {
    let (toml, dir) = setup("schedule", &[], &[], &[]);
    let clip = common::testdata().join("face_video/mead_dreamtalk/M030_front_happy_level3_001.mp4");
    for (k, set) in [(1u32, "mini"), (3, "mini"), (3, "big+faceapi")] {
        let mut opts = options(&toml, &dir, set);
        opts.face.detector.score_threshold = 0.9;
        opts.expression.encode_every = Some(k);
        let mut models = Models::load(&opts).unwrap();
        assert_eq!(models.expression.encode_every(), k);
        models.face.reset();
        let source = Source::parse(clip.to_str().unwrap()).unwrap();
        let (capture, outputs) = Capture::start(&source).unwrap();
        // As in the pipeline: frames are processed on their own thread while this one runs the
        // capture's bus loop; the audio (nobody reads it here) is drained.
        let affectstream::capture::CaptureOutputs {
            video,
            audio,
            layout,
        } = outputs;
        let drain = std::thread::spawn(move || {
            let _layout = layout;
            for _ in audio {}
        });
        let worker = std::thread::spawn(move || {
            let mut flags = Vec::new();
            let mut last: Option<FaceEstimate> = None;
            for frame in video {
                let batch = models.face.process(frame).unwrap();
                let faces = models.expression.process(batch).unwrap().faces;
                let Some(f) = faces.into_iter().next() else {
                    continue;
                };
                if !f.encoded {
                    let prev = last
                        .as_ref()
                        .expect("a reused estimate follows an encoded one");
                    assert_eq!(prev.id, f.id);
                    assert_eq!((&prev.probs, prev.valence), (&f.probs, f.valence));
                }
                flags.push(f.encoded);
                last = Some(f);
            }
            flags
        });
        capture.wait().unwrap();
        let flags = worker.join().unwrap();
        drain.join().unwrap();
        assert!(flags.len() >= 50, "a face in most frames: {}", flags.len());
        assert!(flags[0], "a new track is encoded at once");
        let encoded = flags.iter().filter(|e| **e).count();
        let n = flags.len();
        match (k, set) {
            (1, _) => assert_eq!(encoded, n),
            // Every 3rd frame, plus the frames whose crop moved.
            (_, "mini") => assert!(encoded >= n / 3 && encoded < n / 2, "{encoded} of {n}"),
            // Two members spread over the period: one on the 1st frame, one on the 2nd.
            _ => assert!(
                encoded >= 2 * n / 3 - 1 && encoded < 3 * n / 4,
                "{encoded} of {n}"
            ),
        }
        // No gap longer than k - 1 frames.
        assert!(flags.windows(3).all(|w| w.contains(&true)), "{flags:?}");
    }
}

#[test]
fn default_schedule_is_every_frame_for_one_model_and_every_third_for_an_ensemble() {
    let (toml, dir) = setup("schedule-default", &[], &[], &[]);
    for (set, k) in [("mini", 1), ("big+faceapi", 3), ("all", 3)] {
        let models = Models::load(&options(&toml, &dir, set)).unwrap();
        assert_eq!(models.expression.encode_every(), k, "{set}");
        assert_eq!(models.expression.set_name(), set);
    }
}
