//! Command-line interface: subcommands and their options.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::options::{ModelArgs, ScheduleArgs, choice, unit_interval};
use affectstream::audio::AudioConfig;
use affectstream::capture::RtspTransport;
use affectstream::config::Config;
use affectstream::encode::expression::ExpressionConfig;
use affectstream::face::FaceConfig;
use affectstream::face::detector::DetectorConfig;
use affectstream::pipeline::{self, RunOptions};
use affectstream::sink::JsonlTarget;

/// Real-time multimodal emotion recognition: valence, arousal and audio-visual conflict per face.
#[derive(Parser)]
#[command(name = "affectstream", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Process media files or streams (RTSP, reconnecting) into one JSON record per video frame.
    Run(RunArgs),
    /// Measure per-frame and per-stage latency and throughput on a source.
    Bench(BenchArgs),
    /// Run the pipeline over labeled media and report agreement with the labels.
    Eval(EvalArgs),
    /// Live overlay: camera and microphone (or --source) with valence, arousal, gates and conflict.
    Demo(crate::demo_cli::DemoArgs),
    /// Cameras spread over workers through NATS JetStream: cameras, worker, tail, bench-publish.
    #[cfg(feature = "broker")]
    #[command(flatten)]
    Cluster(crate::cli_cluster::ClusterCommand),
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    pipeline: ModelArgs,
    #[command(flatten)]
    schedule: ScheduleArgs,
    /// Labels CSV (columns file, label, kind), e.g. ../shared/testdata/LABELS.csv.
    #[arg(long)]
    labels: PathBuf,
    /// Directory the labels' file paths are relative to (default: the labels file's directory).
    #[arg(long)]
    media_root: Option<PathBuf>,
    /// Label → valence/arousal table (default: VA_MAPPING_NRC_VAD.csv beside the labels).
    #[arg(long)]
    va_table: Option<PathBuf>,
    /// Kinds of rows to evaluate, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', default_values_t = affectstream::eval::KINDS.map(String::from))]
    kinds: Vec<String>,
    /// At most this many files per kind.
    #[arg(long)]
    limit: Option<usize>,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    pipeline: ModelArgs,
    /// Media file path or URI.
    #[arg(long)]
    source: String,
    /// Release frames at their timestamps (1x real time), like a camera.
    #[arg(long)]
    paced: bool,
    /// Streams processed at once (1..64).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    streams: u32,
    /// Find the largest number of paced streams of the source that each run with at most 1 %
    /// late frames, and print it with CPU and memory (trials of --warmup + --duration seconds).
    #[arg(long, conflicts_with = "streams")]
    capacity: bool,
    /// With --capacity: the most streams tried (1..256).
    #[arg(long, default_value_t = 64, requires = "capacity",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    max_streams: u32,
    /// Run this many seconds after the warm-up, looping the source when it is shorter (with
    /// --capacity: each trial, default 20).
    #[arg(long, value_parser = positive_seconds)]
    duration: Option<f64>,
    /// Leave the first this many seconds out of the statistics (default 5 with --capacity,
    /// else 0).
    #[arg(long, value_parser = non_negative_seconds)]
    warmup: Option<f64>,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Draw the PNG plot here (default: next to the report, .png).
    #[arg(long)]
    plot: Option<PathBuf>,
    #[command(flatten)]
    schedule: ScheduleArgs,
}

fn non_negative_seconds(s: &str) -> Result<f64, String> {
    if s.trim().parse::<f64>() == Ok(0.0) {
        return Ok(0.0);
    }
    positive_seconds(s)
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v > 0.0 && v <= 7.0 * 24.0 * 3600.0 {
        Ok(v)
    } else {
        Err(format!(
            "{v} is not a duration between 0 and a week, in seconds"
        ))
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    pipeline: ModelArgs,
    /// Media file path or URI (file://, http://, rtsp://user:password@host/path, ...); repeat
    /// for several streams at once.
    #[arg(long)]
    source: Vec<String>,
    /// Write records (JSON Lines) here; default: standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write one CSV row per face per frame here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Serve the WebSocket record feed (/records) and Prometheus metrics (/metrics) here.
    /// Default for live streams: 127.0.0.1:9750. Any address other than loopback needs --token.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Do not serve the WebSocket feed and metrics.
    #[arg(long, conflicts_with = "listen")]
    no_listen: bool,
    /// Bearer token the endpoint requires (default: $AFFECTSTREAM_TOKEN).
    #[arg(long)]
    token: Option<String>,
    /// Stop after this many seconds (live streams otherwise run until interrupted).
    #[arg(long, value_parser = positive_seconds)]
    duration: Option<f64>,
    /// RTSP lower transport: tcp, udp or udp-tcp (default tcp; see also [streams] in --config).
    #[arg(long, value_parser = choice::<RtspTransport>(RtspTransport::NAMES))]
    rtsp_transport: Option<RtspTransport>,
    /// RTSP jitter-buffer latency in milliseconds (default 200).
    #[arg(long)]
    rtsp_latency_ms: Option<u64>,
    /// Minimum face detector score (0..1).
    #[arg(long, default_value_t = DetectorConfig::default().score_threshold,
          value_parser = unit_interval)]
    face_threshold: f32,
    /// Long side of the frame as the face detector sees it, in pixels (32..4096).
    #[arg(long, default_value_t = DetectorConfig::default().max_side,
          value_parser = clap::value_parser!(u32).range(32..=4096))]
    detect_size: u32,
    #[command(flatten)]
    schedule: ScheduleArgs,
    /// Do not rotate face crops to level the eyes.
    #[arg(long)]
    no_align: bool,
    /// Face crop side = max(box w, h) x (1 + margin) (-0.3..1).
    #[arg(long, default_value_t = FaceConfig::default().crop_margin,
          allow_negative_numbers = true, value_parser = crop_margin)]
    crop_margin: f32,
    /// Speech-emotion window hop in seconds (0.05..10).
    #[arg(long, default_value_t = AudioConfig::default().hop.as_secs_f64(),
          value_parser = hop_seconds)]
    voice_hop: f64,
    /// Encode a face track sooner when its crop moved by more than this share of its side,
    /// or its side changed by more (0..1).
    #[arg(long, default_value_t = ExpressionConfig::default().reencode_change,
          value_parser = unit_interval)]
    reencode_change: f32,
}

fn crop_margin(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (-0.3..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside -0.3..1"))
    }
}

fn hop_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.05..=10.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0.05..10"))
    }
}

/// Logs to stderr; `RUST_LOG` picks the level (default: warnings, and info from affectstream).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,affectstream=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Parses the command line and runs the subcommand.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Bench(args) => bench(args),
        Command::Eval(args) => eval(args),
        Command::Demo(args) => crate::demo_cli::demo(args),
        #[cfg(feature = "broker")]
        Command::Cluster(command) => crate::cli_cluster::run(command),
    }
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let labels_dir = args
        .labels
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    for kind in &args.kinds {
        if !affectstream::eval::KINDS.contains(&kind.as_str()) {
            anyhow::bail!(
                "unknown kind '{kind}' (known: {})",
                affectstream::eval::KINDS.join(", ")
            );
        }
    }
    let (mut run, _) = args.pipeline.run_options("")?;
    args.schedule.apply(&mut run);
    let opts = affectstream::eval::EvalOptions {
        run,
        va_table: args
            .va_table
            .unwrap_or_else(|| labels_dir.join("VA_MAPPING_NRC_VAD.csv")),
        media_root: args.media_root.unwrap_or(labels_dir),
        labels: args.labels,
        kinds: args.kinds,
        limit_per_kind: args.limit,
        report: args.report,
        still_threshold: 0.6,
    };
    let show = std::io::stderr().is_terminal();
    let report = affectstream::eval::evaluate(&opts, |i, n, file| {
        if show {
            eprint!("\r[{}/{n}] {file:<70}", i + 1);
        }
    })?;
    if show {
        eprintln!();
    }
    print!("{}", affectstream::eval::table(&report));
    Ok(())
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let (mut run, _) = args.pipeline.run_options(args.source.clone())?;
    args.schedule.apply(&mut run);
    let plot = args
        .plot
        .or_else(|| args.report.as_ref().map(|r| r.with_extension("png")));
    if args.capacity {
        use affectstream::bench::capacity;
        let mut opts = capacity::CapacityOptions::new(run);
        if let Some(d) = args.duration {
            opts.duration = Duration::from_secs_f64(d);
        }
        if let Some(w) = args.warmup {
            opts.warmup = Duration::from_secs_f64(w);
        }
        opts.max_streams = args.max_streams as usize;
        opts.report = args.report;
        opts.plot = plot;
        let report = capacity::capacity(&opts)?;
        print!("{}", capacity::table(&report));
        return Ok(());
    }
    let opts = affectstream::bench::BenchOptions {
        run,
        paced: args.paced,
        streams: args.streams as usize,
        duration: args.duration.map(Duration::from_secs_f64),
        warmup: args.warmup.map_or(Duration::ZERO, Duration::from_secs_f64),
        report: args.report,
        plot,
    };
    let report = affectstream::bench::bench(&opts)?;
    print!("{}", affectstream::bench::table(&report));
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let (mut opts, config) = args
        .pipeline
        .run_options(args.source.first().cloned().unwrap_or_default())?;
    opts.face.detector.score_threshold = args.face_threshold;
    opts.face.detector.max_side = args.detect_size;
    opts.face.align = !args.no_align;
    args.schedule.apply(&mut opts);
    opts.face.crop_margin = args.crop_margin;
    opts.audio.hop = Duration::from_secs_f64(args.voice_hop);
    opts.expression.reencode_change = args.reencode_change;
    opts.out = args
        .out
        .clone()
        .map_or(JsonlTarget::Stdout, JsonlTarget::File);
    opts.progress = true;
    opts.max_duration = args.duration.map(Duration::from_secs_f64);
    let one_offline_file = args.source.len() == 1
        && config.stream.is_empty()
        && !args.source[0].contains("://")
        && args.csv.is_none()
        && args.listen.is_none();
    if !one_offline_file {
        return run_streams(&args, &config, opts);
    }
    let summary = pipeline::run(&opts)?;
    let e2e = summary.latency.end_to_end();
    tracing::info!(
        records = summary.records,
        frames = summary.frames,
        with_faces = summary.records_with_faces,
        wall_s = format!("{:.2}", summary.wall.as_secs_f64()),
        fps = format!(
            "{:.1}",
            summary.frames as f64 / summary.wall.as_secs_f64().max(1e-9)
        ),
        latency_p50_ms = format!("{:.2}", e2e.p50),
        latency_p99_ms = format!("{:.2}", e2e.p99),
        device = summary.provider.name(),
        detector = summary.detector,
        "done"
    );
    Ok(())
}

/// `run` with several sources, live sources, a streams config or the live sinks.
fn run_streams(args: &RunArgs, config: &Config, run: RunOptions) -> anyhow::Result<()> {
    use affectstream::streams::settings::SettingsOverrides;
    use affectstream::streams::{StreamSpec, StreamState, StreamsOptions};
    let mut cli_overrides = config.streams.clone();
    if args.rtsp_transport.is_some() {
        cli_overrides.protocols = args.rtsp_transport;
    }
    if args.rtsp_latency_ms.is_some() {
        cli_overrides.latency_ms = args.rtsp_latency_ms;
    }
    let defaults = SettingsOverrides::apply(&cli_overrides, Default::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut streams = Vec::new();
    for entry in &config.stream {
        streams.push(StreamSpec {
            name: entry.name.clone(),
            source: entry.url.clone(),
            settings: entry
                .overrides()
                .apply(defaults)
                .map_err(|e| anyhow::anyhow!("stream '{}': {e}", entry.name))?,
        });
    }
    for (i, source) in args.source.iter().enumerate() {
        // Named after the source (password redacted); numbered when there are several.
        let redacted = affectstream::capture::redact_url(source).text;
        let name = if args.source.len() + config.stream.len() > 1 {
            format!("stream{}", i + 1 + config.stream.len())
        } else {
            redacted
        };
        streams.push(StreamSpec {
            name,
            source: source.clone(),
            settings: defaults,
        });
    }
    let any_live = streams
        .iter()
        .any(|s| affectstream::capture::is_live_uri(&s.source));
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("AFFECTSTREAM_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let server = match (args.listen, args.no_listen, any_live) {
        (Some(listen), _, _) => Some(listen),
        (None, false, true) => Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9750))),
        _ => None,
    }
    .map(|listen| affectstream::sink::server::ServerConfig { listen, token });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let opts = StreamsOptions {
        streams,
        sinks: affectstream::sink::hub::HubTargets {
            jsonl: run.out.clone(),
            csv: args.csv.clone(),
        },
        server,
        max_duration: run.max_duration,
        stop,
        run,
    };
    let summary = affectstream::streams::run_streams(&opts, |addr| {
        tracing::info!("serving ws://{addr}/records and http://{addr}/metrics");
    })?;
    let mut failures = Vec::new();
    for s in &summary.streams {
        tracing::info!(
            stream = %s.name,
            state = s.state.name(),
            frames = s.frames,
            dropped = s.dropped_frames,
            reconnects = s.reconnects,
            "stream done"
        );
        if s.state == StreamState::Failed {
            failures.push(format!(
                "stream '{}' failed: {}",
                s.name,
                s.reason.as_deref().unwrap_or("unknown reason")
            ));
        }
    }
    tracing::info!(
        records = summary.hub.records,
        wall_s = format!("{:.2}", summary.wall.as_secs_f64()),
        "done"
    );
    if !failures.is_empty() {
        anyhow::bail!("{}", failures.join("; "));
    }
    Ok(())
}
