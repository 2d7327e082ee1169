//! The `demo` subcommand's options and its hand-off to [`affectstream::demo`].

use std::path::PathBuf;

use clap::Args;

use affectstream::config::Config;
use affectstream::demo::{DemoOptions, DemoSummary};
use affectstream::encode::runtime::DeviceRequest;
use affectstream::fusion::calibration::CalibrationMode;
use affectstream::manifest;
use affectstream::pipeline::RunOptions;

/// Options of `affectstream demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Show this file or URI (rtsp://, http://, file://) with its own audio instead of the
    /// camera and microphone; files play at 1x.
    #[arg(long)]
    source: Option<String>,
    /// Camera index: /dev/video<N>.
    #[arg(long, default_value_t = 0)]
    camera: u32,
    /// Microphone: part of its name, or its id (default: the system's default input).
    #[arg(long)]
    mic: Option<String>,
    /// Directory for recordings (r) and screenshots (s).
    #[arg(long, default_value = ".")]
    out_dir: PathBuf,
    /// Execution provider: auto, cpu or cuda.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceRequest,
    /// Configuration file (TOML; `[fusion]` section, see docs/fusion.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Per-person calibration: `track` (each face and the voice against its own running
    /// baseline) or `off` (raw model values). Overrides `[fusion.calibration] mode`.
    #[arg(long, value_enum)]
    calibration: Option<CalibrationMode>,
    /// Model manifest (default: $AFFECTSTREAM_MODELS_TOML, else models.toml in the data
    /// directory that scripts/setup.sh fills; README: Install).
    #[arg(long, default_value_os_t = manifest::default_manifest_path())]
    models: PathBuf,
    /// Directory holding the model files (default: $AFFECTSTREAM_MODEL_DIR, else models/ in the
    /// data directory).
    #[arg(long, default_value_os_t = manifest::default_model_dir())]
    model_dir: PathBuf,
}

/// Runs the live demo until its window is closed, then logs what the overlay measured.
pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let mut run = RunOptions {
        device: args.device,
        manifest: args.models,
        model_dir: args.model_dir,
        ..RunOptions::new(args.source.clone().unwrap_or_default())
    };
    if let Some(path) = &args.config {
        run.fusion.params = Config::load(path)?.fusion;
    }
    if let Some(mode) = args.calibration {
        run.fusion.params.calibration.mode = mode;
    }
    let opts = DemoOptions {
        run,
        source: args.source,
        camera: args.camera,
        mic: args.mic,
        output_dir: args.out_dir,
    };
    let summary = affectstream::demo::run(&opts)?;
    log_summary(&summary);
    Ok(())
}

fn log_summary(summary: &DemoSummary) {
    let overlay = &summary.overlay;
    let stats = overlay
        .last
        .as_ref()
        .map(|s| s.stats.clone())
        .unwrap_or_default();
    tracing::info!(
        shown_fps = format!("{:.1}", overlay.shown_fps()),
        frames_shown = overlay.frames_shown,
        paints = overlay.paints,
        input_fps = format!("{:.1}", stats.input_fps),
        output_fps = format!("{:.1}", stats.output_fps),
        dropped = stats.dropped_frames,
        display_skipped = stats.display_skipped,
        e2e_p50_ms = format!("{:.2}", stats.end_to_end.p50),
        e2e_p99_ms = format!("{:.2}", stats.end_to_end.p99),
        provider = stats.provider,
        "overlay closed"
    );
    if let Some(p) = &summary.pipeline {
        let e2e = p.latency.end_to_end();
        tracing::info!(
            records = p.records,
            frames = p.frames,
            latency_p50_ms = format!("{:.2}", e2e.p50),
            latency_p99_ms = format!("{:.2}", e2e.p99),
            "pipeline stopped"
        );
    }
}
