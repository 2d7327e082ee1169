//! The eframe window: reads the latest [`LiveState`] on each paint, paints it with
//! [`OverlayView`], and handles the keys (space, r, s, q).

use eframe::egui;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::paint::{OverlayView, style};
use super::recorder::{Recorder, Toggled};
use super::state::{DisplayState, LiveState};

/// Errors opening the overlay window.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error(
        "no display: the overlay needs an X11 display and DISPLAY is not set (run it in a desktop \
         session, or under Xvfb; to process without a window use `affectstream run --source ...`)"
    )]
    NoDisplay,
    #[error("cannot open the overlay window on display {display}: {message}")]
    Window { display: String, message: String },
}

/// Says whether a display is there to open the window on (eframe is built for X11).
pub fn check_display() -> Result<(), OverlayError> {
    match std::env::var_os("DISPLAY") {
        Some(d) if !d.is_empty() => Ok(()),
        _ => Err(OverlayError::NoDisplay),
    }
}

/// What the overlay measured while it ran (logged on exit).
#[derive(Debug, Clone, Default)]
pub struct OverlaySummary {
    /// Paints (egui frames) in all.
    pub paints: u64,
    /// Distinct video frames shown.
    pub frames_shown: u64,
    /// From the first to the last video frame shown.
    pub showing: Duration,
    /// The last state painted (its stats: latencies, drops, rates).
    pub last: Option<DisplayState>,
}

impl OverlaySummary {
    /// Video frames shown per second while video was showing.
    pub fn shown_fps(&self) -> f64 {
        if self.frames_shown < 2 {
            return 0.0;
        }
        (self.frames_shown - 1) as f64 / self.showing.as_secs_f64().max(1e-3)
    }
}

/// Frames shown per second over the last two seconds.
#[derive(Default)]
struct ShownMeter {
    times: std::collections::VecDeque<Instant>,
}

impl ShownMeter {
    fn tick(&mut self, now: Instant) {
        self.times.push_back(now);
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(2))
        {
            self.times.pop_front();
        }
    }

    fn rate(&self, now: Instant) -> f64 {
        match self.times.front() {
            Some(first) if self.times.len() >= 2 => {
                (self.times.len() - 1) as f64 / now.duration_since(*first).as_secs_f64().max(1e-3)
            }
            _ => 0.0,
        }
    }
}

/// The overlay application.
pub struct OverlayApp {
    live: Arc<LiveState>,
    recorder: Arc<Recorder>,
    screenshot_dir: PathBuf,
    view: OverlayView,
    frozen: Option<DisplayState>,
    show_raw: bool,
    shown: ShownMeter,
    last_serial: u64,
    first_shown: Option<Instant>,
    summary: Arc<Mutex<OverlaySummary>>,
    /// Raised from outside the UI (the binary's Ctrl-C/SIGTERM handler) to close the window.
    pub quit: QuitSignal,
}

impl OverlayApp {
    /// An app showing `live`; `r` writes through `recorder`, `s` saves into `screenshot_dir`.
    pub fn new(
        live: Arc<LiveState>,
        recorder: Arc<Recorder>,
        screenshot_dir: PathBuf,
        summary: Arc<Mutex<OverlaySummary>>,
    ) -> Self {
        Self {
            live,
            recorder,
            screenshot_dir,
            view: OverlayView::default(),
            frozen: None,
            show_raw: false,
            shown: ShownMeter::default(),
            last_serial: 0,
            first_shown: None,
            summary,
            quit: QuitSignal::default(),
        }
    }

    fn keys(&mut self, ctx: &egui::Context) {
        let (space, r, s, v, q) = ctx.input(|i| {
            (
                i.key_pressed(egui::Key::Space),
                i.key_pressed(egui::Key::R),
                i.key_pressed(egui::Key::S),
                i.key_pressed(egui::Key::V),
                i.key_pressed(egui::Key::Q) || i.key_pressed(egui::Key::Escape),
            )
        });
        if v {
            self.show_raw = !self.show_raw;
        }
        if space {
            self.frozen = match self.frozen.take() {
                Some(_) => None,
                None => Some(self.live.snapshot()),
            };
        }
        if r {
            match self.recorder.toggle() {
                Ok(Toggled::Started(path)) => {
                    let shown = path.display().to_string();
                    tracing::info!("recording records to {shown}");
                    self.live.set_recording(Some(shown));
                    self.live.set_notice(None);
                }
                Ok(Toggled::Stopped { path, records }) => {
                    self.live.set_recording(None);
                    tracing::info!("recording stopped: {records} records in {}", path.display());
                    self.live.set_notice(Some(format!(
                        "{records} records written to {}",
                        path.display()
                    )));
                }
                Err(e) => {
                    tracing::error!("{e}");
                    self.live.set_notice(Some(e.to_string()));
                }
            }
        }
        if s {
            let path = screenshot_path(&self.screenshot_dir);
            let live = self.live.clone();
            ctx.request_screenshot(move |image| {
                let note = match save_png(&image, &path) {
                    Ok(()) => format!("screenshot saved to {}", path.display()),
                    Err(e) => format!("screenshot failed: {e}"),
                };
                tracing::info!("{note}");
                live.set_notice(Some(note));
            });
        }
        if q || self.quit.is_requested() {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }
}

impl eframe::App for OverlayApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.keys(&ctx);
        let now = Instant::now();
        let live = self.live.snapshot();
        let mut state = match &self.frozen {
            // Paused: the picture stays, the status line keeps counting.
            Some(frozen) => DisplayState {
                stats: live.stats.clone(),
                source_state: live.source_state.clone(),
                recording: live.recording.clone(),
                notice: live.notice.clone(),
                paused: true,
                ..frozen.clone()
            },
            None => live,
        };
        if let Some(frame) = &state.frame
            && frame.serial != self.last_serial
        {
            self.last_serial = frame.serial;
            self.shown.tick(now);
            self.first_shown.get_or_insert(now);
            if let Ok(mut summary) = self.summary.lock() {
                summary.frames_shown += 1;
                summary.showing = self.first_shown.map(|t| now - t).unwrap_or_default();
            }
        }
        state.paint_fps = self.shown.rate(now);
        state.show_raw = self.show_raw;
        self.view.show(ui, &state);
        if let Ok(mut summary) = self.summary.lock() {
            summary.paints += 1;
            summary.last = Some(state);
        }
        // New data wakes the UI; this keeps rates and the clock moving when none comes.
        ctx.request_repaint_after(Duration::from_millis(250));
    }
}

/// `dir/affectstream-<unix ms>.png`.
fn screenshot_path(dir: &std::path::Path) -> PathBuf {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    dir.join(format!("affectstream-{ms}.png"))
}

/// Writes an egui image as PNG (OpenCV's encoder, already linked for the pipeline).
pub fn save_png(image: &egui::ColorImage, path: &std::path::Path) -> Result<(), String> {
    use opencv::core::{Mat, Vec4b, Vector};
    let [w, h] = image.size;
    let rgba: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
    let mat = Mat::new_rows_cols_with_bytes::<Vec4b>(h as i32, w as i32, &rgba)
        .map_err(|e| e.to_string())?;
    let mut bgra = Mat::default();
    opencv::imgproc::cvt_color(&mat, &mut bgra, opencv::imgproc::COLOR_RGBA2BGRA, 0)
        .map_err(|e| e.to_string())?;
    let ok = opencv::imgcodecs::imwrite(path, &bgra, &Vector::new()).map_err(|e| e.to_string())?;
    if ok {
        Ok(())
    } else {
        Err(format!("cannot write {}", path.display()))
    }
}

/// Asks the overlay to close from another thread (the binary raises it on Ctrl-C or SIGTERM;
/// the library installs no signal handler): the window closes at its next frame, which the
/// request wakes, as if `q` had been pressed.
#[derive(Clone, Default)]
pub struct QuitSignal {
    inner: Arc<QuitInner>,
}

impl std::fmt::Debug for QuitSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuitSignal")
            .field("requested", &self.is_requested())
            .finish()
    }
}

#[derive(Default)]
struct QuitInner {
    requested: AtomicBool,
    wake: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

impl QuitSignal {
    /// Requests the window to close.
    pub fn request(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        if let Ok(wake) = self.inner.wake.lock()
            && let Some(wake) = wake.as_ref()
        {
            wake();
        }
    }

    /// True once a close was requested.
    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// What wakes the UI so it sees the request (set when the window opens).
    fn set_wake(&self, wake: impl Fn() + Send + Sync + 'static) {
        if let Ok(mut slot) = self.inner.wake.lock() {
            *slot = Some(Box::new(wake));
        }
    }
}

/// Opens the window on this (the main) thread and runs until it is closed (q, Escape, the
/// window's close button, or `quit`). Returns what the overlay measured.
pub fn run_overlay(
    title: &str,
    live: Arc<LiveState>,
    recorder: Arc<Recorder>,
    screenshot_dir: PathBuf,
    quit: QuitSignal,
) -> Result<OverlaySummary, OverlayError> {
    check_display()?;
    let summary = Arc::new(Mutex::new(OverlaySummary::default()));
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(title)
            .with_app_id("affectstream")
            .with_inner_size([1280.0, 800.0])
            .with_min_inner_size([800.0, 560.0]),
        ..Default::default()
    };
    let app_summary = summary.clone();
    eframe::run_native(
        title,
        options,
        Box::new(move |cc| {
            style(&cc.egui_ctx);
            let ctx = cc.egui_ctx.clone();
            live.set_repaint(move || ctx.request_repaint());
            let mut app = OverlayApp::new(live, recorder, screenshot_dir, app_summary);
            let ctx = cc.egui_ctx.clone();
            quit.set_wake(move || ctx.request_repaint());
            app.quit = quit;
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| OverlayError::Window {
        display: std::env::var("DISPLAY").unwrap_or_default(),
        message: e.to_string(),
    })?;
    let summary = summary.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(summary)
}
