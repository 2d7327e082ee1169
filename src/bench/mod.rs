//! `affectstream bench`: runs the real pipeline on a source (optionally paced at 1x like a
//! camera, looped, several streams at once) and measures every frame: end-to-end latency
//! (decoded → record ready), lag behind the frame's schedule when paced, per-stage working
//! time, throughput, late frames, CPU and memory. Prints a table, writes a JSON report and a PNG.
//! `capacity` searches the largest number of paced streams that all keep up.

pub mod capacity;
#[cfg(feature = "plot")]
mod plot;
mod procstat;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::capture::{CaptureOptions, Source};
use crate::metrics::{Percentiles, new_histogram, percentiles};
use crate::pipeline::{
    self, Finished, Input, Models, Pipeline, PipelineError, RunOptions, SharedModels,
};
use crate::record::Record;
use crate::sink::{JsonlSink, JsonlTarget};

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("cannot write the report {path}: {message}")]
    Report { path: PathBuf, message: String },
    #[error("stream {stream} stopped unexpectedly")]
    StreamCrashed { stream: usize },
}

/// What to benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The pipeline settings (source, device, models, stage settings).
    pub run: RunOptions,
    /// Release frames at their timestamps (1x), like a camera.
    pub paced: bool,
    /// Streams processed at once (each a full pipeline on the same source).
    pub streams: usize,
    /// Run this long (after the warm-up), looping the source if it is shorter; None: the
    /// source once.
    pub duration: Option<Duration>,
    /// Time at the start that the statistics leave out (start-up, first inferences); zero:
    /// everything counts. Each stream runs `warmup + duration`.
    pub warmup: Duration,
    /// JSON report path.
    pub report: Option<PathBuf>,
    /// PNG plot path.
    pub plot: Option<PathBuf>,
}

/// One point of the latency time series.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the stream started.
    pub at_s: f64,
    /// End-to-end latency, ms.
    pub latency_ms: f64,
    /// Lag behind the frame's schedule (paced), ms.
    pub lag_ms: Option<f64>,
    /// Detect stage, ms.
    pub detect_ms: f64,
    /// Seconds since the stream started at which the frame was decoded.
    #[serde(skip)]
    pub decoded_at_s: f64,
    /// Stream time of the frame, s.
    #[serde(skip)]
    pub t: f64,
    /// Encode stage, ms.
    pub encode_ms: f64,
    /// Ready after the warm-up, so in the statistics.
    #[serde(skip)]
    pub counted: bool,
}

/// Memory and CPU of the process over time.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ResourceSample {
    /// Seconds since the benchmark started.
    pub at_s: f64,
    /// Resident set size, MB.
    pub rss_mb: f64,
    /// CPU use over the last interval, % of one core.
    pub cpu_percent: f64,
}

struct Collector {
    started: Option<Instant>,
    /// Records ready before this instant are warm-up: kept in the series (and the schedule),
    /// left out of the statistics.
    count_from: Option<Instant>,
    /// Stream time added to this pass's timestamps (passes follow each other).
    t_offset: f64,
    /// Latest (offset) stream time seen.
    t_last: f64,
    frame_interval_s: f64,
    end_to_end: Histogram<u64>,
    lag: Histogram<u64>,
    stages: [Histogram<u64>; 3],
    records: u64,
    video_records: u64,
    /// Video records in the statistics (after the warm-up).
    counted: u64,
    late: u64,
    faces: u64,
    series: Vec<Sample>,
    /// Index in `series` where each pass after the first starts.
    pass_starts: Vec<usize>,
}

fn micros(ms: f64) -> u64 {
    ((ms * 1000.0).max(1.0)) as u64
}

impl Collector {
    fn new(count_from: Option<Instant>) -> Self {
        Self {
            started: None,
            count_from,
            t_offset: 0.0,
            t_last: 0.0,
            frame_interval_s: 0.04,
            end_to_end: new_histogram(),
            lag: new_histogram(),
            stages: [new_histogram(), new_histogram(), new_histogram()],
            records: 0,
            video_records: 0,
            counted: 0,
            late: 0,
            faces: 0,
            series: Vec::new(),
            pass_starts: Vec::new(),
        }
    }

    fn observe(&mut self, r: &Record) {
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        self.records += 1;
        let Some(latency) = r.latency_ms else {
            return;
        };
        self.video_records += 1;
        let s = &r.stages_ms;
        let counted = self.count_from.is_none_or(|from| now >= from);
        if counted {
            self.counted += 1;
            if !r.faces.is_empty() {
                self.faces += 1;
            }
            self.end_to_end.saturating_record(micros(latency));
            for (h, v) in self.stages.iter_mut().zip([s.detect, s.encode, s.fuse]) {
                if let Some(v) = v {
                    h.saturating_record(micros(v));
                }
            }
        }
        let at_s = now.saturating_duration_since(started).as_secs_f64();
        let t = r.t + self.t_offset;
        self.t_last = self.t_last.max(t);
        self.series.push(Sample {
            at_s,
            latency_ms: latency,
            lag_ms: None,
            detect_ms: s.detect.unwrap_or(0.0),
            encode_ms: s.encode.unwrap_or(0.0),
            decoded_at_s: at_s - latency / 1000.0,
            t,
            counted,
        });
        if self.series.len() >= 2 {
            let n = self.series.len();
            let dt = self.series[n - 1].t - self.series[n - 2].t;
            if dt > 0.0 && dt < 1.0 {
                self.frame_interval_s = dt;
            }
        }
    }

    /// The next pass of the source starts where this one ended (one frame later), and the
    /// schedule restarts from its first frame.
    fn next_pass(&mut self) {
        self.t_offset = self.t_last + self.frame_interval_s;
        self.pass_starts.push(self.series.len());
    }

    /// Paced runs: each frame's lag behind its schedule. The schedule is the earliest one
    /// consistent with every frame of the pass, warm-up included (frame t due at anchor + t,
    /// anchor = min(decoded - t)), so a slow first frame does not hide later lateness. A frame
    /// is late when its record is ready more than one frame interval after it was due.
    fn compute_lag(&mut self) {
        let mut bounds = vec![0];
        bounds.extend(self.pass_starts.iter().copied());
        bounds.push(self.series.len());
        for pass in bounds.windows(2) {
            let Some(samples) = self.series.get_mut(pass[0]..pass[1]) else {
                continue;
            };
            let anchor = samples
                .iter()
                .map(|s| s.decoded_at_s - s.t)
                .fold(f64::INFINITY, f64::min);
            if !anchor.is_finite() {
                continue;
            }
            for s in samples {
                let lag = (s.at_s - (anchor + s.t)).max(0.0) * 1000.0;
                s.lag_ms = Some(lag);
                if !s.counted {
                    continue;
                }
                self.lag.saturating_record(micros(lag));
                if lag > self.frame_interval_s * 1000.0 {
                    self.late += 1;
                }
            }
        }
    }
}

/// Figures of one stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// Stream number, from 0.
    pub stream: usize,
    /// Frames decoded.
    pub frames_in: u64,
    /// Records written (video frames + audio-only records).
    pub records_out: u64,
    /// Frames dropped (offline and paced runs process every frame: 0).
    pub frames_dropped: u64,
    /// Video records in the statistics (those ready after the warm-up; all without one).
    pub frames_counted: u64,
    /// Share of counted video records with a face.
    pub face_fraction: f64,
    /// Counted frames whose record was ready more than one frame interval after the frame was
    /// due (paced only; see `Collector::compute_lag` for the schedule).
    pub frames_late: u64,
    /// Input frames per second of wall time.
    pub input_fps: f64,
    /// Records per second of wall time.
    pub output_fps: f64,
    /// Wall time of the stream, s.
    pub wall_s: f64,
    /// Decoded → record ready.
    pub end_to_end_ms: Percentiles,
    /// Lag behind the frame's schedule (paced).
    pub lag_ms: Option<Percentiles>,
    /// Working time per stage: detect, encode, fuse.
    pub stages_ms: Vec<(String, Percentiles)>,
    /// p99 of end-to-end latency over the first and the last minute (runs over 2 minutes).
    pub p99_first_last_minute_ms: Option<(f64, f64)>,
    /// The latency time series (plotted).
    #[serde(skip)]
    pub series: Vec<Sample>,
}

/// The whole benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Source benchmarked.
    pub source: String,
    /// Paced at 1x.
    pub paced: bool,
    /// Streams at once.
    pub streams: usize,
    /// Execution provider.
    pub device: String,
    /// Face detector.
    pub detector: String,
    /// Wall time of the whole benchmark, s.
    pub wall_s: f64,
    /// Seconds at the start left out of the statistics (and of `cpu_percent`).
    pub warmup_s: f64,
    /// CPU time over wall time after the warm-up, in % of one core (200 % = both cores of a
    /// 2-core machine).
    pub cpu_percent: f64,
    /// CPU of every other process on the machine over the same time, % of one core (None when
    /// /proc/stat cannot be read): well above 0, the figures are noisy.
    pub other_cpu_percent: Option<f64>,
    /// Peak resident set size, MB.
    pub peak_rss_mb: f64,
    /// Per stream.
    pub per_stream: Vec<StreamReport>,
    /// Memory and CPU over time (sampled every second).
    pub resources: Vec<ResourceSample>,
}

fn p99_of(samples: &[Sample]) -> Option<f64> {
    let mut h = new_histogram();
    for s in samples {
        h.saturating_record(micros(s.latency_ms));
    }
    (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0)
}

/// Runs the source once, or pass after pass (the models reused) until `duration` has passed;
/// the last pass is cut at the deadline. Timestamps continue from pass to pass.
fn run_passes(
    run: &RunOptions,
    source: &Source,
    mut models: Models,
    duration: Option<Duration>,
    collector: &Arc<Mutex<Collector>>,
) -> Result<(pipeline::RunSummary, Models), PipelineError> {
    let started = Instant::now();
    let mut total: Option<pipeline::RunSummary> = None;
    loop {
        let mut pass = run.clone();
        if let Some(limit) = duration {
            pass.max_duration = Some(limit.saturating_sub(started.elapsed()));
        }
        let sink_side = collector.clone();
        let mut handle = Pipeline::new(models, &pass)?.spawn(Input::Source(source.clone()))?;
        handle.sink(JsonlSink::open(&pass.out)?, move |r| {
            if let Ok(mut c) = sink_side.lock() {
                c.observe(r);
            }
        })?;
        let Finished {
            models: back,
            summary,
        } = handle.join()?;
        models = back;
        if let Ok(mut c) = collector.lock() {
            c.next_pass();
        }
        total = Some(match total {
            None => summary,
            Some(mut t) => {
                t.records += summary.records;
                t.records_with_faces += summary.records_with_faces;
                t.frames += summary.frames;
                t.wall = started.elapsed();
                t
            }
        });
        let more =
            duration.is_some_and(|limit| started.elapsed() + Duration::from_millis(200) < limit);
        if !more {
            break;
        }
    }
    match total {
        Some(t) => Ok((t, models)),
        None => Err(PipelineError::StageCrashed("bench")),
    }
}

/// Runs the benchmark.
pub fn bench(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let source = Source::parse(&opts.run.source).map_err(PipelineError::from)?;
    let mut run = opts.run.clone();
    run.out = JsonlTarget::Discard;
    run.progress = false;
    run.capture = CaptureOptions {
        paced: opts.paced,
        decode_threads: run.capture.decode_threads,
        ..CaptureOptions::default()
    };
    // Load the models (once, shared by the streams) before any stream starts, so start-up is
    // not measured.
    let shared = SharedModels::load(&run)?;
    let mut loaded = Vec::with_capacity(opts.streams.max(1));
    for _ in 0..opts.streams.max(1) {
        loaded.push(shared.stream()?);
    }
    drop(shared);
    let monitor = procstat::Monitor::start(Duration::from_secs(1));
    let mut cpu0 = procstat::cpu_seconds();
    let mut machine0 = procstat::machine_busy_seconds();
    let started = Instant::now();
    let count_from = (!opts.warmup.is_zero()).then(|| started + opts.warmup);
    let mut handles = Vec::new();
    for (i, models) in loaded.into_iter().enumerate() {
        let collector = Arc::new(Mutex::new(Collector::new(count_from)));
        let sink_side = collector.clone();
        let run = run.clone();
        let source = source.clone();
        let duration = opts.duration.map(|d| d + opts.warmup);
        let handle = std::thread::Builder::new()
            .name(format!("affectstream-bench-{i}"))
            .spawn(move || {
                let summary = run_passes(&run, &source, models, duration, &sink_side);
                (summary, collector)
            })
            .map_err(|_| BenchError::StreamCrashed { stream: i })?;
        handles.push(handle);
    }
    // CPU is counted from the end of the warm-up (or from the last stream's end, if sooner).
    let mut measured_from = started;
    if let Some(from) = count_from {
        while Instant::now() < from && !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        measured_from = Instant::now();
        cpu0 = procstat::cpu_seconds();
        machine0 = procstat::machine_busy_seconds();
    }
    let mut per_stream = Vec::new();
    let (mut device, mut detector) = (String::new(), String::new());
    for (i, handle) in handles.into_iter().enumerate() {
        let (summary, collector) = handle
            .join()
            .map_err(|_| BenchError::StreamCrashed { stream: i })?;
        let (summary, _models) = summary?;
        device = summary.provider.name().to_owned();
        detector = summary.detector.to_owned();
        let mut c = collector
            .lock()
            .map_err(|_| BenchError::StreamCrashed { stream: i })?;
        if opts.paced {
            c.compute_lag();
        }
        let wall = summary.wall.as_secs_f64().max(1e-9);
        let first_last = (wall > 120.0).then(|| {
            let first: Vec<Sample> = c.series.iter().filter(|s| s.at_s < 60.0).copied().collect();
            let end = c.series.last().map(|s| s.at_s).unwrap_or(0.0);
            let last: Vec<Sample> = c
                .series
                .iter()
                .filter(|s| s.at_s >= end - 60.0)
                .copied()
                .collect();
            (p99_of(&first).unwrap_or(0.0), p99_of(&last).unwrap_or(0.0))
        });
        per_stream.push(StreamReport {
            stream: i,
            frames_in: summary.frames,
            records_out: summary.records,
            frames_dropped: summary.frames.saturating_sub(c.video_records),
            frames_counted: c.counted,
            face_fraction: c.faces as f64 / c.counted.max(1) as f64,
            frames_late: c.late,
            input_fps: summary.frames as f64 / wall,
            output_fps: summary.records as f64 / wall,
            wall_s: wall,
            end_to_end_ms: percentiles(&c.end_to_end),
            lag_ms: opts.paced.then(|| percentiles(&c.lag)),
            stages_ms: ["detect", "encode", "fuse"]
                .iter()
                .zip(&c.stages)
                .map(|(n, h)| ((*n).to_owned(), percentiles(h)))
                .collect(),
            p99_first_last_minute_ms: first_last,
            series: c.series.clone(),
        });
    }
    let wall = started.elapsed().as_secs_f64();
    let measured = measured_from.elapsed().as_secs_f64();
    let cpu = procstat::cpu_seconds()
        .zip(cpu0)
        .map(|(a, b)| a - b)
        .unwrap_or(0.0);
    let other_cpu_percent = procstat::machine_busy_seconds()
        .zip(machine0)
        .map(|(a, b)| 100.0 * (a - b - cpu).max(0.0) / measured.max(1e-9));
    let report = BenchReport {
        source: opts.run.source.clone(),
        paced: opts.paced,
        streams: opts.streams.max(1),
        device,
        detector,
        wall_s: wall,
        warmup_s: opts.warmup.as_secs_f64(),
        cpu_percent: 100.0 * cpu / measured.max(1e-9),
        other_cpu_percent,
        peak_rss_mb: procstat::peak_rss_mb().unwrap_or(0.0),
        per_stream,
        resources: monitor.finish(),
    };
    if let Some(path) = &opts.report {
        write_json(&report, path)?;
    }
    if let Some(path) = &opts.plot {
        draw_plot(&report, path)?;
    }
    Ok(report)
}

/// Writes a report as pretty-printed JSON.
fn write_json(report: &impl Serialize, path: &std::path::Path) -> Result<(), BenchError> {
    let failed = |message: String| BenchError::Report {
        path: path.to_path_buf(),
        message,
    };
    let json = serde_json::to_string_pretty(report).map_err(|e| failed(e.to_string()))?;
    std::fs::write(path, json).map_err(|e| failed(e.to_string()))
}

#[cfg(feature = "plot")]
fn draw_plot(report: &BenchReport, path: &std::path::Path) -> Result<(), BenchError> {
    plot::draw(report, path).map_err(|message| BenchError::Report {
        path: path.to_path_buf(),
        message,
    })
}

/// Without the `plot` feature a requested plot is an error, not silently missing.
#[cfg(not(feature = "plot"))]
fn draw_plot(_report: &BenchReport, path: &std::path::Path) -> Result<(), BenchError> {
    Err(BenchError::Report {
        path: path.to_path_buf(),
        message: "this build cannot draw plots (cargo feature `plot`)".into(),
    })
}

/// The report as a text table.
pub fn table(report: &BenchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let row = |out: &mut String, name: &str, p: &Percentiles| {
        writeln!(
            out,
            "  {name:<22} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            p.p50, p.p95, p.p99, p.max
        )
        .ok();
    };
    writeln!(
        out,
        "{} — {} stream(s), {}, device {}, detector {}",
        report.source,
        report.streams,
        if report.paced { "paced 1x" } else { "offline" },
        report.device,
        report.detector
    )
    .ok();
    for s in &report.per_stream {
        writeln!(
            out,
            "stream {}: latency ms        p50      p95      p99      max",
            s.stream
        )
        .ok();
        row(&mut out, "end-to-end", &s.end_to_end_ms);
        if let Some(lag) = &s.lag_ms {
            row(&mut out, "lag behind schedule", lag);
        }
        for (name, p) in &s.stages_ms {
            row(&mut out, &format!("stage {name}"), p);
        }
        writeln!(
            out,
            "  frames in {} / records out {} in {:.2} s: input {:.1} fps, output {:.1} fps; dropped {}, late {}, faces in {:.1} % of frames",
            s.frames_in,
            s.records_out,
            s.wall_s,
            s.input_fps,
            s.output_fps,
            s.frames_dropped,
            s.frames_late,
            s.face_fraction * 100.0
        )
        .ok();
        if report.warmup_s > 0.0 {
            writeln!(
                out,
                "  statistics over the {} frames after the {:.1} s warm-up",
                s.frames_counted, report.warmup_s
            )
            .ok();
        }
        if let Some((first, last)) = s.p99_first_last_minute_ms {
            writeln!(
                out,
                "  p99 first minute {first:.2} ms, last minute {last:.2} ms"
            )
            .ok();
        }
    }
    let rss: Vec<f64> = report.resources.iter().map(|r| r.rss_mb).collect();
    let (lo, hi) = rss
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    writeln!(
        out,
        "process: CPU {:.0} % of one core{}, peak RSS {:.1} MB (RSS {:.1}..{:.1} MB over the run), wall {:.2} s",
        report.cpu_percent,
        report
            .other_cpu_percent
            .map(|o| format!(" (other processes: {o:.0} %)"))
            .unwrap_or_default(),
        report.peak_rss_mb,
        if rss.is_empty() { 0.0 } else { lo },
        hi,
        report.wall_s
    )
    .ok();
    out
}
