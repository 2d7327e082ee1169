//! Live counters for the Prometheus `/metrics` endpoint: per stream (frames in, out and
//! dropped, reconnects, state) and per stage (latency histograms), plus the sinks' own drop
//! counters. Updated with atomics and short locks from the threads that own the numbers;
//! rendered on demand in the text exposition format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::capture::CaptureCounters;
use crate::record::Record;
use crate::record::StreamState;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
];

/// A Prometheus histogram with fixed buckets.
#[derive(Debug, Clone, Default)]
struct BucketHistogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl BucketHistogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|&b| seconds <= b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// The stages with a latency histogram, in the order rendered.
const LATENCY_STAGES: [&str; 4] = ["end_to_end", "detect", "encode", "fuse"];

/// Everything counted for one stream.
#[derive(Debug)]
pub struct StreamMetrics {
    /// The stream's name (label value).
    pub name: String,
    /// Frames decoded and dropped by the capture (shared across reconnects).
    pub capture: Arc<CaptureCounters>,
    /// Records produced (frames out).
    pub records: AtomicU64,
    /// Times the stream came back after being lost.
    pub reconnects: AtomicU64,
    /// Connection attempts that failed.
    pub failed_attempts: AtomicU64,
    state: AtomicU8,
    latency: Mutex<[BucketHistogram; LATENCY_STAGES.len()]>,
}

impl StreamMetrics {
    /// Counters for stream `name`, whose capture counts into `capture`.
    pub fn new(name: String, capture: Arc<CaptureCounters>) -> Self {
        Self {
            name,
            capture,
            records: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            state: AtomicU8::new(StreamState::Connecting as u8),
            latency: Mutex::default(),
        }
    }

    /// The stream's current state.
    pub fn state(&self) -> StreamState {
        StreamState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Sets the stream's state.
    pub fn set_state(&self, state: StreamState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Counts a record and its latencies.
    pub fn observe(&self, record: &Record) {
        self.records.fetch_add(1, Ordering::Relaxed);
        let Ok(mut hist) = self.latency.lock() else {
            return;
        };
        let s = &record.stages_ms;
        for (h, ms) in hist
            .iter_mut()
            .zip([record.latency_ms, s.detect, s.encode, s.fuse])
        {
            if let Some(ms) = ms {
                h.observe(ms / 1e3);
            }
        }
    }
}

/// Counters of one sink consumer.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Lines handed to the consumer.
    pub written: AtomicU64,
    /// Lines dropped because the consumer was behind.
    pub dropped: AtomicU64,
}

/// Counters of the WebSocket endpoint.
#[derive(Debug, Default)]
pub struct WebSocketCounters {
    /// Clients connected now.
    pub clients: AtomicU64,
    /// Clients ever accepted.
    pub accepted: AtomicU64,
    /// Clients disconnected because they did not keep up.
    pub dropped_slow: AtomicU64,
    /// Connections refused (bad token, bad request).
    pub refused: AtomicU64,
}

/// More metrics a run adds to the exposition (the worker's lease and broker counters).
pub trait MetricsSection: std::fmt::Debug + Send + Sync {
    /// Appends this section's metrics, in the text exposition format, to `out`.
    fn render(&self, out: &mut String);
}

/// All live counters of a run.
#[derive(Debug, Default)]
pub struct Registry {
    streams: Mutex<Vec<Arc<StreamMetrics>>>,
    sinks: Mutex<Vec<(String, Arc<SinkCounters>)>>,
    sections: Mutex<Vec<Arc<dyn MetricsSection>>>,
    /// The WebSocket endpoint's counters.
    pub websocket: WebSocketCounters,
}

impl Registry {
    /// Adds a stream's counters.
    pub fn add_stream(&self, metrics: Arc<StreamMetrics>) {
        if let Ok(mut streams) = self.streams.lock() {
            streams.push(metrics);
        }
    }

    /// Removes the counters of stream `name` (a worker's camera that stopped).
    pub fn remove_stream(&self, name: &str) {
        if let Ok(mut streams) = self.streams.lock() {
            streams.retain(|m| m.name != name);
        }
    }

    /// Adds a section rendered after the built-in metrics.
    pub fn add_section(&self, section: Arc<dyn MetricsSection>) {
        if let Ok(mut sections) = self.sections.lock() {
            sections.push(section);
        }
    }

    /// Adds and returns the counters of sink `name`.
    pub fn add_sink(&self, name: &str) -> Arc<SinkCounters> {
        let counters = Arc::new(SinkCounters::default());
        if let Ok(mut sinks) = self.sinks.lock() {
            sinks.push((name.to_owned(), counters.clone()));
        }
        counters
    }

    /// The streams registered so far.
    pub fn streams(&self) -> Vec<Arc<StreamMetrics>> {
        self.streams.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let streams = self.streams();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        type Counter = fn(&StreamMetrics) -> u64;
        let per_stream: [(&str, &str, &str, Counter); 6] = [
            ("frames_in_total", "counter", "Video frames decoded.", |m| {
                m.capture.frames.load(Ordering::Relaxed)
            }),
            ("frames_out_total", "counter", "Records produced.", |m| {
                m.records.load(Ordering::Relaxed)
            }),
            (
                "frames_dropped_total",
                "counter",
                "Decoded frames dropped because a stage was behind.",
                |m| m.capture.dropped_frames.load(Ordering::Relaxed),
            ),
            (
                "audio_blocks_dropped_total",
                "counter",
                "Audio blocks dropped because the audio stage was behind.",
                |m| m.capture.dropped_audio.load(Ordering::Relaxed),
            ),
            (
                "reconnects_total",
                "counter",
                "Times the stream came back after it was lost.",
                |m| m.reconnects.load(Ordering::Relaxed),
            ),
            (
                "connect_failures_total",
                "counter",
                "Connection attempts that failed.",
                |m| m.failed_attempts.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in per_stream {
            header(&mut out, name, kind, help);
            for m in &streams {
                let _ = writeln!(
                    out,
                    "affectstream_{name}{{stream=\"{}\"}} {}",
                    escape(&m.name),
                    value(m)
                );
            }
        }
        header(
            &mut out,
            "stream_state",
            "gauge",
            "1 for the state the stream is in, 0 for the others.",
        );
        for m in &streams {
            let now = m.state();
            for state in StreamState::ALL {
                let _ = writeln!(
                    out,
                    "affectstream_stream_state{{stream=\"{}\",state=\"{}\"}} {}",
                    escape(&m.name),
                    state.name(),
                    u8::from(state == now)
                );
            }
        }
        header(
            &mut out,
            "latency_seconds",
            "histogram",
            "Decode to record (end_to_end) and per-stage working time.",
        );
        for m in &streams {
            let Ok(hist) = m.latency.lock() else {
                continue;
            };
            for (stage, h) in LATENCY_STAGES.iter().zip(hist.iter()) {
                let labels = format!("stream=\"{}\",stage=\"{stage}\"", escape(&m.name));
                let mut cumulative = 0;
                for (bound, count) in BUCKETS.iter().zip(h.counts) {
                    cumulative += count;
                    let _ = writeln!(
                        out,
                        "affectstream_latency_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "affectstream_latency_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                     affectstream_latency_seconds_sum{{{labels}}} {}\n\
                     affectstream_latency_seconds_count{{{labels}}} {}",
                    h.count, h.sum, h.count
                );
            }
        }
        let sinks = self.sinks.lock().map(|s| s.clone()).unwrap_or_default();
        header(
            &mut out,
            "sink_lines_dropped_total",
            "counter",
            "Lines a sink dropped because it was behind.",
        );
        for (name, c) in &sinks {
            let _ = writeln!(
                out,
                "affectstream_sink_lines_dropped_total{{sink=\"{}\"}} {}",
                escape(name),
                load(&c.dropped)
            );
        }
        let ws = &self.websocket;
        for (name, kind, help, value) in [
            (
                "websocket_clients",
                "gauge",
                "WebSocket clients connected.",
                &ws.clients,
            ),
            (
                "websocket_clients_dropped_total",
                "counter",
                "WebSocket clients disconnected for not keeping up.",
                &ws.dropped_slow,
            ),
            (
                "websocket_refused_total",
                "counter",
                "Connections refused (missing or wrong token, bad request).",
                &ws.refused,
            ),
        ] {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "affectstream_{name} {}", load(value));
        }
        let sections = self.sections.lock().map(|s| s.clone()).unwrap_or_default();
        for section in sections {
            section.render(&mut out);
        }
        out
    }
}

/// Writes the `# HELP` and `# TYPE` lines of metric `affectstream_{name}`.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP affectstream_{name} {help}\n# TYPE affectstream_{name} {kind}"
    );
}

/// Escapes a label value (backslash, quote, newline).
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_counters_states_and_cumulative_buckets() {
        let registry = Registry::default();
        let m = Arc::new(StreamMetrics::new("cam \"1\"".into(), Arc::default()));
        m.capture.frames.store(7, Ordering::Relaxed);
        m.set_state(StreamState::Live);
        m.latency.lock().unwrap()[0].observe(0.003);
        m.latency.lock().unwrap()[0].observe(0.5);
        registry.add_stream(m);
        let text = registry.render();
        assert!(text.contains("affectstream_frames_in_total{stream=\"cam \\\"1\\\"\"} 7"));
        assert!(text.contains("state=\"live\"} 1"));
        assert!(text.contains("state=\"failed\"} 0"));
        assert!(text.contains("stage=\"end_to_end\",le=\"0.005\"} 1"));
        assert!(text.contains("stage=\"end_to_end\",le=\"0.64\"} 2"));
        assert!(text.contains("stage=\"end_to_end\",le=\"+Inf\"} 2"));
    }
}
