//! Regression test of the science: `eval` on the labeled testdata keeps every target of the
//! fusion issue — face valence sign agreement ≥ 75 % on the 23 non-neutral face videos, voice
//! arousal Spearman ≥ 0.5 on RAVDESS speech, conflict ROC AUC ≥ 0.70 on the constructed pairs —
//! and the gates it reports are well formed.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use affectstream::encode::runtime::DeviceRequest;
use affectstream::eval::{EvalOptions, evaluate};
use affectstream::pipeline::RunOptions;

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
        kinds: vec!["face_video".into(), "speech".into(), "av_pair".into()],
        limit_per_kind: None,
        report: None,
        still_threshold: 0.6,
    };
    let report = evaluate(&opts, |_, _, _| {}).expect("eval runs");
    print!("{}", affectstream::eval::table(&report));
    assert!(
        report.clips.iter().all(|c| c.error.is_none()),
        "every file ran"
    );

    let (sign, n) = report
        .face_video_non_neutral_valence_sign
        .expect("face videos evaluated");
    assert_eq!(n, 23);
    assert!(sign >= 0.75, "face valence sign agreement {sign:.3} < 0.75");

    let voice = &report.agreement["speech"]["voice"];
    assert_eq!(voice.n, 48);
    let rho = voice.arousal_spearman.expect("arousal spearman");
    assert!(rho >= 0.5, "voice arousal Spearman {rho:.3} < 0.5");

    let auc = report.conflict_auc.expect("conflict AUC");
    assert_eq!(report.conflict_auc_n, (16, 7));
    assert!(auc >= 0.70, "conflict ROC AUC {auc:.3} < 0.70");

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
