//! `affectstream bench` on real media: the table, the JSON report and the PNG plot, offline and
//! paced with passes looped up to a duration.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{run_binary, temp_dir, testdata};

#[test]
fn offline_bench_reports_percentiles_and_draws_a_plot() {
    let dir = temp_dir("bench");
    let report = dir.join("report.json");
    let src = testdata().join("face_video/mead_dreamtalk/M030_front_happy_level3_001.mp4");
    let o = run_binary(
        &[
            "bench",
            "--source",
            src.to_str().unwrap(),
            "--device",
            "cpu",
            "--report",
            report.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    for needle in [
        "end-to-end",
        "stage detect",
        "stage encode",
        "peak RSS",
        "output",
    ] {
        assert!(
            o.stdout.contains(needle),
            "table lacks {needle}: {}",
            o.stdout
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let stream = &json["per_stream"][0];
    assert_eq!(stream["frames_in"], stream["records_out"]);
    assert!(stream["frames_in"].as_u64().unwrap() > 50);
    assert_eq!(stream["frames_dropped"], 0);
    let e2e = &stream["end_to_end_ms"];
    assert!(e2e["p50"].as_f64().unwrap() <= e2e["p99"].as_f64().unwrap());
    assert!(json["peak_rss_mb"].as_f64().unwrap() > 10.0);
    let png = std::fs::read(report.with_extension("png")).expect("plot written");
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn paced_bench_loops_the_source_for_the_duration() {
    let src = testdata().join("av/constructed_pairs/congruent_M030_face-happy_voice-happy.mp4");
    let o = run_binary(
        &[
            "bench",
            "--source",
            src.to_str().unwrap(),
            "--device",
            "cpu",
            "--paced",
            "--duration",
            "6",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    assert!(o.stdout.contains("lag behind schedule"), "{}", o.stdout);
    // A 3.9 s clip at 25 fps, run for 6 s: more frames than one pass has.
    let frames: u64 = o
        .stdout
        .split("frames in ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("frame count");
    assert!(frames > 100, "{frames} frames in 6 s");
}
