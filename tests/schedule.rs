//! The detection schedule on the five real talking-head streams: at `--detect-every 4` (the
//! density setting) against detecting on every frame, the same frames have a face, no track id
//! changes, the carried and followed boxes stay on the face, and the detector runs on about a
//! quarter of the frames (the end-of-stream schedule log says how often and why).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::process::Running;
use common::{read_jsonl, temp_dir, testdata};

const STREAMS: [&str; 5] = [
    "tedlieu_60s_256.mp4",
    "Obama_clip2_muxed.mp4",
    "andrew_clip_2_muxed.mp4",
    "reagan_clip1_muxed.mp4",
    "obama_dnc2020_cspan_64s_720p.mp4",
];

/// The records of `run --detect-every interval` on `stream`, and the detections the schedule
/// log counted.
fn run(stream: &str, interval: u32) -> (Vec<serde_json::Value>, u64) {
    let dir = temp_dir(&format!("schedule-{interval}-{stream}"));
    let out = dir.join("records.jsonl");
    let source = testdata().join("av/streams").join(stream);
    let interval = interval.to_string();
    let process = Running::start(
        &[
            "run",
            "--source",
            source.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--detect-every",
            &interval,
        ],
        &[],
        "info",
    );
    let (code, _, stderr) = process.finish(Duration::from_secs(300));
    assert_eq!(code, Some(0), "{stderr}");
    let detections = stderr
        .lines()
        .find(|l| l.contains("face detector schedule"))
        .and_then(|l| l.split("detections=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no schedule log line:\n{stderr}"));
    let records = read_jsonl(&out);
    std::fs::remove_dir_all(dir).ok();
    (records, detections)
}

fn iou(a: &serde_json::Value, b: &serde_json::Value) -> f64 {
    let r = |v: &serde_json::Value| -> [f64; 4] {
        let b: Vec<f64> = v["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        [b[0], b[1], b[0] + b[2], b[1] + b[3]]
    };
    let (a, b) = (r(a), r(b));
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |x: [f64; 4]| (x[2] - x[0]) * (x[3] - x[1]);
    inter / (area(a) + area(b) - inter)
}

fn faces(record: &serde_json::Value) -> &Vec<serde_json::Value> {
    record["faces"].as_array().unwrap()
}

fn ids(records: &[serde_json::Value]) -> BTreeSet<u64> {
    records
        .iter()
        .flat_map(faces)
        .map(|f| f["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn every_4th_frame_detection_finds_the_same_faces_keeps_ids_and_boxes() {
    for stream in STREAMS {
        let (every, every_count) = run(stream, 1);
        let (sparse, sparse_count) = run(stream, 4);
        assert_eq!(every.len(), sparse.len(), "{stream}: records");
        let frames = every.len();
        assert_eq!(
            every_count as usize, frames,
            "{stream}: detector on every frame"
        );
        // The schedule: a quarter of the frames, plus what motion and lost faces asked for.
        let share = sparse_count as f64 / frames as f64;
        assert!(
            (0.24..=0.35).contains(&share),
            "{stream}: detector on {sparse_count} of {frames} frames"
        );
        let mut fits = Vec::new();
        for (i, (a, b)) in every.iter().zip(&sparse).enumerate() {
            assert_eq!(
                faces(a).len(),
                faces(b).len(),
                "{stream}: faces at frame {i}"
            );
            if let (Some(a), Some(b)) = (faces(a).first(), faces(b).first()) {
                fits.push(iou(a, b));
            }
        }
        assert!(
            fits.len() >= frames * 9 / 10,
            "{stream}: faces in few frames"
        );
        assert!(
            ids(&sparse).len() <= ids(&every).len(),
            "{stream}: track ids {:?} against {:?}",
            ids(&sparse),
            ids(&every)
        );
        let mean = fits.iter().sum::<f64>() / fits.len() as f64;
        let worst = fits.iter().copied().fold(f64::INFINITY, f64::min);
        eprintln!(
            "{stream}: {sparse_count} detections of {frames}; box IoU mean {mean:.3}, worst {worst:.3}"
        );
        assert!(mean >= 0.9, "{stream}: box IoU mean {mean:.3}");
        assert!(worst >= 0.5, "{stream}: box IoU worst {worst:.3}");
    }
}
