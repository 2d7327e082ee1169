//! Painting the overlay from a [`DisplayState`]: pure functions of the state (plus a texture
//! cache for the video), so the live app and the snapshot tests draw exactly the same thing.
//!
//! ```text
//! ┌──────────────── video (native aspect, boxes, ids, landmarks) ─────┬── circumplex ──┐
//! │                                                                   │  gates V / A    │
//! │                                                                   │  conflict meter │
//! ├──────────────── timelines: fused valence, arousal, conflict (30 s) ┴────────────────┤
//! └──────────────── status line: state, fps, drops, latency, provider, keys ────────────┘
//! ```

use eframe::egui;
use egui::{
    Align2, Color32, CornerRadius, FontId, Pos2, Rect, RichText, Stroke, StrokeKind, Ui, Vec2,
    pos2, vec2,
};
use egui_plot::{
    HLine, Legend, Line, LineStyle, MarkerShape, Plot, PlotPoint, Points, Text, VLine,
};

use super::state::{DisplayState, HISTORY_SECONDS, SourceState, VoiceInput};

/// Colour of the face modality everywhere in the overlay.
pub const FACE: Color32 = Color32::from_rgb(79, 195, 247);
/// Colour of the voice modality.
pub const VOICE: Color32 = Color32::from_rgb(255, 183, 77);
/// Colour of the fused estimate.
pub const FUSED: Color32 = Color32::from_rgb(129, 230, 140);
/// Colour of conflict.
pub const CONFLICT: Color32 = Color32::from_rgb(239, 83, 80);
const MUTED: Color32 = Color32::from_gray(140);
const PANEL_BG: Color32 = Color32::from_rgb(18, 20, 24);

/// Width of the right-hand panel (circumplex, gates, conflict).
const SIDE_WIDTH: f32 = 340.0;
/// Height of the timeline panel.
const TIMELINE_HEIGHT: f32 = 170.0;

/// Draws the overlay and keeps the video texture between paints.
#[derive(Default)]
pub struct OverlayView {
    texture: Option<egui::TextureHandle>,
    serial: u64,
}

impl OverlayView {
    /// Paints the whole overlay for `state` into `ui`.
    pub fn show(&mut self, ui: &mut Ui, state: &DisplayState) {
        egui::Panel::bottom("affectstream-status")
            .resizable(false)
            .show(ui, |ui| status_line(ui, state));
        egui::Panel::bottom("affectstream-timelines")
            .resizable(false)
            .exact_size(TIMELINE_HEIGHT)
            .show(ui, |ui| timelines(ui, state));
        egui::Panel::right("affectstream-affect")
            .resizable(false)
            .exact_size(SIDE_WIDTH)
            .show(ui, |ui| {
                circumplex(ui, state);
                ui.add_space(6.0);
                gates(ui, state);
                ui.add_space(6.0);
                conflict_meter(ui, state);
            });
        egui::CentralPanel::no_frame().show(ui, |ui| self.video(ui, state));
    }

    /// Uploads the frame when it changed and returns the texture to draw.
    fn texture(&mut self, ctx: &egui::Context, state: &DisplayState) -> Option<egui::TextureId> {
        let frame = state.frame.as_ref()?;
        if self.serial != frame.serial || self.texture.is_none() {
            let image = egui::ColorImage::from_rgb(
                [frame.width as usize, frame.height as usize],
                &frame.rgb,
            );
            match &mut self.texture {
                Some(t) => t.set(image, egui::TextureOptions::LINEAR),
                None => {
                    self.texture =
                        Some(ctx.load_texture("affectstream-video", image, Default::default()))
                }
            }
            self.serial = frame.serial;
        }
        self.texture.as_ref().map(egui::TextureHandle::id)
    }

    /// The video at its native aspect with each face's box, id, estimate and landmarks.
    fn video(&mut self, ui: &mut Ui, state: &DisplayState) {
        let area = ui.available_rect_before_wrap();
        ui.allocate_rect(area, egui::Sense::hover());
        let painter = ui.painter_at(area);
        painter.rect_filled(area, 0.0, Color32::BLACK);
        let Some(frame) = state.frame.clone() else {
            let text = match &state.source_state {
                SourceState::Starting => "starting: loading models and opening the source…",
                SourceState::Reconnecting => "reconnecting to the source…",
                SourceState::Failed(_) => "the source failed (see the status line)",
                _ if state.record.is_some() => "audio-only source: no video",
                _ => "no video",
            };
            painter.text(
                area.center(),
                Align2::CENTER_CENTER,
                text,
                FontId::proportional(18.0),
                MUTED,
            );
            badges(&painter, area, state);
            return;
        };
        let aspect = frame.source_width as f32 / frame.source_height.max(1) as f32;
        let size = if area.width() / area.height().max(1.0) > aspect {
            vec2(area.height() * aspect, area.height())
        } else {
            vec2(area.width(), area.width() / aspect)
        };
        let rect = Rect::from_center_size(area.center(), size);
        if let Some(texture) = self.texture(ui.ctx(), state) {
            let uv = Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0));
            painter.image(texture, rect, uv, Color32::WHITE);
        }
        if matches!(state.source_state, SourceState::Reconnecting) {
            // The last picture, dimmed; its boxes are stale, so they go.
            painter.rect_filled(rect, 0.0, Color32::from_black_alpha(170));
            painter.text(
                rect.center(),
                Align2::CENTER_CENTER,
                "reconnecting to the source…",
                FontId::proportional(28.0),
                VOICE,
            );
            badges(&painter, area, state);
            return;
        }
        let scale = rect.width() / frame.source_width.max(1) as f32;
        let to_screen = |x: f32, y: f32| rect.min + vec2(x * scale, y * scale);
        if let Some(record) = &state.record {
            for face in &record.faces {
                let [x, y, w, h] = face.bbox;
                let b = Rect::from_min_max(to_screen(x, y), to_screen(x + w, y + h));
                let conflicted = face.fused.is_some_and(|f| f.conflict_active);
                let colour = if conflicted { CONFLICT } else { FACE };
                painter.rect_stroke(b, 3.0, Stroke::new(2.0, colour), StrokeKind::Outside);
                let mut label = match &face.fused {
                    Some(f) => format!(
                        "#{}  V {:+.2}  A {:+.2}  C {:.2}",
                        face.id, f.valence, f.arousal, f.conflict
                    ),
                    None => format!(
                        "#{}  V {:+.2}  A {:+.2}",
                        face.id, face.valence, face.arousal
                    ),
                };
                if face.calibration.is_some_and(|c| !c.warmed_up) {
                    label.push_str("  calibrating");
                }
                if state.show_raw {
                    label.push_str(&format!(
                        "\nface V {:+.2} A {:+.2}  raw V {:+.2} A {:+.2}",
                        face.valence, face.arousal, face.valence_raw, face.arousal_raw
                    ));
                }
                let galley = painter.layout_no_wrap(label, FontId::monospace(13.0), Color32::BLACK);
                let at = pos2(b.left() - 2.0, b.top() - galley.size().y - 4.0);
                let bg = Rect::from_min_size(at, galley.size() + vec2(8.0, 2.0));
                painter.rect_filled(bg, 3.0, colour);
                painter.galley(at + vec2(4.0, 1.0), galley, Color32::BLACK);
                if let Some(marks) = face.landmarks {
                    for [lx, ly] in marks {
                        painter.circle_filled(to_screen(lx, ly), 2.5, Color32::WHITE);
                        painter.circle_stroke(to_screen(lx, ly), 2.5, Stroke::new(1.0, colour));
                    }
                }
            }
            if record.faces.is_empty() && matches!(state.source_state, SourceState::Live) {
                painter.text(
                    rect.center_bottom() - vec2(0.0, 16.0),
                    Align2::CENTER_BOTTOM,
                    "no face in view",
                    FontId::proportional(18.0),
                    Color32::WHITE,
                );
            }
        }
        badges(&painter, area, state);
    }
}

/// PAUSED and REC badges in the video's corners.
fn badges(painter: &egui::Painter, area: Rect, state: &DisplayState) {
    let badge = |pos: Pos2, anchor: Align2, text: &str, colour: Color32| {
        let galley = painter.layout_no_wrap(text.to_owned(), FontId::proportional(15.0), colour);
        let rect = anchor.anchor_size(pos, galley.size() + vec2(14.0, 6.0));
        painter.rect(
            rect,
            4.0,
            Color32::from_black_alpha(180),
            Stroke::new(1.0, colour),
            StrokeKind::Inside,
        );
        painter.galley(rect.min + vec2(7.0, 3.0), galley, colour);
        rect
    };
    if state.paused {
        let _ = badge(
            area.left_top() + vec2(10.0, 10.0),
            Align2::LEFT_TOP,
            "PAUSED (display only; space resumes)",
            Color32::WHITE,
        );
    }
    if state.recording.is_some() {
        let rect = badge(
            area.right_top() + vec2(-10.0, 10.0),
            Align2::RIGHT_TOP,
            "     REC",
            CONFLICT,
        );
        painter.circle_filled(rect.left_center() + vec2(13.0, 0.0), 5.0, CONFLICT);
    }
}

fn points(points: impl IntoIterator<Item = [f32; 2]>) -> Vec<[f64; 2]> {
    points
        .into_iter()
        .map(|[v, a]| [f64::from(v), f64::from(a)])
        .collect()
}

/// The circumplex: valence horizontal, arousal vertical, both -1..1, with the face, voice and
/// fused points per face and their recent trails.
pub fn circumplex(ui: &mut Ui, state: &DisplayState) {
    ui.horizontal(|ui| {
        ui.label(RichText::new("Circumplex").strong());
        ui.add_space(8.0);
        for (marker, colour, name) in [
            (Marker::Circle, FACE, "face"),
            (Marker::Diamond, VOICE, "voice"),
            (Marker::Square, FUSED, "fused"),
        ] {
            marker_icon(ui, marker, colour);
            ui.label(RichText::new(name).color(colour));
        }
    });
    let side = ui.available_width().min(320.0);
    Plot::new("affectstream-circumplex")
        .width(side)
        .height(side)
        .data_aspect(1.0)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .allow_double_click_reset(false)
        .show_x(false)
        .show_y(false)
        .show_grid(false)
        .default_x_bounds(-1.08, 1.08)
        .default_y_bounds(-1.08, 1.08)
        .x_axis_label("valence")
        .y_axis_label("arousal")
        .show(ui, |plot| {
            let axis = Color32::from_gray(90);
            plot.hline(HLine::new("", 0.0).color(axis).width(1.0));
            plot.vline(VLine::new("", 0.0).color(axis).width(1.0));
            let circle: Vec<[f64; 2]> = (0..=72)
                .map(|i| {
                    let a = f64::from(i) / 72.0 * std::f64::consts::TAU;
                    [a.cos(), a.sin()]
                })
                .collect();
            plot.line(Line::new("", circle).color(axis).width(1.0));
            for (x, y, text) in [
                (0.62, 0.9, "excited · tense"),
                (-0.62, 0.9, "angry · afraid"),
                (-0.62, -0.9, "sad · bored"),
                (0.62, -0.9, "calm · content"),
            ] {
                plot.text(Text::new(
                    "",
                    PlotPoint::new(x, y),
                    RichText::new(text).size(11.0).color(MUTED),
                ));
            }
            let voice = match (&state.voice_input, state.record.as_ref()) {
                (VoiceInput::Present, Some(r)) => r
                    .voice
                    .as_ref()
                    .and_then(|v| Some([v.valence?, v.arousal?])),
                _ => None,
            };
            if voice.is_some() && state.voice_trail.len() > 1 {
                plot.line(
                    Line::new("", points(state.voice_trail.iter().copied()))
                        .color(VOICE.gamma_multiply(0.5))
                        .width(1.5),
                );
            }
            for trail in state.trails.values() {
                if trail.face.len() > 1 {
                    plot.line(
                        Line::new("", points(trail.face.iter().copied()))
                            .color(FACE.gamma_multiply(0.5))
                            .width(1.5),
                    );
                }
                if trail.fused.len() > 1 {
                    plot.line(
                        Line::new("", points(trail.fused.iter().copied()))
                            .color(FUSED.gamma_multiply(0.5))
                            .width(1.5),
                    );
                }
            }
            let Some(record) = &state.record else {
                return;
            };
            for face in &record.faces {
                if state.show_raw {
                    plot.points(
                        Points::new("face raw", points([[face.valence_raw, face.arousal_raw]]))
                            .shape(MarkerShape::Circle)
                            .filled(false)
                            .radius(6.0)
                            .color(FACE),
                    );
                }
                plot.points(
                    Points::new("face", points([[face.valence, face.arousal]]))
                        .shape(MarkerShape::Circle)
                        .radius(6.0)
                        .color(FACE),
                );
                if let Some(f) = &face.fused {
                    plot.points(
                        Points::new("fused", points([[f.valence, f.arousal]]))
                            .shape(MarkerShape::Square)
                            .radius(6.5)
                            .color(FUSED),
                    );
                }
                plot.text(Text::new(
                    "",
                    PlotPoint::new(
                        f64::from(face.valence) + 0.07,
                        f64::from(face.arousal) + 0.07,
                    ),
                    RichText::new(format!("#{}", face.id))
                        .size(11.0)
                        .color(FACE),
                ));
            }
            if let Some(v) = voice {
                plot.points(
                    Points::new("voice", points([v]))
                        .shape(MarkerShape::Diamond)
                        .radius(7.0)
                        .color(VOICE),
                );
            }
            // Voice alone (no face): the fused point is the voice-only track.
            if record.faces.is_empty()
                && let Some(f) = &record.fused
            {
                plot.points(
                    Points::new("fused", points([[f.valence, f.arousal]]))
                        .shape(MarkerShape::Square)
                        .radius(6.5)
                        .color(FUSED),
                );
            }
        });
    if let VoiceInput::Absent(why) = &state.voice_input {
        ui.label(RichText::new(format!("voice: absent ({why})")).color(MUTED));
    }
}

/// One horizontal bar split between the face's and the voice's share of a gate.
fn gate_bar(ui: &mut Ui, name: &str, gates: Option<[f32; 2]>) {
    ui.horizontal(|ui| {
        ui.add_sized([62.0, 20.0], egui::Label::new(name));
        let (rect, _) =
            ui.allocate_exact_size(vec2(ui.available_width() - 4.0, 20.0), egui::Sense::hover());
        let painter = ui.painter_at(rect);
        let radius = CornerRadius::same(4);
        let Some([face, voice]) = gates else {
            painter.rect_filled(rect, radius, Color32::from_gray(45));
            painter.text(
                rect.center(),
                Align2::CENTER_CENTER,
                "no estimate",
                FontId::proportional(12.0),
                MUTED,
            );
            return;
        };
        let total = (face + voice).max(1e-6);
        let split = rect.left() + rect.width() * (face / total).clamp(0.0, 1.0);
        let left = Rect::from_min_max(rect.min, pos2(split, rect.max.y));
        let right = Rect::from_min_max(pos2(split, rect.min.y), rect.max);
        painter.rect_filled(rect, radius, VOICE);
        painter.rect_filled(left, radius, FACE);
        if left.width() > 0.0 && right.width() > 0.0 {
            painter.line_segment(
                [left.right_top(), left.right_bottom()],
                Stroke::new(2.0, PANEL_BG),
            );
        }
        let font = FontId::proportional(12.0);
        if left.width() > 64.0 {
            painter.text(
                left.left_center() + vec2(6.0, 0.0),
                Align2::LEFT_CENTER,
                format!("face {:.0} %", face / total * 100.0),
                font.clone(),
                Color32::BLACK,
            );
        }
        if right.width() > 64.0 {
            painter.text(
                right.right_center() - vec2(6.0, 0.0),
                Align2::RIGHT_CENTER,
                format!("voice {:.0} %", voice / total * 100.0),
                font,
                Color32::BLACK,
            );
        }
    });
}

/// The modality gates per dimension: how much the face and the voice count for valence and
/// for arousal.
pub fn gates(ui: &mut Ui, state: &DisplayState) {
    ui.label(RichText::new("Gates (face | voice)").strong());
    let fused = state.record.as_ref().and_then(|r| r.fused);
    gate_bar(ui, "valence", fused.map(|f| f.gates_valence));
    gate_bar(ui, "arousal", fused.map(|f| f.gates_arousal));
}

/// The conflict meter: fills with the conflict and lights up above the threshold.
pub fn conflict_meter(ui: &mut Ui, state: &DisplayState) {
    let fused = state.record.as_ref().and_then(|r| r.fused);
    let conflict = fused.map_or(0.0, |f| f.conflict);
    let lit = fused.is_some_and(|f| f.conflict_active || f.conflict >= state.conflict_threshold);
    ui.horizontal(|ui| {
        ui.label(RichText::new("Conflict").strong());
        if let Some(f) = fused {
            ui.label(
                RichText::new(format!(
                    "{:.2}  (valence {:.2}, arousal {:.2})",
                    f.conflict, f.conflict_valence, f.conflict_arousal
                ))
                .monospace(),
            );
        }
    });
    let (rect, _) =
        ui.allocate_exact_size(vec2(ui.available_width() - 4.0, 30.0), egui::Sense::hover());
    let painter = ui.painter_at(rect.expand(3.0));
    let radius = CornerRadius::same(5);
    painter.rect_filled(rect, radius, Color32::from_gray(40));
    let fill = Rect::from_min_max(
        rect.min,
        pos2(
            rect.left() + rect.width() * conflict.clamp(0.0, 1.0),
            rect.max.y,
        ),
    );
    let colour = if lit {
        CONFLICT
    } else {
        CONFLICT.gamma_multiply(0.45)
    };
    painter.rect_filled(fill, radius, colour);
    let tx = rect.left() + rect.width() * state.conflict_threshold.clamp(0.0, 1.0);
    painter.line_segment(
        [pos2(tx, rect.top() - 2.0), pos2(tx, rect.bottom() + 2.0)],
        Stroke::new(2.0, Color32::WHITE),
    );
    if lit {
        painter.rect_stroke(
            rect,
            radius,
            Stroke::new(2.5, CONFLICT),
            StrokeKind::Outside,
        );
        painter.text(
            rect.right_center() - vec2(8.0, 0.0),
            Align2::RIGHT_CENTER,
            "CONFLICT",
            FontId::proportional(16.0),
            Color32::WHITE,
        );
    } else {
        painter.text(
            rect.right_center() - vec2(8.0, 0.0),
            Align2::RIGHT_CENTER,
            if fused.is_some() { "agree" } else { "—" },
            FontId::proportional(14.0),
            MUTED,
        );
    }
}

/// Rolling timelines of the fused valence, arousal and conflict over the last 30 s.
pub fn timelines(ui: &mut Ui, state: &DisplayState) {
    let now = state.latest_t();
    let series = |f: fn(&super::state::HistoryPoint) -> f32| -> Vec<[f64; 2]> {
        state
            .history
            .iter()
            .map(|p| [p.t - now, f64::from(f(p))])
            .collect()
    };
    Plot::new("affectstream-timelines")
        .height(ui.available_height())
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .allow_double_click_reset(false)
        .default_x_bounds(-HISTORY_SECONDS, 0.0)
        .default_y_bounds(-1.05, 1.05)
        .x_axis_label("seconds (stream time)")
        .legend(Legend::default().position(egui_plot::Corner::LeftTop))
        .show(ui, |plot| {
            plot.hline(
                HLine::new("conflict threshold", f64::from(state.conflict_threshold))
                    .color(CONFLICT.gamma_multiply(0.6))
                    .style(LineStyle::dashed_loose())
                    .width(1.0),
            );
            plot.line(
                Line::new("valence", series(|p| p.valence))
                    .color(FACE)
                    .width(2.0),
            );
            plot.line(
                Line::new("arousal", series(|p| p.arousal))
                    .color(VOICE)
                    .width(2.0),
            );
            plot.line(
                Line::new("conflict", series(|p| p.conflict))
                    .color(CONFLICT)
                    .width(2.0),
            );
        });
}

/// Source state, rates, drops, latencies, provider, recording and the keys.
pub fn status_line(ui: &mut Ui, state: &DisplayState) {
    let s = &state.stats;
    let colour = match &state.source_state {
        SourceState::Starting | SourceState::Reconnecting => VOICE,
        SourceState::Live => FUSED,
        SourceState::Ended => MUTED,
        SourceState::Failed(_) => CONFLICT,
    };
    let mono = |text: String| RichText::new(text).monospace();
    ui.add_space(3.0);
    ui.horizontal(|ui| {
        marker_icon(ui, Marker::Circle, colour);
        ui.label(
            RichText::new(state.source_state.label().to_uppercase())
                .color(colour)
                .strong(),
        );
        ui.label(RichText::new(&state.source).color(MUTED));
        ui.separator();
        let provider = if s.provider.is_empty() {
            "-"
        } else {
            &s.provider
        };
        ui.label(mono(format!("EP {provider}")));
        ui.separator();
        ui.label(mono(format!(
            "in {:.1}  out {:.1}  shown {:.1} fps",
            s.input_fps, s.output_fps, state.paint_fps
        )));
        ui.separator();
        ui.label(mono(format!(
            "dropped {}  display-skipped {}",
            s.dropped_frames, s.display_skipped
        )));
        if s.audio_dropped > 0 {
            ui.separator();
            ui.label(mono(format!("audio dropped {}", s.audio_dropped)).color(VOICE));
        }
    });
    ui.horizontal(|ui| {
        ui.label(
            mono(format!(
                "latency e2e p50 {:.1} ms  p99 {:.1} ms",
                s.end_to_end.p50, s.end_to_end.p99
            ))
            .strong(),
        );
        ui.separator();
        let stages: Vec<String> = s
            .stages
            .iter()
            .map(|(name, f)| format!("{name} {:.1}/{:.1}", f.p50, f.p99))
            .collect();
        ui.label(mono(format!("{} ms (p50/p99)", stages.join("  "))));
    });
    ui.horizontal(|ui| {
        ui.label(
            RichText::new("space pause   r record   s screenshot   v raw values   q quit")
                .color(MUTED),
        );
        if let Some(path) = &state.recording {
            ui.separator();
            ui.label(RichText::new(format!("recording to {path}")).color(CONFLICT));
        }
        if let SourceState::Failed(message) = &state.source_state {
            ui.separator();
            ui.label(RichText::new(message).color(CONFLICT));
        }
        if let Some(notice) = &state.notice {
            ui.separator();
            ui.label(RichText::new(notice).color(FUSED));
        }
    });
    ui.add_space(3.0);
}

/// Marker shapes used in legends (drawn, not glyphs: the bundled fonts lack them).
#[derive(Clone, Copy)]
enum Marker {
    Circle,
    Diamond,
    Square,
}

fn marker_icon(ui: &mut Ui, marker: Marker, colour: Color32) {
    let (rect, _) = ui.allocate_exact_size(vec2(12.0, 12.0), egui::Sense::hover());
    let c = rect.center();
    let painter = ui.painter();
    match marker {
        Marker::Circle => {
            painter.circle_filled(c, 5.0, colour);
        }
        Marker::Square => {
            painter.rect_filled(Rect::from_center_size(c, vec2(9.0, 9.0)), 1.0, colour);
        }
        Marker::Diamond => {
            let points = vec![
                c + vec2(0.0, -6.0),
                c + vec2(6.0, 0.0),
                c + vec2(0.0, 6.0),
                c + vec2(-6.0, 0.0),
            ];
            painter.add(egui::Shape::convex_polygon(points, colour, Stroke::NONE));
        }
    }
}

/// The dark look of the overlay (also used by the snapshot tests).
pub fn style(ctx: &egui::Context) {
    ctx.set_theme(egui::ThemePreference::Dark);
    ctx.style_mut_of(egui::Theme::Dark, |style| {
        style.visuals.panel_fill = PANEL_BG;
        style.spacing.item_spacing = Vec2::new(8.0, 5.0);
    });
}
