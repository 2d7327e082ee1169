//! Cross-stream batching through the real ONNX Runtime: a small generated model
//! (tests/common/onnx.rs) behind the batcher gives each stream its own outputs, in order, from
//! padded batches; and streams on one set of shared models give exactly the faces a stream on
//! models of its own gives.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use affectstream::capture::{Capture, Source};
use affectstream::pipeline::{Models, RunOptions, SharedModels};
use affectstream::runtime::batch::BatchPolicy;
use affectstream::runtime::batched_session::{SessionBackend, TensorItem};
use affectstream::runtime::{DeviceRequest, Runtime};

#[test]
fn a_generated_model_behind_the_batcher_answers_every_stream_in_order() {
    // output = mean(input) * [1, -2] + [0.5, 0.25] on 8x8x1 inputs.
    let model = common::onnx::pooled_linear(8, 1, true, &[1.0, -2.0], &[0.5, 0.25]);
    let dir = common::temp_dir("batching-generated");
    let path = dir.join("pooled.onnx");
    std::fs::write(&path, model).unwrap();
    let runtime = Runtime::new(DeviceRequest::Cpu).expect("ONNX Runtime (run scripts/setup.sh)");
    let session = runtime.session(&path).unwrap();
    let policy = BatchPolicy {
        sizes: vec![1, 2, 4, 8],
        deadline: Duration::from_secs(30),
        queue: 16,
        answer_timeout: Duration::from_secs(30),
        warm: true,
        inline: false,
    };
    let batcher = SessionBackend::new(session, "input")
        .start("pooled", policy, &[vec![8, 8, 1]])
        .unwrap();
    let item = |v: f32| TensorItem {
        data: vec![v; 64],
        dims: vec![8, 8, 1],
    };
    // Three streams; the round closes once each has been heard from, not at the deadline.
    let streams: Vec<_> = (0..3).map(|_| batcher.client()).collect();
    let handles: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(s, client)| {
            std::thread::spawn(move || {
                let values: Vec<f32> = (0..=s).map(|i| (10 * s + i) as f32).collect();
                let out = client
                    .run(values.iter().map(|v| item(*v)).collect())
                    .unwrap();
                (values, out)
            })
        })
        .collect();
    for h in handles {
        let (values, outputs) = h.join().unwrap();
        assert_eq!(values.len(), outputs.len());
        for (v, out) in values.iter().zip(outputs) {
            let row = &out.outputs[0];
            assert_eq!(row.len(), 2);
            assert!((row[0] - (v + 0.5)).abs() < 1e-4, "{v}: {row:?}");
            assert!((row[1] - (0.25 - 2.0 * v)).abs() < 1e-4, "{v}: {row:?}");
            assert_eq!(out.input, vec![*v; 64], "the input buffer comes back");
        }
    }
    let stats = batcher.stats();
    assert_eq!(stats.items.load(Ordering::Relaxed), 6);
    // Six items in one batch of 8 (2 padding rows), or, should a stream have come late,
    // fewer items per batch; never more than the items plus their padding.
    let (runs, padding) = (
        stats.inferences.load(Ordering::Relaxed),
        stats.padding.load(Ordering::Relaxed),
    );
    assert!((1..=3).contains(&runs), "{runs} inferences");
    if runs == 1 {
        assert_eq!(padding, 2);
    }
    // A wrong input size is an error for that request, not a hang or a panic.
    let client = batcher.client();
    let bad = TensorItem {
        data: vec![0.0; 10],
        dims: vec![8, 8, 1],
    };
    let err = client.run(vec![bad]).unwrap_err().to_string();
    assert!(err.contains("pooled") && err.contains("10 values"), "{err}");
    assert_eq!(client.run(vec![item(1.0)]).unwrap().len(), 1);
}

/// Faces (id, probabilities, valence) of each frame of `media` run through `models`.
fn faces(models: &mut Models, media: &std::path::Path) -> Vec<Vec<(u64, Vec<f32>, f32)>> {
    let source = Source::parse(media.to_str().unwrap()).unwrap();
    let (capture, outputs) = Capture::start(&source).unwrap();
    let audio = outputs.audio;
    let drain = std::thread::spawn(move || audio.iter().count());
    // The bus is watched meanwhile, as the pipeline does.
    let watch = std::thread::spawn(move || capture.wait());
    let mut all = Vec::new();
    for frame in outputs.video.iter() {
        let batch = models.face.process(frame).unwrap();
        let frame = models.expression.process(batch).unwrap();
        all.push(
            frame
                .faces
                .into_iter()
                .map(|f| (f.id, f.probs, f.valence))
                .collect(),
        );
    }
    watch.join().unwrap().unwrap();
    drain.join().unwrap();
    all
}

#[test]
fn streams_on_shared_models_see_what_a_stream_on_its_own_models_sees() {
    let options = RunOptions {
        device: DeviceRequest::Cpu,
        ..RunOptions::new("")
    };
    let media =
        common::testdata().join("face_video/mead_dreamtalk/M030_front_happy_level3_001.mp4");
    let mut alone = Models::load(&options).expect("models (run scripts/setup.sh)");
    let expected = faces(&mut alone, &media);
    assert!(expected.iter().flatten().count() > 10, "faces found");
    let shared = SharedModels::load(&options).unwrap();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let mut models = shared.stream().unwrap();
            let media = media.clone();
            std::thread::spawn(move || faces(&mut models, &media))
        })
        .collect();
    for h in handles {
        let got = h.join().unwrap();
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g.len(), e.len());
            for (g, e) in g.iter().zip(e) {
                assert_eq!(g.0, e.0);
                assert!((g.2 - e.2).abs() < 1e-4, "valence {} vs {}", g.2, e.2);
                for (p, q) in g.1.iter().zip(&e.1) {
                    assert!((p - q).abs() < 1e-4, "{:?} vs {:?}", g.1, e.1);
                }
            }
        }
    }
}
