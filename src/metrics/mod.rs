//! Per-frame stage stamps and latency histograms: every frame carries the instants at which
//! each stage finished with it, so end-to-end and per-stage latency are measured on every frame.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The pipeline stages that stamp a frame, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Face detection, tracking and crop (face thread).
    Detect,
    /// Expression encoder (face encoder thread).
    Encode,
    /// Fusion with the voice (fusion thread).
    Fuse,
}

impl Stage {
    /// All stages in pipeline order.
    pub const ALL: [Stage; 3] = [Stage::Detect, Stage::Encode, Stage::Fuse];

    /// Name used in records and reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Detect => "detect",
            Stage::Encode => "encode",
            Stage::Fuse => "fuse",
        }
    }
}

/// When a frame was decoded and when each stage started and finished with it.
#[derive(Debug, Clone, Copy)]
pub struct Stamps {
    /// The decoded frame reached the pipeline (appsink callback).
    pub decoded: Instant,
    starts: [Option<Instant>; 3],
    ends: [Option<Instant>; 3],
}

impl Stamps {
    /// Stamps for a frame decoded at `decoded`.
    pub fn new(decoded: Instant) -> Self {
        Self {
            decoded,
            starts: [None; 3],
            ends: [None; 3],
        }
    }

    fn index(stage: Stage) -> usize {
        match stage {
            Stage::Detect => 0,
            Stage::Encode => 1,
            Stage::Fuse => 2,
        }
    }

    /// Marks that `stage` started work on this frame now.
    pub fn start(&mut self, stage: Stage) {
        self.starts[Self::index(stage)] = Some(Instant::now());
    }

    /// Marks that `stage` finished with this frame now.
    pub fn end(&mut self, stage: Stage) {
        self.ends[Self::index(stage)] = Some(Instant::now());
    }

    /// Time `stage` spent working on this frame (excluding queueing before it).
    pub fn stage_time(&self, stage: Stage) -> Option<Duration> {
        let i = Self::index(stage);
        Some(self.ends[i]?.saturating_duration_since(self.starts[i]?))
    }

    /// Decoded → `stage` finished.
    pub fn since_decoded(&self, stage: Stage) -> Option<Duration> {
        Some(self.ends[Self::index(stage)]?.saturating_duration_since(self.decoded))
    }
}

/// Latency histograms for a run: end-to-end and per stage, in microseconds.
pub struct LatencyStats {
    end_to_end: Histogram<u64>,
    stages: Vec<(Stage, Histogram<u64>)>,
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

/// A latency histogram in microseconds, 1 µs .. 1 hour, 3 significant digits.
#[allow(clippy::expect_used)]
pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 hour at 3 significant digits are valid bounds: construction cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Default for LatencyStats {
    fn default() -> Self {
        Self {
            end_to_end: new_histogram(),
            stages: Stage::ALL.iter().map(|&s| (s, new_histogram())).collect(),
        }
    }
}

impl LatencyStats {
    /// Adds one finished frame.
    pub fn record(&mut self, stamps: &Stamps, finished: Instant) {
        let micros = |d: Duration| (d.as_micros() as u64).max(1);
        self.end_to_end
            .saturating_record(micros(finished.saturating_duration_since(stamps.decoded)));
        for (stage, hist) in &mut self.stages {
            if let Some(d) = stamps.stage_time(*stage) {
                hist.saturating_record(micros(d));
            }
        }
    }

    /// Adds the latencies a record carries (video records only; audio-only ones have none).
    pub fn add_record(&mut self, record: &crate::record::Record) {
        let Some(e2e) = record.latency_ms else {
            return;
        };
        let micros = |ms: f64| ((ms * 1000.0) as u64).max(1);
        self.end_to_end.saturating_record(micros(e2e));
        let s = &record.stages_ms;
        for (stage, hist) in &mut self.stages {
            let value = match stage {
                Stage::Detect => s.detect,
                Stage::Encode => s.encode,
                Stage::Fuse => s.fuse,
            };
            if let Some(ms) = value {
                hist.saturating_record(micros(ms));
            }
        }
    }

    /// End-to-end percentiles (decoded → record ready).
    pub fn end_to_end(&self) -> Percentiles {
        percentiles(&self.end_to_end)
    }

    /// Per-stage percentiles, in pipeline order.
    pub fn stages(&self) -> Vec<(Stage, Percentiles)> {
        self.stages
            .iter()
            .map(|(s, h)| (*s, percentiles(h)))
            .collect()
    }
}

/// Percentiles (ms) of a microsecond histogram.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |v: u64| v as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        p50: ms(h.value_at_quantile(0.50)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_measure_stage_and_end_to_end_time() {
        let t0 = Instant::now();
        let mut s = Stamps::new(t0);
        s.start(Stage::Detect);
        std::thread::sleep(Duration::from_millis(2));
        s.end(Stage::Detect);
        assert!(s.stage_time(Stage::Detect).unwrap() >= Duration::from_millis(2));
        assert!(s.stage_time(Stage::Encode).is_none());
        let mut stats = LatencyStats::default();
        stats.record(&s, Instant::now());
        let e2e = stats.end_to_end();
        assert_eq!(e2e.count, 1);
        assert!(e2e.p50 >= 2.0);
    }
}
