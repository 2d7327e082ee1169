//! Per-person calibration through the real binary on a real talking-head stream: records carry
//! raw and calibrated values per modality, calibration warms up, `--calibration off` passes the
//! raw values through, and ordinary speech shows (almost) no conflict.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{read_jsonl, run_binary, temp_dir, testdata};

const LIMIT: Duration = Duration::from_secs(300);

fn run_stream(name: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let dir = temp_dir(&format!("calibration-{name}"));
    let out = dir.join("records.jsonl");
    let src = testdata().join("av/streams/reagan_clip1_muxed.mp4");
    let mut args = vec![
        "run",
        "--source",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    let o = run_binary(&args, LIMIT);
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    read_jsonl(&out)
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap()
}

#[test]
fn records_carry_raw_and_calibrated_values_and_calibration_warms_up() {
    // The baseline figures below are the mini-Xception's reading of this speaker.
    let records = run_stream("track", &["--face-encoders", "mini"]);
    assert!(records.len() > 700, "{} records", records.len());
    let faces: Vec<&serde_json::Value> = records
        .iter()
        .filter_map(|r| r["faces"].as_array().unwrap().first())
        .collect();
    assert!(faces.len() > 700);
    for face in &faces {
        for k in ["valence", "arousal", "valence_raw", "arousal_raw"] {
            let x = f(&face[k]);
            assert!((-1.0..=1.0).contains(&x), "{k} = {x}");
        }
        let c = &face["calibration"];
        for b in c["baseline"].as_array().unwrap() {
            assert!(f(b).abs() <= 0.6 + 1e-6);
        }
        // calibrated = raw - baseline (clamped).
        let expect = (f(&face["valence_raw"]) - f(&c["baseline"][0])).clamp(-1.0, 1.0);
        assert!((f(&face["valence"]) - expect).abs() < 1e-4);
    }
    // The first frames are still calibrating; after the prior's weight (5 s) of reliable
    // observations the track reports itself warmed up.
    assert_eq!(faces[0]["calibration"]["warmed_up"], false);
    let last = faces.last().unwrap();
    assert_eq!(last["calibration"]["warmed_up"], true);
    assert!(f(&last["calibration"]["observed_s"]) > 10.0);
    // This speaker's resting face reads about (-0.34, +0.30) raw with the mini-Xception (a
    // strong personal offset): the baseline has moved there from the population prior
    // (-0.02, +0.02).
    let b = &last["calibration"]["baseline"];
    assert!(f(&b[0]) < -0.15 && f(&b[1]) > 0.12, "{b}");
    // The voice is calibrated too.
    let voice = records
        .iter()
        .rev()
        .find_map(|r| r["voice"].as_object().filter(|v| v["valence"].is_number()))
        .expect("a voice record");
    assert!(voice["valence_raw"].is_number());
    assert_eq!(voice["calibration"]["warmed_up"], true);
    // Ordinary speech: the conflict is (almost) never shown.
    let active = records
        .iter()
        .filter(|r| r["fused"]["conflict_active"] == true)
        .count();
    assert!(
        active as f64 <= 0.05 * records.len() as f64,
        "conflict active in {active} of {} records",
        records.len()
    );
}

#[test]
fn calibration_off_passes_the_raw_values_through() {
    let records = run_stream("off", &["--calibration", "off"]);
    let mut faces = 0;
    for r in &records {
        for face in r["faces"].as_array().unwrap() {
            faces += 1;
            assert_eq!(face["valence"], face["valence_raw"]);
            assert_eq!(face["arousal"], face["arousal_raw"]);
            assert!(face["calibration"].is_null());
        }
        if let Some(v) = r["voice"].as_object() {
            assert_eq!(v["valence"], v["valence_raw"]);
            assert!(v["calibration"].is_null());
        }
    }
    assert!(faces > 700);
}

#[test]
fn bad_calibration_settings_name_the_key() {
    let dir = temp_dir("calibration-config");
    let src = testdata().join("av/streams/tedlieu_60s_256.mp4");
    for (text, key) in [
        (
            "[fusion.calibration]\nwindow_s = 0\n",
            "calibration.window_s",
        ),
        (
            "[fusion.calibration]\nquantile = 2\n",
            "calibration.quantile",
        ),
        (
            "[fusion.calibration]\nface_prior = [0.0, 3.0]\n",
            "calibration.face_prior",
        ),
        ("[fusion.calibration]\nwarmup = 3\n", "warmup"),
        ("[fusion.calibration]\nmode = \"sometimes\"\n", "sometimes"),
    ] {
        let config = dir.join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let o = run_binary(
            &[
                "run",
                "--source",
                src.to_str().unwrap(),
                "--out",
                dir.join("r.jsonl").to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ],
            LIMIT,
        );
        assert_eq!(o.code, Some(1), "{text}: {}", o.stderr);
        assert!(o.stderr.contains(key), "{text}: {}", o.stderr);
    }
}
