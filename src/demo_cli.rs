//! The `demo` subcommand's options and its hand-off to [`affectstream::demo`].

use std::path::PathBuf;

use clap::Args;

use affectstream::demo::{DemoOptions, DemoSummary};
use affectstream::overlay::QuitSignal;

use crate::options::ModelArgs;

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
    #[command(flatten)]
    pipeline: ModelArgs,
}

/// Runs the live demo until its window is closed, then logs what the overlay measured.
pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let (run, _) = args
        .pipeline
        .run_options(args.source.clone().unwrap_or_default())?;
    // Ctrl-C, SIGTERM and SIGHUP in the terminal quit like q: the window closes, the demo
    // stops the pipeline and flushes its files. The signal thread only raises the request.
    let quit = QuitSignal::default();
    forward_signals(quit.clone());
    let opts = DemoOptions {
        run,
        source: args.source,
        camera: args.camera,
        mic: args.mic,
        output_dir: args.out_dir,
        quit,
    };
    let summary = affectstream::demo::run(&opts)?;
    log_summary(&summary);
    Ok(())
}

/// Raises `quit` on SIGINT, SIGTERM and SIGHUP (from a thread of its own); without the
/// handler the signals end the process at once, unflushed, so a failure is a warning.
fn forward_signals(quit: QuitSignal) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let spawned = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| e.to_string())
        .and_then(|mut signals| {
            std::thread::Builder::new()
                .name("affectstream-signals".into())
                .spawn(move || {
                    for _ in signals.forever() {
                        quit.request();
                    }
                })
                .map_err(|e| e.to_string())
        });
    if let Err(e) = spawned {
        tracing::warn!("Ctrl-C will end the demo without cleanup: {e}");
    }
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
