//! `affectstream bench` on real media: the table, the JSON report and the PNG plot, offline and
//! paced with passes looped up to a duration, and the `--capacity` search.

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
    let o = paced_bench(
        "av/constructed_pairs/congruent_M030_face-happy_voice-happy.mp4",
        &["--duration", "6"],
    );
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
    // The last pass is cut at the deadline, not run to its end.
    let wall = wall_seconds(&o.stdout);
    assert!(wall < 9.0, "6 s run took {wall} s of wall time");
}

/// `bench --paced` on the testdata file `clip` with `extra` arguments; checks it succeeded.
fn paced_bench(clip: &str, extra: &[&str]) -> common::Output {
    let src = testdata().join(clip);
    let mut args = vec![
        "bench",
        "--source",
        src.to_str().unwrap(),
        "--device",
        "cpu",
        "--paced",
    ];
    args.extend_from_slice(extra);
    let o = run_binary(&args, Duration::from_secs(120));
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    o
}

/// The `wall` figure of the `process:` line, in seconds.
fn wall_seconds(stdout: &str) -> f64 {
    stdout
        .split("wall ")
        .last()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no wall time in {stdout}"))
}

#[test]
fn paced_streams_of_a_long_file_stop_at_the_duration() {
    // A stopped capture used to wait for an end of stream that a queue had dropped: one of
    // eight paced streams of this 64 s file ran to its end (59 s) in a 20 s bench.
    let o = paced_bench(
        "av/streams/obama_dnc2020_cspan_64s_720p.mp4",
        &["--streams", "3", "--duration", "3"],
    );
    let wall = wall_seconds(&o.stdout);
    assert!(wall < 10.0, "3 s run took {wall} s of wall time");
    assert_eq!(o.stdout.matches("frames in ").count(), 3, "{}", o.stdout);
}

#[test]
fn capacity_searches_stream_counts_and_reports_every_trial() {
    let dir = temp_dir("bench-capacity");
    let report = dir.join("capacity.json");
    let src = testdata().join("face_video/mead_dreamtalk/M030_front_happy_level3_001.mp4");
    let o = run_binary(
        &[
            "bench",
            "--source",
            src.to_str().unwrap(),
            "--device",
            "cpu",
            "--capacity",
            "--max-streams",
            "2",
            "--warmup",
            "1",
            "--duration",
            "2",
            "--report",
            report.to_str().unwrap(),
        ],
        Duration::from_secs(180),
    );
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    let capacity: usize = o
        .stdout
        .strip_prefix("capacity: ")
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no capacity line: {}", o.stdout));
    for needle in [
        "paced stream(s) of",
        "late % (worst)",
        "CPU %/stream",
        "peak RSS MB",
        "late: a frame whose record is ready more than one frame interval",
    ] {
        assert!(o.stdout.contains(needle), "lacks {needle}: {}", o.stdout);
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["capacity"].as_u64(), Some(capacity as u64));
    assert_eq!(json["max_streams"], 2);
    assert_eq!(json["late_limit_percent"], 1.0);
    let trials = json["trials"].as_array().unwrap();
    // 1 first; 2 next only if 1 held; the answer is the largest count that held.
    assert_eq!(trials[0]["streams"], 1);
    let counts: Vec<u64> = trials
        .iter()
        .map(|t| t["streams"].as_u64().unwrap())
        .collect();
    let held: Vec<bool> = trials
        .iter()
        .map(|t| t["held"].as_bool().unwrap())
        .collect();
    assert_eq!(counts, if held[0] { vec![1, 2] } else { vec![1] });
    let best = counts
        .iter()
        .zip(&held)
        .filter(|(_, h)| **h)
        .map(|(n, _)| *n as usize)
        .max()
        .unwrap_or(0);
    assert_eq!(capacity, best);
    if capacity > 0 {
        assert!(o.stdout.contains(&format!("at {capacity} stream(s): CPU")));
    }
    for t in trials {
        let streams = t["streams"].as_u64().unwrap() as usize;
        assert_eq!(
            t["late_percent_per_stream"].as_array().unwrap().len(),
            streams
        );
        let late = t["late_percent"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&late), "{t}");
        assert_eq!(t["held"].as_bool().unwrap(), late <= 1.0, "{t}");
        // 25 fps for 2 counted seconds per stream, give or take the machine's load.
        assert!(
            t["frames_counted"].as_u64().unwrap() >= 10 * streams as u64,
            "{t}"
        );
        let e2e = &t["end_to_end_ms"];
        assert!(e2e["p50"].as_f64().unwrap() <= e2e["p99"].as_f64().unwrap());
        assert!(e2e["p99"].as_f64().unwrap() <= e2e["max"].as_f64().unwrap());
        assert!(t["cpu_percent"].as_f64().unwrap() > 0.0, "{t}");
        assert!(t["peak_rss_mb"].as_f64().unwrap() > 10.0, "{t}");
    }
    assert_eq!(
        json["mb_per_extra_stream"].is_number(),
        trials.len() == 2,
        "{json}"
    );
    let png = std::fs::read(report.with_extension("png")).expect("plot written");
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn capacity_with_a_stream_count_is_an_error() {
    let o = run_binary(
        &[
            "bench",
            "--source",
            "clip.mp4",
            "--capacity",
            "--streams",
            "2",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(o.code, Some(2), "stdout: {}", o.stdout);
    assert!(
        o.stderr
            .contains("'--capacity' cannot be used with '--streams"),
        "{}",
        o.stderr
    );
}
