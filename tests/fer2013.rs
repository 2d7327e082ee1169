//! The expression models through our own detect + crop path on the 210 FER2013 test faces
//! (48x48 gray, 30 per class), for the face-ensemble sets of the manifest: the default at least
//! (mini-Xception) the Python reference's 50 % through its detect + crop path (chance is 14 %; the model's
//! published 66 % is on FER's own crops without detection), and the big-Xception + face-api
//! mean above what it measured here (54.8 %), a little below.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use affectstream::capture::{Capture, Source};
use affectstream::encode::runtime::DeviceRequest;
use affectstream::pipeline::{Models, RunOptions};

const CLASSES: [&str; 7] = [
    "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
];

/// Accuracy of the ensemble `set` (`None`: the manifest's default) on the 210 stills.
fn accuracy(set: Option<&str>) -> f64 {
    let mut options = RunOptions {
        device: DeviceRequest::Cpu,
        ..RunOptions::new("")
    };
    options.expression.set = set.map(String::from);
    // The Python reference detects at YuNet's usual 0.6 on these small, tight images.
    options.face.detector.score_threshold = 0.6;
    let mut models = Models::load(&options).expect("models (run scripts/setup.sh)");
    assert_eq!(models.expression.head().labels, CLASSES);
    let mut confusion = [[0u32; 8]; 7];
    let (mut correct, mut total) = (0, 0);
    for (truth, class) in CLASSES.iter().enumerate() {
        let dir = common::testdata().join("faces/fer2013").join(class);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for path in files {
            let source = Source::parse(path.to_str().unwrap()).unwrap();
            let (capture, outputs) = Capture::start(&source).unwrap();
            let frame = outputs.video.recv().expect("one decoded frame");
            models.face.reset();
            models.expression.reset();
            let batch = models.face.process(frame).unwrap();
            drop(outputs);
            capture.wait().unwrap();
            let faces = models.expression.process(batch).unwrap().faces;
            assert!(faces.iter().all(|f| f.encoded));
            let predicted = faces.first().map(|f| {
                (0..7)
                    .max_by(|&a, &b| f.probs[a].total_cmp(&f.probs[b]))
                    .unwrap()
            });
            let column = predicted.unwrap_or(7);
            confusion[truth][column] += 1;
            total += 1;
            if predicted == Some(truth) {
                correct += 1;
            }
        }
    }
    println!(
        "set {} ({}): rows: truth, columns: {CLASSES:?} + no face",
        models.expression.set_name(),
        models.expression.member_roles().join(" + ")
    );
    for (class, row) in CLASSES.iter().zip(confusion) {
        println!("{class:>9} {row:?}");
    }
    let accuracy = f64::from(correct) / f64::from(total);
    println!("accuracy {correct}/{total} = {:.1} %", accuracy * 100.0);
    assert_eq!(total, 210);
    accuracy
}

#[test]
fn fer2013_accuracy_of_the_mini_xception() {
    let accuracy = accuracy(Some("mini"));
    assert!(
        accuracy >= 0.50,
        "accuracy {accuracy:.3} below the Python reference's 0.50"
    );
}

#[test]
fn fer2013_accuracy_through_detect_and_crop() {
    // The default: the big-Xception + face-api mean.
    let accuracy = accuracy(None);
    assert!(
        accuracy >= 0.53,
        "accuracy {accuracy:.3} below 0.53 (measured 0.548)"
    );
}
