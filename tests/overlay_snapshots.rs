//! Snapshot tests of the overlay rendered from fixed pipeline states (egui_kittest, headless
//! through wgpu: lavapipe where there is no GPU). The images live in tests/snapshots/; run with
//! UPDATE_SNAPSHOTS=1 to (re)create them after an intended change, and look at them.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use affectstream::overlay::paint::{OverlayView, style};
use affectstream::overlay::state::{
    DisplayFrame, DisplayState, LatencyFigures, SourceState, Stats, VoiceInput,
};
use affectstream::record::{CalibrationState, FaceRecord, Fused, Record, StageTimes, VoiceRecord};
use eframe::egui;
use egui_kittest::{Harness, SnapshotOptions};

const W: u32 = 320;
const H: u32 = 180;

/// A synthetic 16:9 frame: a blue-grey gradient with a skin-toned oval where the face box is.
fn frame() -> DisplayFrame {
    let mut rgb = Vec::with_capacity((W * H * 3) as usize);
    for y in 0..H {
        for x in 0..W {
            let (dx, dy) = ((x as f32 - 160.0) / 28.0, (y as f32 - 80.0) / 36.0);
            if dx * dx + dy * dy < 1.0 {
                rgb.extend_from_slice(&[224, 172, 140]);
            } else {
                let g = (40 + y / 3) as u8;
                rgb.extend_from_slice(&[g / 2, g, (g as u32 + x / 4).min(255) as u8]);
            }
        }
    }
    DisplayFrame {
        serial: 1,
        index: 300,
        width: W,
        height: H,
        source_width: W * 4,
        source_height: H * 4,
        rgb: Arc::new(rgb),
    }
}

fn fused(v: f32, a: f32, conflict: f32, gv: f32, ga: f32) -> Fused {
    Fused {
        valence: v,
        arousal: a,
        conflict,
        conflict_valence: conflict,
        conflict_arousal: conflict * 0.5,
        conflict_active: conflict >= 0.35,
        gates_valence: [gv, 1.0 - gv],
        gates_arousal: [ga, 1.0 - ga],
        reliability: [0.9, 0.7],
    }
}

fn face(v: f32, a: f32, fused: Option<Fused>) -> FaceRecord {
    FaceRecord {
        id: 3,
        bbox: [532.0, 176.0, 224.0, 288.0],
        score: 0.93,
        landmarks: Some([
            [600.0, 280.0],
            [690.0, 280.0],
            [645.0, 330.0],
            [608.0, 390.0],
            [682.0, 390.0],
        ]),
        probs: vec![0.05, 0.0, 0.05, 0.6, 0.05, 0.05, 0.2],
        valence: v,
        arousal: a,
        valence_raw: v - 0.2,
        arousal_raw: a + 0.3,
        calibration: None,
        blur: 250.0,
        fused,
    }
}

fn voice(v: f32, a: f32) -> VoiceRecord {
    VoiceRecord {
        speech_prob: 0.95,
        speech_fraction: 0.8,
        probs: None,
        valence: Some(v),
        arousal: Some(a),
        valence_raw: Some(v),
        arousal_raw: Some(a),
        calibration: None,
        prosody: Some([v, a]),
        snr_db: Some(25.0),
        clipping: Some(0.0),
    }
}

fn record(t: f64, faces: Vec<FaceRecord>, voice: Option<VoiceRecord>, f: Option<Fused>) -> Record {
    Record {
        source: "clip.mp4".into(),
        stream: None,
        frame: Some((t * 30.0) as u64),
        t,
        latency_ms: Some(4.2),
        stages_ms: StageTimes {
            detect: Some(2.6),
            encode: Some(0.9),
            fuse: Some(0.01),
        },
        device: "cpu",
        faces,
        voice,
        fused: f,
        events: vec![],
    }
}

fn stats() -> Stats {
    Stats {
        input_fps: 30.0,
        output_fps: 30.0,
        dropped_frames: 0,
        display_skipped: 12,
        end_to_end: LatencyFigures {
            p50: 4.8,
            p99: 14.2,
        },
        stages: [
            ("detect", LatencyFigures { p50: 2.6, p99: 8.9 }),
            ("encode", LatencyFigures { p50: 0.8, p99: 2.5 }),
            (
                "fuse",
                LatencyFigures {
                    p50: 0.01,
                    p99: 0.02,
                },
            ),
        ],
        provider: "cpu".into(),
        audio_dropped: 0,
    }
}

/// A state that has played `seconds` of a record sequence made by `at(t)`.
fn played(seconds: f64, at: impl Fn(f64) -> Record) -> DisplayState {
    let mut state = DisplayState::new("clip.mp4");
    state.source_state = SourceState::Live;
    state.stats = stats();
    state.paint_fps = 30.0;
    let steps = (seconds * 30.0) as usize;
    for i in 0..=steps {
        state.push_record(at(i as f64 / 30.0));
    }
    state
}

fn wave(t: f64, period: f64, amplitude: f32) -> f32 {
    (amplitude as f64 * (t / period * std::f64::consts::TAU).sin()) as f32
}

fn render(name: &str, state: DisplayState) {
    let mut view = OverlayView::default();
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .with_context_setup(style)
        .wgpu()
        .build_ui(move |ui| view.show(ui, &state));
    harness.run();
    // Tolerates the small differences between renderers (lavapipe, llvmpipe, GPUs): a few
    // hundred anti-aliased edge pixels, not a moved panel.
    let options = SnapshotOptions::new().threshold(2.0).max_failed_pixels(400);
    harness.snapshot_options(name, &options);
}

#[test]
fn face_only() {
    let mut state = played(12.0, |t| {
        let (v, a) = (0.55 + wave(t, 7.0, 0.2), 0.2 + wave(t, 5.0, 0.15));
        record(
            t,
            vec![face(v, a, Some(fused(v, a, 0.0, 1.0, 1.0)))],
            None,
            Some(fused(v, a, 0.0, 1.0, 1.0)),
        )
    });
    state.voice_input = VoiceInput::Absent("no microphone found".into());
    state.frame = Some(frame());
    render("overlay_face_only", state);
}

#[test]
fn voice_only() {
    let state = played(20.0, |t| {
        let (v, a) = (-0.1 + wave(t, 9.0, 0.15), 0.5 + wave(t, 4.0, 0.3));
        let mut r = record(
            t,
            vec![],
            Some(voice(v, a)),
            Some(fused(v, a, 0.0, 0.0, 0.0)),
        );
        r.frame = None;
        r.latency_ms = None;
        r
    });
    render("overlay_voice_only", state);
}

#[test]
fn both_agreeing() {
    let mut state = played(30.0, |t| {
        let (fv, fa) = (0.6 + wave(t, 8.0, 0.15), 0.35 + wave(t, 6.0, 0.1));
        let (vv, va) = (fv - 0.1, fa + 0.1);
        let f = fused(0.7 * fv + 0.3 * vv, 0.4 * fa + 0.6 * va, 0.08, 0.7, 0.4);
        record(t, vec![face(fv, fa, Some(f))], Some(voice(vv, va)), Some(f))
    });
    state.frame = Some(frame());
    render("overlay_both_agreeing", state);
}

#[test]
fn calibrating_with_raw_values() {
    // Three seconds into a clip: the face is still calibrating; `v` shows the raw values too.
    let mut state = played(3.0, |t| {
        let (fv, fa) = (0.1 + wave(t, 4.0, 0.1), 0.05);
        let (vv, va) = (0.0, 0.1);
        let f = fused(0.7 * fv + 0.3 * vv, 0.4 * fa + 0.6 * va, 0.05, 0.7, 0.4);
        let mut face = face(fv, fa, Some(f));
        face.calibration = Some(CalibrationState {
            baseline: [-0.2, 0.3],
            observed_s: t as f32,
            warmed_up: false,
        });
        record(t, vec![face], Some(voice(vv, va)), Some(f))
    });
    state.frame = Some(frame());
    state.show_raw = true;
    render("overlay_calibrating_raw", state);
}

#[test]
fn conflict() {
    let mut state = played(30.0, |t| {
        // A smiling face with an angry voice, building up over the last 10 s.
        let build = ((t - 18.0) / 6.0).clamp(0.0, 1.0) as f32;
        let (fv, fa) = (0.7, 0.3);
        let (vv, va) = (0.5 - 1.1 * build, 0.2 + 0.55 * build);
        let f = fused(
            0.7 * fv + 0.3 * vv,
            0.4 * fa + 0.6 * va,
            0.05 + 0.6 * build,
            0.7,
            0.4,
        );
        record(t, vec![face(fv, fa, Some(f))], Some(voice(vv, va)), Some(f))
    });
    state.frame = Some(frame());
    state.recording = Some("affectstream-1764110000.jsonl".into());
    render("overlay_conflict", state);
}

#[test]
fn no_face() {
    let mut state = played(15.0, |t| {
        let (v, a) = (0.1, -0.2 + wave(t, 5.0, 0.1));
        record(
            t,
            vec![],
            Some(voice(v, a)),
            Some(fused(v, a, 0.0, 0.0, 0.0)),
        )
    });
    let mut empty = frame();
    empty.rgb = Arc::new(vec![60; (W * H * 3) as usize]);
    state.frame = Some(empty);
    render("overlay_no_face", state);
}

#[test]
fn reconnecting() {
    let mut state = played(8.0, |t| {
        let (v, a) = (0.3, 0.1);
        let f = fused(v, a, 0.05, 0.7, 0.4);
        record(
            t,
            vec![face(v, a, Some(f))],
            Some(voice(0.25, 0.2)),
            Some(f),
        )
    });
    state.frame = Some(frame());
    state.source = "rtsp://camera.local:8554/lobby".into();
    state.source_state = SourceState::Reconnecting;
    state.stats.input_fps = 0.0;
    state.stats.output_fps = 0.0;
    state.stats.dropped_frames = 3;
    state.paused = true;
    render("overlay_reconnecting", state);
}
