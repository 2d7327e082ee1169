//! Regression test of the science: `eval` on the labeled testdata keeps the figures measured
//! when the calibration, the face table and the conflict threshold were set (docs/fusion.md §8):
//! face valence sign agreement on the 23 non-neutral face videos, voice arousal Spearman on
//! RAVDESS speech, conflict ROC AUC on the constructed pairs, the false-alarm rate on each
//! talking-head stream, and well-formed gates. The thresholds sit a little below the measured
//! figures; they guard against regressions, they are not the targets.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use affectstream::encode::runtime::DeviceRequest;
use affectstream::eval::{EvalOptions, evaluate};
use affectstream::pipeline::RunOptions;

/// Measured 65.2 % (15/23) with calibration (69.6 % raw), default face ensemble; see
/// docs/fusion.md §8.
const FACE_SIGN: f64 = 0.6;
/// Measured 0.679 (default face ensemble; 0.705 with the mini-Xception alone).
const CONFLICT_AUC: f64 = 0.63;

#[test]
fn eval_on_testdata_stays_above_the_targets() {
    let data = common::testdata();
    let opts = EvalOptions {
        run: RunOptions {
            device: DeviceRequest::Cpu,
            ..RunOptions::new("")
        },
        labels: data.join("LABELS.csv"),
        media_root: data.clone(),
        va_table: data.join("VA_MAPPING_NRC_VAD.csv"),
        kinds: vec![
            "face_video".into(),
            "speech".into(),
            "av_pair".into(),
            "av_streams".into(),
        ],
        limit_per_kind: None,
        report: None,
        still_threshold: 0.6,
    };
    let report = evaluate(&opts, |_, _, _| {}).expect("eval runs");
    print!("{}", affectstream::eval::table(&report));
    let s = &report.settings;
    assert_eq!(
        (s.face_set.as_str(), s.encode_every, s.detect_every),
        ("big+faceapi", 3, 2),
        "the figures below were measured at the defaults"
    );
    assert!(
        report.clips.iter().all(|c| c.error.is_none()),
        "every file ran"
    );

    let (sign, n) = report
        .face_video_non_neutral_valence_sign
        .expect("face videos evaluated");
    assert_eq!(n, 23);
    assert!(
        sign >= FACE_SIGN,
        "face valence sign agreement {sign:.3} < {FACE_SIGN}"
    );

    let voice = &report.agreement["speech"]["voice"];
    assert_eq!(voice.n, 48);
    let rho = voice.arousal_spearman.expect("arousal spearman");
    assert!(rho >= 0.5, "voice arousal Spearman {rho:.3} < 0.5");

    let auc = report.conflict_auc.expect("conflict AUC");
    assert_eq!(report.conflict_auc_n, (16, 7));
    assert!(
        auc >= CONFLICT_AUC,
        "conflict ROC AUC {auc:.3} < {CONFLICT_AUC}"
    );

    // What a user sees on ordinary talking heads: the conflict almost never lit.
    assert_eq!(
        report.stream_false_alarms.len(),
        5,
        "{:?}",
        report.stream_false_alarms
    );
    for (file, share) in &report.stream_false_alarms {
        assert!(
            *share <= 0.05,
            "{file}: conflict active in {:.1} % of records",
            share * 100.0
        );
    }
    let (_, conflict_pairs) = report.conflict_pairs_shown;
    let (congruent_shown, congruent_pairs) = report.congruent_pairs_shown;
    assert_eq!((conflict_pairs, congruent_pairs), (16, 7));
    assert!(
        congruent_shown <= 1,
        "conflict shown on {congruent_shown} congruent pairs"
    );
    assert!(!report.in_sample.is_empty());

    for clip in report.clips.iter().filter(|c| c.kind == "av_pair") {
        let gates = clip.gates.expect("both modalities present in every pair");
        for dimension in gates {
            assert!(dimension.iter().all(|g| (0.0..=1.0).contains(g)));
            assert!(
                (dimension[0] + dimension[1] - 1.0).abs() < 1e-3,
                "{dimension:?}"
            );
        }
    }
}

/// `eval` takes the detection schedule options of `run` and `bench`, and its report (table
/// and JSON) says which settings its figures are of.
#[test]
fn eval_reports_the_settings_it_ran_with() {
    let data = common::testdata();
    let dir = common::temp_dir("eval-settings");
    let report = dir.join("report.json");
    let labels = data.join("LABELS.csv");
    let out = common::run_binary(
        &[
            "eval",
            "--labels",
            labels.to_str().unwrap(),
            "--kinds",
            "av_streams",
            "--limit",
            "1",
            "--device",
            "cpu",
            "--detect-every",
            "4",
            "--detect-motion",
            "0.05",
            "--encode-every",
            "5",
            "--calibration",
            "off",
            "--report",
            report.to_str().unwrap(),
        ],
        std::time::Duration::from_secs(300),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let first = out.stdout.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "settings: face set big+faceapi, encode every 5, detect every 4 (motion 0.05), \
         calibration off"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let s = &json["settings"];
    assert_eq!(s["detect_every"], 4);
    assert_eq!(s["encode_every"], 5);
    assert_eq!(s["calibration"], "off");
    assert_eq!(json["clips"].as_array().map(Vec::len), Some(1));
    assert!(json["clips"][0]["error"].is_null(), "{}", json["clips"][0]);
    std::fs::remove_dir_all(&dir).ok();
}
