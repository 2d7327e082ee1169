//! `affectstream bench --capacity`: the largest number of paced streams of one source that run
//! at once with every stream keeping up (at most 1 % late frames each). Each trial is a paced
//! multi-stream `bench` (a warm-up that is not counted, then a fixed duration); the count to try
//! next is a pure function of the trials so far (`next_step`): 1, then doubling while it holds,
//! then bisection between the last good and the first bad count, capped at `max_streams`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::{BenchError, BenchOptions, BenchReport, bench, procstat};
use crate::metrics::{Percentiles, new_histogram, percentiles};
use crate::pipeline::RunOptions;

/// What to search.
#[derive(Debug, Clone)]
pub struct CapacityOptions {
    /// The pipeline settings (source, device, models, stage settings).
    pub run: RunOptions,
    /// Counted time of each trial.
    pub duration: Duration,
    /// Time at the start of each trial that is not counted.
    pub warmup: Duration,
    /// The most streams tried (the answer is at most this).
    pub max_streams: usize,
    /// Largest share of late frames a stream may have for a trial to hold (0.01: 1 %).
    pub late_limit: f64,
    /// JSON report path (every trial).
    pub report: Option<PathBuf>,
    /// PNG plot path (latency against stream count).
    pub plot: Option<PathBuf>,
}

impl CapacityOptions {
    /// The defaults of `bench --capacity`: 5 s warm-up, 20 s counted, up to 64 streams, 1 %.
    pub fn new(run: RunOptions) -> Self {
        Self {
            run,
            duration: Duration::from_secs(20),
            warmup: Duration::from_secs(5),
            max_streams: 64,
            late_limit: 0.01,
            report: None,
            plot: None,
        }
    }
}

/// What the search does next, given the trials so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Run a trial with this many streams.
    Try(usize),
    /// The search is over: this many streams hold (0: not even one).
    Done(usize),
}

/// The next step of the search from the trials so far (`(streams, held)` in any order): 1
/// first; while every trial held, double the largest (capped at `max_streams`); after a
/// failure, bisect between the largest count that held below the smallest that failed and that
/// failure, until they are adjacent. Assumes holding is monotonic in the count (a count above a
/// failure that held is ignored).
pub fn next_step(trials: &[(usize, bool)], max_streams: usize) -> Step {
    let max_streams = max_streams.max(1);
    let bad = trials
        .iter()
        .filter(|(_, held)| !held)
        .map(|(n, _)| *n)
        .min();
    let good = trials
        .iter()
        .filter(|(n, held)| *held && bad.is_none_or(|b| *n < b))
        .map(|(n, _)| *n)
        .max();
    match (good, bad) {
        (None, None) => Step::Try(1),
        (None, Some(_)) => Step::Done(0),
        (Some(g), None) if g >= max_streams => Step::Done(g.min(max_streams)),
        (Some(g), None) => Step::Try((g * 2).min(max_streams)),
        (Some(g), Some(b)) if b <= g + 1 => Step::Done(g),
        (Some(g), Some(b)) => Step::Try(g + (b - g) / 2),
    }
}

/// One trial: that many paced streams at once.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    /// Streams at once.
    pub streams: usize,
    /// Every stream had at most the late limit (and produced counted frames).
    pub held: bool,
    /// Late frames of the worst stream, % of its counted frames.
    pub late_percent: f64,
    /// Late frames per stream, % of its counted frames.
    pub late_percent_per_stream: Vec<f64>,
    /// Frames counted over all streams (after the warm-up).
    pub frames_counted: u64,
    /// End-to-end latency (decoded → record ready) of the counted frames of all streams.
    pub end_to_end_ms: Percentiles,
    /// The largest per-stream p99 of end-to-end latency.
    pub worst_stream_p99_ms: f64,
    /// Lag behind the schedule of the counted frames of all streams.
    pub lag_ms: Percentiles,
    /// Process CPU after the warm-up, % of one core.
    pub cpu_percent: f64,
    /// `cpu_percent` over the stream count.
    pub cpu_percent_per_stream: f64,
    /// CPU of every other process on the machine meanwhile, % of one core.
    pub other_cpu_percent: Option<f64>,
    /// Peak resident set size of this trial (models loaded, streams running), MB.
    pub peak_rss_mb: f64,
    /// Wall time of the trial, s.
    pub wall_s: f64,
}

impl Trial {
    /// The trial's figures from its benchmark report.
    fn from_report(report: &BenchReport, late_limit: f64, peak_rss_mb: f64) -> Self {
        let mut e2e = new_histogram();
        let mut lag = new_histogram();
        for s in report.per_stream.iter().flat_map(|s| &s.series) {
            if s.counted {
                e2e.saturating_record(super::micros(s.latency_ms));
                if let Some(l) = s.lag_ms {
                    lag.saturating_record(super::micros(l));
                }
            }
        }
        let late: Vec<f64> = report
            .per_stream
            .iter()
            .map(|s| 100.0 * s.frames_late as f64 / s.frames_counted.max(1) as f64)
            .collect();
        let late_percent = late.iter().copied().fold(0.0, f64::max);
        let held = !report.per_stream.is_empty()
            && report.per_stream.iter().all(|s| s.frames_counted > 0)
            && late_percent <= late_limit * 100.0;
        let streams = report.streams.max(1);
        Self {
            streams,
            held,
            late_percent,
            late_percent_per_stream: late,
            frames_counted: report.per_stream.iter().map(|s| s.frames_counted).sum(),
            end_to_end_ms: percentiles(&e2e),
            worst_stream_p99_ms: report
                .per_stream
                .iter()
                .map(|s| s.end_to_end_ms.p99)
                .fold(0.0, f64::max),
            lag_ms: percentiles(&lag),
            cpu_percent: report.cpu_percent,
            cpu_percent_per_stream: report.cpu_percent / streams as f64,
            other_cpu_percent: report.other_cpu_percent,
            peak_rss_mb,
            wall_s: report.wall_s,
        }
    }
}

/// Other processes' CPU (% of one core) during a trial above which the table says the result is
/// noisy.
const NOISY_OTHER_CPU_PERCENT: f64 = 20.0;

/// The result of the search.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityReport {
    /// Source benchmarked.
    pub source: String,
    /// Execution provider.
    pub device: String,
    /// Face detector.
    pub detector: String,
    /// The largest stream count that held (0: not even one stream).
    pub capacity: usize,
    /// The cap of the search; `capacity == max_streams` means at least that many.
    pub max_streams: usize,
    /// A stream may have at most this share of late frames, %.
    pub late_limit_percent: f64,
    /// Uncounted start of each trial, s.
    pub warmup_s: f64,
    /// Counted time of each trial, s.
    pub duration_s: f64,
    /// Peak RSS growth per stream added: between the 1-stream trial and the largest trial, MB.
    pub mb_per_extra_stream: Option<f64>,
    /// Every trial in the order run.
    pub trials: Vec<Trial>,
}

impl CapacityReport {
    /// The trial at the capacity (none when even one stream did not hold).
    pub fn at_capacity(&self) -> Option<&Trial> {
        self.trials
            .iter()
            .find(|t| t.streams == self.capacity && t.held)
    }
}

/// Peak RSS growth per extra stream between the 1-stream trial and the largest one. The largest
/// trial is reached by doubling, above every earlier one, so memory kept by the allocator from
/// earlier trials does not inflate it.
fn mb_per_extra_stream(trials: &[Trial]) -> Option<f64> {
    let one = trials.iter().find(|t| t.streams == 1)?;
    let most = trials.iter().max_by_key(|t| t.streams)?;
    (most.streams > 1).then(|| (most.peak_rss_mb - one.peak_rss_mb) / (most.streams - 1) as f64)
}

/// Runs the search (each trial a paced `bench` with `n` streams).
pub fn capacity(opts: &CapacityOptions) -> Result<CapacityReport, BenchError> {
    let mut trials: Vec<Trial> = Vec::new();
    let (mut device, mut detector) = (String::new(), String::new());
    let capacity = loop {
        let seen: Vec<(usize, bool)> = trials.iter().map(|t| (t.streams, t.held)).collect();
        let n = match next_step(&seen, opts.max_streams) {
            Step::Done(n) => break n,
            // Never run a count twice (next_step does not ask for one; this bounds the loop).
            Step::Try(n) if seen.iter().any(|(m, _)| *m == n) => {
                break seen
                    .iter()
                    .filter(|(m, held)| *held && *m < n)
                    .map(|(m, _)| *m)
                    .max()
                    .unwrap_or(0);
            }
            Step::Try(n) => n,
        };
        tracing::info!(streams = n, "capacity trial");
        let reset = procstat::reset_peak_rss();
        let report = bench(&BenchOptions {
            run: opts.run.clone(),
            paced: true,
            streams: n,
            duration: Some(opts.duration),
            warmup: opts.warmup,
            report: None,
            plot: None,
        })?;
        // Without a reset VmHWM is the whole process's peak; the sampled RSS is the trial's own.
        let sampled = report
            .resources
            .iter()
            .map(|r| r.rss_mb)
            .fold(0.0, f64::max);
        let peak = if reset { report.peak_rss_mb } else { sampled };
        device.clone_from(&report.device);
        detector.clone_from(&report.detector);
        let trial = Trial::from_report(&report, opts.late_limit, peak);
        tracing::info!(
            streams = n,
            held = trial.held,
            late_percent = format!("{:.2}", trial.late_percent),
            p99_ms = format!("{:.2}", trial.end_to_end_ms.p99),
            cpu_percent = format!("{:.0}", trial.cpu_percent),
            "capacity trial done"
        );
        trials.push(trial);
    };
    let report = CapacityReport {
        source: opts.run.source.clone(),
        device,
        detector,
        capacity,
        max_streams: opts.max_streams.max(1),
        late_limit_percent: opts.late_limit * 100.0,
        warmup_s: opts.warmup.as_secs_f64(),
        duration_s: opts.duration.as_secs_f64(),
        mb_per_extra_stream: mb_per_extra_stream(&trials),
        trials,
    };
    if let Some(path) = &opts.report {
        super::write_json(&report, path)?;
    }
    if let Some(path) = &opts.plot {
        draw_plot(&report, path)?;
    }
    Ok(report)
}

#[cfg(feature = "plot")]
fn draw_plot(report: &CapacityReport, path: &std::path::Path) -> Result<(), BenchError> {
    super::plot::draw_capacity(report, path).map_err(|message| BenchError::Report {
        path: path.to_path_buf(),
        message,
    })
}

/// Without the `plot` feature a requested plot is an error, not silently missing.
#[cfg(not(feature = "plot"))]
fn draw_plot(_report: &CapacityReport, path: &std::path::Path) -> Result<(), BenchError> {
    Err(BenchError::Report {
        path: path.to_path_buf(),
        message: "this build cannot draw plots (cargo feature `plot`)".into(),
    })
}

/// The result as text: the capacity with its CPU and memory, then one row per trial.
pub fn table(report: &CapacityReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let at_least = if report.capacity >= report.max_streams {
        " (the --max-streams cap: at least this many)"
    } else {
        ""
    };
    writeln!(
        out,
        "capacity: {} paced stream(s) of {}{at_least}",
        report.capacity, report.source
    )
    .ok();
    writeln!(
        out,
        "  every stream at most {:.0} % late frames; {} trial(s) of {:.1} s warm-up + {:.1} s counted; device {}, detector {}",
        report.late_limit_percent,
        report.trials.len(),
        report.warmup_s,
        report.duration_s,
        report.device,
        report.detector
    )
    .ok();
    match report.at_capacity() {
        Some(t) => {
            writeln!(
                out,
                "  at {} stream(s): CPU {:.0} % of one core ({:.1} % per stream), peak RSS {:.1} MB, end-to-end p50 {:.2} ms, p99 {:.2} ms",
                t.streams,
                t.cpu_percent,
                t.cpu_percent_per_stream,
                t.peak_rss_mb,
                t.end_to_end_ms.p50,
                t.end_to_end_ms.p99
            )
            .ok();
        }
        None => {
            let late = report.trials.first().map_or(0.0, |t| t.late_percent);
            writeln!(
                out,
                "  even 1 stream does not keep up: {late:.2} % of its frames late"
            )
            .ok();
        }
    }
    if let (Some(mb), Some(most)) = (
        report.mb_per_extra_stream,
        report.trials.iter().map(|t| t.streams).max(),
    ) {
        writeln!(
            out,
            "  memory: {mb:.1} MB peak RSS per extra stream (1 → {most} streams)"
        )
        .ok();
    }
    writeln!(
        out,
        "  streams  late % (worst)  e2e p50 ms  p99 ms  max ms  CPU %  CPU %/stream  peak RSS MB  other CPU %  result"
    )
    .ok();
    for t in &report.trials {
        writeln!(
            out,
            "  {:>7}  {:>14.2}  {:>10.2}  {:>6.2}  {:>6.1}  {:>5.0}  {:>12.1}  {:>11.1}  {:>11}  {}",
            t.streams,
            t.late_percent,
            t.end_to_end_ms.p50,
            t.end_to_end_ms.p99,
            t.end_to_end_ms.max,
            t.cpu_percent,
            t.cpu_percent_per_stream,
            t.peak_rss_mb,
            t.other_cpu_percent
                .map_or_else(|| "-".to_owned(), |o| format!("{o:.0}")),
            if t.held { "holds" } else { "late" }
        )
        .ok();
    }
    let busiest = report
        .trials
        .iter()
        .filter_map(|t| t.other_cpu_percent)
        .fold(0.0, f64::max);
    if busiest > NOISY_OTHER_CPU_PERCENT {
        writeln!(
            out,
            "note: other processes used up to {busiest:.0} % of a core during the trials: the capacity is \
             what was left to this process; measure on a quiet machine for the machine's own"
        )
        .ok();
    }
    writeln!(
        out,
        "late: a frame whose record is ready more than one frame interval after the frame was due \
         (frame at stream time t due at anchor + t, anchor the earliest decode instant minus t of its pass)"
    )
    .ok();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against a fake trial: counts up to `holds_up_to` hold.
    fn search(holds_up_to: usize, max: usize) -> (usize, Vec<usize>) {
        let mut trials = Vec::new();
        loop {
            match next_step(&trials, max) {
                Step::Done(n) => return (n, trials.iter().map(|(n, _)| *n).collect()),
                Step::Try(n) => {
                    assert!(
                        !trials.iter().any(|(m, _)| *m == n),
                        "{n} tried twice: {trials:?}"
                    );
                    trials.push((n, n <= holds_up_to));
                }
            }
        }
    }

    #[test]
    fn starts_at_one() {
        assert_eq!(next_step(&[], 64), Step::Try(1));
    }

    #[test]
    fn doubles_then_bisects() {
        assert_eq!(search(5, 64), (5, vec![1, 2, 4, 8, 6, 5]));
        assert_eq!(search(7, 64), (7, vec![1, 2, 4, 8, 6, 7]));
        assert_eq!(search(8, 64), (8, vec![1, 2, 4, 8, 16, 12, 10, 9]));
        assert_eq!(search(1, 64), (1, vec![1, 2]));
    }

    #[test]
    fn no_stream_holds() {
        assert_eq!(search(0, 64), (0, vec![1]));
    }

    #[test]
    fn stops_at_the_cap() {
        assert_eq!(search(100, 64), (64, vec![1, 2, 4, 8, 16, 32, 64]));
        assert_eq!(search(100, 2), (2, vec![1, 2]));
        assert_eq!(search(100, 1), (1, vec![1]));
        assert_eq!(search(100, 5), (5, vec![1, 2, 4, 5]));
        assert_eq!(search(4, 5), (4, vec![1, 2, 4, 5]));
        assert_eq!(search(2, 5), (2, vec![1, 2, 4, 3]));
    }

    #[test]
    fn every_answer_is_exact() {
        for max in 1..=40 {
            for holds in 0..=45 {
                let (n, tried) = search(holds, max);
                assert_eq!(n, holds.min(max), "holds {holds}, max {max}: {tried:?}");
                assert!(tried.len() <= 2 * 7, "{tried:?}");
            }
        }
    }

    #[test]
    fn a_noisy_pass_above_a_failure_is_ignored() {
        // 4 failed, then 3 held: 2..4 bisected, the (impossible in order) 8 that held is ignored.
        assert_eq!(
            next_step(&[(1, true), (2, true), (4, false), (8, true)], 64),
            Step::Try(3)
        );
        assert_eq!(
            next_step(&[(1, true), (2, true), (4, false), (3, true)], 64),
            Step::Done(3)
        );
        assert_eq!(next_step(&[(1, false), (2, true)], 64), Step::Done(0));
    }

    #[test]
    fn memory_per_extra_stream_uses_the_largest_trial() {
        let trial = |streams, peak_rss_mb| Trial {
            streams,
            held: true,
            late_percent: 0.0,
            late_percent_per_stream: vec![],
            frames_counted: 0,
            end_to_end_ms: percentiles(&new_histogram()),
            worst_stream_p99_ms: 0.0,
            lag_ms: percentiles(&new_histogram()),
            cpu_percent: 0.0,
            cpu_percent_per_stream: 0.0,
            other_cpu_percent: None,
            peak_rss_mb,
            wall_s: 0.0,
        };
        let trials = [
            trial(1, 200.0),
            trial(2, 280.0),
            trial(4, 440.0),
            trial(3, 450.0),
        ];
        assert_eq!(mb_per_extra_stream(&trials), Some(80.0));
        assert_eq!(mb_per_extra_stream(&trials[..1]), None);
    }
}
