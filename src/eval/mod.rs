//! `affectstream eval`: runs the pipeline over labeled media and reports how well each modality
//! and the fusion agree with the labels: expression accuracy with a confusion matrix, valence and
//! arousal CCC, Spearman ρ and sign agreement against the label → (valence, arousal) table, and
//! the ROC AUC of the conflict score for conflict vs congruent audio-visual pairs, and what a user
//! sees: how often a conflict is shown on ordinary talking-head streams (false alarms) and on
//! conflicting and congruent pairs.

pub mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::capture::Source;
use crate::pipeline::{self, Models, PipelineError, RunOptions};
use crate::record::Record;
use crate::sink::JsonlTarget;

/// Errors of an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("cannot write the report {path}: {message}")]
    Report { path: PathBuf, message: String },
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Pipeline settings (device, models, stage settings).
    pub run: RunOptions,
    /// Labels CSV with columns `file,label,kind` (more columns are ignored).
    pub labels: PathBuf,
    /// Directory the `file` column is relative to.
    pub media_root: PathBuf,
    /// Label → valence/arousal CSV (columns `dataset_label`, `valence_m1_p1`,
    /// `arousal_m1_p1`).
    pub va_table: PathBuf,
    /// Kinds of rows to evaluate (face_image, face_video, speech, av_pair, av_labeled_av).
    pub kinds: Vec<String>,
    /// At most this many files per kind (quick runs).
    pub limit_per_kind: Option<usize>,
    /// JSON report path.
    pub report: Option<PathBuf>,
    /// Face detector threshold for still images (small, tight FER crops).
    pub still_threshold: f32,
}

/// The kinds `eval` knows, in report order.
pub const KINDS: [&str; 6] = [
    "face_image",
    "face_video",
    "speech",
    "av_pair",
    "av_labeled_av",
    "av_streams",
];

/// A clip "shows" a conflict when an event is active in at least this share of its records.
pub const SHOWN_SHARE: f64 = 0.2;

/// What was fitted or tuned on the testdata, so a report can say which figures are in-sample.
pub const IN_SAMPLE: [&str; 5] = [
    "calibration priors: face prior from the 5 av_streams clips, voice prior from the same \
     streams (scripts/calibration/fit_priors.py); RAVDESS neutral/calm only checked",
    "conflict threshold (on/off) and smoothing: chosen on av_streams (false alarms) and \
     av_pair (detection): both conflict figures are in-sample",
    "prosody arousal/valence heads: fitted on the speech (RAVDESS) clips: voice figures on \
     speech are in-sample (0.726 leave-one-speaker-out when fitting)",
    "face crop (bare YuNet box) and the default face encoder(s): chosen on face_image and \
     face_video",
    "face label -> (valence, arousal) table: AffectNet category means (not testdata)",
];

/// What one file gave, aggregated over its records.
#[derive(Debug, Clone, Serialize)]
pub struct ClipResult {
    /// File, relative to the media root.
    pub file: String,
    /// Row kind.
    pub kind: String,
    /// Face label (or the only label).
    pub face_label: Option<String>,
    /// Voice label (audio-visual pairs, speech).
    pub voice_label: Option<String>,
    /// Conflict pair (true), congruent pair (false).
    pub conflict_pair: Option<bool>,
    /// Records read.
    pub records: usize,
    /// Records with a face.
    pub face_records: usize,
    /// Predicted expression class (argmax of the reliability-weighted mean probabilities).
    pub face_class: Option<String>,
    /// Face (valence, arousal): reliability-weighted mean over the clip.
    pub face_va: Option<[f64; 2]>,
    /// Voice (valence, arousal): reliability-weighted mean over the clip.
    pub voice_va: Option<[f64; 2]>,
    /// Fused (valence, arousal): mean over the clip.
    pub fused_va: Option<[f64; 2]>,
    /// Mean smoothed conflict over the records where both modalities are present.
    pub conflict: Option<f64>,
    /// Mean gates [face, voice] for valence and for arousal where both are present.
    pub gates: Option<[[f64; 2]; 2]>,
    /// Face (valence, arousal) before calibration: reliability-weighted mean over the clip.
    pub face_raw_va: Option<[f64; 2]>,
    /// Share of the clip's records during which a conflict event is active; `None` without a
    /// record that has a face.
    pub conflict_active_share: Option<f64>,
    /// Error running the file, if any.
    pub error: Option<String>,
}

/// Agreement of one modality with the labels over a set of clips.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Agreement {
    /// Clips with both a prediction and a label.
    pub n: usize,
    /// Expression accuracy (labels the classifier knows).
    pub accuracy: Option<f64>,
    /// Clips counted for accuracy.
    pub accuracy_n: usize,
    /// Valence CCC.
    pub valence_ccc: Option<f64>,
    /// Arousal CCC.
    pub arousal_ccc: Option<f64>,
    /// Valence Spearman ρ.
    pub valence_spearman: Option<f64>,
    /// Arousal Spearman ρ.
    pub arousal_spearman: Option<f64>,
    /// Valence sign agreement (labels with |valence| ≥ 0.1), and its count.
    pub valence_sign: Option<(f64, usize)>,
    /// Arousal sign agreement (labels with |arousal| ≥ 0.1), and its count.
    pub arousal_sign: Option<(f64, usize)>,
}

/// The pipeline settings an evaluation ran with: its figures are of these settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalSettings {
    /// Face expression ensemble set.
    pub face_set: String,
    /// The expression models run on a face track every n-th frame.
    pub encode_every: u32,
    /// Longest gap between two face detector runs on a video, in frames.
    pub detect_every: u32,
    /// Share of the picture outside the tracked faces whose change triggers a detection.
    pub detect_motion: f32,
    /// Per-track calibration: `track` or `off`.
    pub calibration: String,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Labels file.
    pub labels: String,
    /// The settings the figures are of.
    pub settings: EvalSettings,
    /// Per kind, per modality (face, voice, fused).
    pub agreement: BTreeMap<String, BTreeMap<String, Agreement>>,
    /// Face valence sign agreement on the non-neutral face videos.
    pub face_video_non_neutral_valence_sign: Option<(f64, usize)>,
    /// Confusion matrices of the face classifier per kind: rows are labels, columns are
    /// predictions (last column: no face).
    pub confusion: BTreeMap<String, Vec<(String, Vec<usize>)>>,
    /// Face valence sign agreement on the non-neutral face videos, before calibration.
    pub face_video_non_neutral_valence_sign_raw: Option<(f64, usize)>,
    /// Conflict ROC AUC over the audio-visual pairs (conflict vs congruent).
    pub conflict_auc: Option<f64>,
    /// Per talking-head stream (`av_streams` with video): the share of records with an active
    /// conflict, i.e. the false-alarm rate a user sees on ordinary speech.
    pub stream_false_alarms: Vec<(String, f64)>,
    /// Conflict pairs on which a conflict is shown (active in ≥ [`SHOWN_SHARE`] of the
    /// records): (shown, pairs).
    pub conflict_pairs_shown: (usize, usize),
    /// Congruent pairs on which a conflict is shown: (shown, pairs).
    pub congruent_pairs_shown: (usize, usize),
    /// What of the testdata was used for fitting or tuning ([`IN_SAMPLE`]).
    pub in_sample: Vec<String>,
    /// Pairs counted for the AUC: (conflict, congruent).
    pub conflict_auc_n: (usize, usize),
    /// Class labels of the face classifier (confusion columns).
    pub face_classes: Vec<String>,
    /// Every clip.
    pub clips: Vec<ClipResult>,
}

struct Row {
    file: String,
    label: String,
    kind: String,
}

/// Splits one CSV line (double quotes, doubled to escape).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>), EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .next()
        .map(csv_fields)
        .ok_or_else(|| EvalError::Format {
            path: path.to_owned(),
            message: "empty file".into(),
        })?;
    Ok((header, lines.map(csv_fields).collect()))
}

fn column(header: &[String], name: &str, path: &Path) -> Result<usize, EvalError> {
    header
        .iter()
        .position(|h| h.trim() == name)
        .ok_or_else(|| EvalError::Format {
            path: path.to_owned(),
            message: format!("no column '{name}'"),
        })
}

/// Reads the label → (valence, arousal) table.
pub fn read_va_table(path: &Path) -> Result<BTreeMap<String, [f64; 2]>, EvalError> {
    let (header, rows) = read_csv(path)?;
    let (l, v, a) = (
        column(&header, "dataset_label", path)?,
        column(&header, "valence_m1_p1", path)?,
        column(&header, "arousal_m1_p1", path)?,
    );
    let mut table = BTreeMap::new();
    for row in rows {
        let parse = |i: usize| row.get(i).and_then(|s| s.trim().parse::<f64>().ok());
        if let (Some(label), Some(val), Some(aro)) = (row.get(l), parse(v), parse(a)) {
            table.insert(label.trim().to_owned(), [val, aro]);
        }
    }
    Ok(table)
}

fn read_rows(path: &Path) -> Result<Vec<Row>, EvalError> {
    let (header, rows) = read_csv(path)?;
    let (f, l, k) = (
        column(&header, "file", path)?,
        column(&header, "label", path)?,
        column(&header, "kind", path)?,
    );
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(Row {
                file: r.get(f)?.trim().to_owned(),
                label: r.get(l)?.trim().to_owned(),
                kind: r.get(k)?.trim().to_owned(),
            })
        })
        .collect())
}

/// Parses an audio-visual pair label `face=X;voice=Y;conflict|congruent`.
fn parse_pair(label: &str) -> (Option<String>, Option<String>, Option<bool>) {
    let (mut face, mut voice, mut conflict) = (None, None, None);
    for part in label.split(';') {
        match part.split_once('=') {
            Some(("face", v)) => face = Some(v.to_owned()),
            Some(("voice", v)) => voice = Some(v.to_owned()),
            _ if part == "conflict" => conflict = Some(true),
            _ if part == "congruent" => conflict = Some(false),
            _ => {}
        }
    }
    (face, voice, conflict)
}

fn weighted_mean(values: &[([f64; 2], f64)]) -> Option<[f64; 2]> {
    if values.is_empty() {
        return None;
    }
    let total: f64 = values.iter().map(|(_, w)| w).sum();
    let (sum, norm) = if total > 1e-9 {
        (
            values.iter().fold([0.0, 0.0], |acc, (v, w)| {
                [acc[0] + v[0] * w, acc[1] + v[1] * w]
            }),
            total,
        )
    } else {
        (
            values
                .iter()
                .fold([0.0, 0.0], |acc, (v, _)| [acc[0] + v[0], acc[1] + v[1]]),
            values.len() as f64,
        )
    };
    Some([sum[0] / norm, sum[1] / norm])
}

/// Aggregates a clip's records.
fn aggregate(records: &[Record], classes: &[String]) -> ClipResult {
    let mut face_va = Vec::new();
    let mut face_raw_va = Vec::new();
    let mut active = 0usize;
    let mut probs_sum = vec![0.0f64; classes.len()];
    let mut voice_va = Vec::new();
    let mut fused_va = Vec::new();
    let mut conflicts = Vec::new();
    let mut gates = Vec::new();
    let mut face_records = 0;
    for r in records {
        if let Some(face) = r.faces.iter().max_by(|a, b| {
            (a.score * a.bbox[2] * a.bbox[3]).total_cmp(&(b.score * b.bbox[2] * b.bbox[3]))
        }) {
            face_records += 1;
            let w = face
                .fused
                .map_or(f64::from(face.score), |f| f64::from(f.reliability[0]));
            face_va.push(([f64::from(face.valence), f64::from(face.arousal)], w));
            face_raw_va.push((
                [f64::from(face.valence_raw), f64::from(face.arousal_raw)],
                w,
            ));
            for (s, p) in probs_sum.iter_mut().zip(&face.probs) {
                *s += w.max(1e-6) * f64::from(*p);
            }
        }
        if let Some(v) = &r.voice
            && let (Some(val), Some(aro)) = (v.valence, v.arousal)
        {
            let w = r.fused.map_or(f64::from(v.speech_fraction), |f| {
                f64::from(f.reliability[1])
            });
            voice_va.push(([f64::from(val), f64::from(aro)], w));
        }
        if r.fused.is_some_and(|f| f.conflict_active) {
            active += 1;
        }
        if let Some(f) = r.fused {
            fused_va.push(([f64::from(f.valence), f64::from(f.arousal)], 1.0));
            if f.reliability[0] > 0.0 && f.reliability[1] > 0.0 {
                conflicts.push(f64::from(f.conflict));
                gates.push([
                    [f64::from(f.gates_valence[0]), f64::from(f.gates_valence[1])],
                    [f64::from(f.gates_arousal[0]), f64::from(f.gates_arousal[1])],
                ]);
            }
        }
    }
    let face_class = (face_records > 0)
        .then(|| {
            probs_sum
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .and_then(|(i, _)| classes.get(i).cloned())
        })
        .flatten();
    let mean_gates = (!gates.is_empty()).then(|| {
        let n = gates.len() as f64;
        let mut m = [[0.0; 2]; 2];
        for g in &gates {
            for d in 0..2 {
                for k in 0..2 {
                    m[d][k] += g[d][k] / n;
                }
            }
        }
        m
    });
    ClipResult {
        file: String::new(),
        kind: String::new(),
        face_label: None,
        voice_label: None,
        conflict_pair: None,
        records: records.len(),
        face_records,
        face_class,
        face_va: weighted_mean(&face_va),
        voice_va: weighted_mean(&voice_va),
        fused_va: weighted_mean(&fused_va),
        conflict: (!conflicts.is_empty()).then(|| stats::mean(&conflicts)),
        gates: mean_gates,
        face_raw_va: weighted_mean(&face_raw_va),
        conflict_active_share: (face_records > 0).then(|| active as f64 / records.len() as f64),
        error: None,
    }
}

fn agreement(
    clips: &[&ClipResult],
    pick: impl Fn(&ClipResult) -> (Option<[f64; 2]>, Option<&String>),
    with_accuracy: bool,
    table: &BTreeMap<String, [f64; 2]>,
    classes: &[String],
) -> Agreement {
    let (mut pv, mut pa, mut lv, mut la) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut correct, mut counted) = (0, 0);
    for c in clips {
        let (pred, label) = pick(c);
        let Some(label) = label else { continue };
        if let (Some(p), Some(l)) = (pred, table.get(label)) {
            pv.push(p[0]);
            pa.push(p[1]);
            lv.push(l[0]);
            la.push(l[1]);
        }
        if with_accuracy && classes.contains(label) {
            counted += 1;
            if c.face_class.as_ref() == Some(label) {
                correct += 1;
            }
        }
    }
    let share = |(a, n): (usize, usize)| (n > 0).then(|| (a as f64 / n as f64, n));
    Agreement {
        n: pv.len(),
        accuracy: (counted > 0).then(|| correct as f64 / counted as f64),
        accuracy_n: counted,
        valence_ccc: stats::ccc(&pv, &lv),
        arousal_ccc: stats::ccc(&pa, &la),
        valence_spearman: stats::spearman(&pv, &lv),
        arousal_spearman: stats::spearman(&pa, &la),
        valence_sign: share(stats::sign_agreement(&pv, &lv, 0.1)),
        arousal_sign: share(stats::sign_agreement(&pa, &la, 0.1)),
    }
}

/// Runs the evaluation; `progress` is told each file as it starts.
pub fn evaluate(
    opts: &EvalOptions,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<EvalReport, EvalError> {
    let table = read_va_table(&opts.va_table)?;
    let mut rows = read_rows(&opts.labels)?;
    rows.retain(|r| opts.kinds.contains(&r.kind));
    if let Some(limit) = opts.limit_per_kind {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        rows.retain(|r| {
            let n = seen.entry(r.kind.clone()).or_default();
            *n += 1;
            *n <= limit
        });
    }
    let mut run = opts.run.clone();
    run.out = JsonlTarget::Discard;
    run.progress = false;
    let loaded = Models::load(&run)?;
    let classes = loaded.expression.head().labels.clone();
    let settings = EvalSettings {
        face_set: loaded.expression.set_name().to_owned(),
        encode_every: loaded.expression.encode_every(),
        detect_every: run.face.detect_interval,
        detect_motion: run.face.detect_motion,
        calibration: run.fusion.params.calibration.mode.name().to_owned(),
    };
    let mut models = Some(loaded);
    let video_threshold = run.face.detector.score_threshold;
    let mut clips = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        progress(i, rows.len(), &row.file);
        let path = opts.media_root.join(&row.file);
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = records.clone();
        let mut m = match models.take() {
            Some(m) => m,
            None => Models::load(&run)?,
        };
        m.face.set_score_threshold(if row.kind == "face_image" {
            opts.still_threshold
        } else {
            video_threshold
        });
        let outcome = Source::parse(&path.to_string_lossy())
            .map_err(PipelineError::from)
            .and_then(|source| {
                pipeline::run_with_models(&run, &source, m, move |r| {
                    if let Ok(mut v) = sink.lock() {
                        v.push(r.clone());
                    }
                })
            });
        let collected = records.lock().map(|v| v.clone()).unwrap_or_default();
        let mut clip = aggregate(&collected, &classes);
        match outcome {
            Ok((_, back)) => models = Some(back),
            Err(e) => {
                tracing::warn!("{}: {e}", row.file);
                clip.error = Some(e.to_string());
            }
        }
        clip.file = row.file.clone();
        clip.kind = row.kind.clone();
        if row.kind == "av_pair" {
            let (face, voice, conflict) = parse_pair(&row.label);
            clip.face_label = face;
            clip.voice_label = voice;
            clip.conflict_pair = conflict;
        } else {
            clip.face_label = Some(row.label.clone());
            clip.voice_label = Some(row.label.clone());
        }
        clips.push(clip);
    }
    let report = summarize(opts, settings, clips, &table, classes);
    if let Some(path) = &opts.report {
        let json = serde_json::to_string_pretty(&report).map_err(|e| EvalError::Report {
            path: path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(path, json).map_err(|e| EvalError::Report {
            path: path.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(report)
}

fn summarize(
    opts: &EvalOptions,
    settings: EvalSettings,
    clips: Vec<ClipResult>,
    table: &BTreeMap<String, [f64; 2]>,
    classes: Vec<String>,
) -> EvalReport {
    let mut agreement_by_kind = BTreeMap::new();
    let mut confusion = BTreeMap::new();
    for kind in KINDS {
        let of_kind: Vec<&ClipResult> = clips.iter().filter(|c| c.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        let mut per_modality = BTreeMap::new();
        if kind == "av_streams" {
            continue;
        }
        let has_face = kind != "speech";
        let has_voice = matches!(kind, "speech" | "av_pair" | "av_labeled_av");
        if has_face {
            per_modality.insert(
                "face".to_owned(),
                agreement(
                    &of_kind,
                    |c| (c.face_va, c.face_label.as_ref()),
                    true,
                    table,
                    &classes,
                ),
            );
        }
        if has_face {
            per_modality.insert(
                "face_raw".to_owned(),
                agreement(
                    &of_kind,
                    |c| (c.face_raw_va, c.face_label.as_ref()),
                    false,
                    table,
                    &classes,
                ),
            );
        }
        if has_voice {
            per_modality.insert(
                "voice".to_owned(),
                agreement(
                    &of_kind,
                    |c| (c.voice_va, c.voice_label.as_ref()),
                    false,
                    table,
                    &classes,
                ),
            );
        }
        per_modality.insert(
            "fused".to_owned(),
            agreement(
                &of_kind,
                |c| (c.fused_va, c.face_label.as_ref()),
                false,
                table,
                &classes,
            ),
        );
        agreement_by_kind.insert(kind.to_owned(), per_modality);
        if has_face {
            let mut rows: Vec<(String, Vec<usize>)> = classes
                .iter()
                .map(|c| (c.clone(), vec![0; classes.len() + 1]))
                .collect();
            for c in &of_kind {
                let Some(label) = &c.face_label else { continue };
                let Some(row) = rows.iter_mut().find(|(l, _)| l == label) else {
                    continue;
                };
                let column = c
                    .face_class
                    .as_ref()
                    .and_then(|p| classes.iter().position(|k| k == p))
                    .unwrap_or(classes.len());
                row.1[column] += 1;
            }
            confusion.insert(kind.to_owned(), rows);
        }
    }
    let non_neutral: Vec<&ClipResult> = clips
        .iter()
        .filter(|c| c.kind == "face_video" && c.face_label.as_deref() != Some("neutral"))
        .collect();
    // Valence sign agreement of the face (calibrated or raw) with the labels: (share, n).
    let valence_sign = |pick: fn(&ClipResult) -> Option<[f64; 2]>| {
        let (predicted, labelled): (Vec<f64>, Vec<f64>) = non_neutral
            .iter()
            .filter_map(|c| Some((pick(c)?[0], table.get(c.face_label.as_ref()?)?[0])))
            .unzip();
        let (agree, n) = stats::sign_agreement(&predicted, &labelled, 0.0);
        (n > 0).then(|| (agree as f64 / n as f64, n))
    };
    let stream_false_alarms = clips
        .iter()
        .filter(|c| c.kind == "av_streams")
        .filter_map(|c| Some((c.file.clone(), c.conflict_active_share?)))
        .collect();
    let shown = |conflict: bool| {
        let of: Vec<&ClipResult> = clips
            .iter()
            .filter(|c| c.kind == "av_pair" && c.conflict_pair == Some(conflict))
            .collect();
        let shown = of
            .iter()
            .filter(|c| c.conflict_active_share.is_some_and(|s| s >= SHOWN_SHARE))
            .count();
        (shown, of.len())
    };
    let pairs: Vec<(f64, bool)> = clips
        .iter()
        .filter(|c| c.kind == "av_pair")
        .filter_map(|c| Some((c.conflict.unwrap_or(0.0), c.conflict_pair?)))
        .collect();
    let scores: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let positive: Vec<bool> = pairs.iter().map(|p| p.1).collect();
    EvalReport {
        labels: opts.labels.display().to_string(),
        settings,
        agreement: agreement_by_kind,
        face_video_non_neutral_valence_sign: valence_sign(|c| c.face_va),
        face_video_non_neutral_valence_sign_raw: valence_sign(|c| c.face_raw_va),
        stream_false_alarms,
        conflict_pairs_shown: shown(true),
        congruent_pairs_shown: shown(false),
        in_sample: IN_SAMPLE.iter().map(|s| (*s).to_owned()).collect(),
        confusion,
        conflict_auc: stats::roc_auc(&scores, &positive),
        conflict_auc_n: (
            positive.iter().filter(|p| **p).count(),
            positive.iter().filter(|p| !**p).count(),
        ),
        face_classes: classes,
        clips,
    }
}

/// The report as a text table.
pub fn table(report: &EvalReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let s = &report.settings;
    writeln!(
        out,
        "settings: face set {}, encode every {}, detect every {} (motion {}), calibration {}",
        s.face_set, s.encode_every, s.detect_every, s.detect_motion, s.calibration
    )
    .ok();
    let f = |v: Option<f64>| v.map_or("    -".to_owned(), |v| format!("{v:5.2}"));
    let pct = |v: Option<(f64, usize)>| {
        v.map_or("       -".to_owned(), |(v, n)| {
            format!("{:4.0}%/{n:<3}", v * 100.0)
        })
    };
    writeln!(
        out,
        "{:<14} {:<6} {:>4} {:>9} {:>6} {:>6} {:>6} {:>6} {:>9} {:>9}",
        "set", "modal.", "n", "accuracy", "V-CCC", "A-CCC", "V-rho", "A-rho", "V-sign", "A-sign"
    )
    .ok();
    for (kind, modalities) in &report.agreement {
        for (modality, a) in modalities {
            let acc = a.accuracy.map_or("        -".to_owned(), |v| {
                format!("{:5.1}%/{:<3}", v * 100.0, a.accuracy_n)
            });
            writeln!(
                out,
                "{kind:<14} {modality:<6} {:>4} {acc:>9} {} {} {} {} {} {}",
                a.n,
                f(a.valence_ccc),
                f(a.arousal_ccc),
                f(a.valence_spearman),
                f(a.arousal_spearman),
                pct(a.valence_sign),
                pct(a.arousal_sign)
            )
            .ok();
        }
    }
    if let Some((v, n)) = report.face_video_non_neutral_valence_sign {
        writeln!(
            out,
            "face valence sign agreement, non-neutral face videos: {:.1} % of {n}",
            v * 100.0
        )
        .ok();
    }
    if let Some((v, n)) = report.face_video_non_neutral_valence_sign_raw {
        writeln!(out, "  (before calibration: {:.1} % of {n})", v * 100.0).ok();
    }
    if let Some(auc) = report.conflict_auc {
        let (c, k) = report.conflict_auc_n;
        writeln!(
            out,
            "conflict ROC AUC (av_pair, {c} conflict vs {k} congruent): {auc:.3}"
        )
        .ok();
    }
    let (cs, cn) = report.conflict_pairs_shown;
    let (ks, kn) = report.congruent_pairs_shown;
    if cn + kn > 0 {
        let pct = |a: usize, n: usize| 100.0 * a as f64 / n.max(1) as f64;
        writeln!(
            out,
            "conflict shown (active in >= {:.0} % of records): {cs}/{cn} conflict pairs ({:.0} %), \
             {ks}/{kn} congruent pairs ({:.0} %)",
            SHOWN_SHARE * 100.0,
            pct(cs, cn),
            pct(ks, kn)
        )
        .ok();
    }
    for (file, share) in &report.stream_false_alarms {
        writeln!(
            out,
            "false alarms (conflict active) on {file}: {:.1} % of records",
            share * 100.0
        )
        .ok();
    }
    if !report.in_sample.is_empty() {
        writeln!(out, "in-sample (fitted or tuned on this testdata):").ok();
        for note in &report.in_sample {
            writeln!(out, "  - {note}").ok();
        }
    }
    for (kind, rows) in &report.confusion {
        writeln!(
            out,
            "confusion ({kind}; rows: label, columns: {:?} + no face)",
            report.face_classes
        )
        .ok();
        for (label, counts) in rows {
            if counts.iter().sum::<usize>() > 0 {
                writeln!(out, "  {label:>9} {counts:?}").ok();
            }
        }
    }
    let failed: Vec<&ClipResult> = report.clips.iter().filter(|c| c.error.is_some()).collect();
    for c in failed {
        writeln!(
            out,
            "failed: {}: {}",
            c.file,
            c.error.as_deref().unwrap_or("")
        )
        .ok();
    }
    out
}
