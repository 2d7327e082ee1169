//! One camera on a worker: the existing pipeline and supervisor, its records handed to the
//! broker's backlog by a [`Feed`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::broker::publish::{CameraStatus, Feed};
use crate::capture::{CaptureCounters, CaptureTargets, Source};
use crate::pipeline::{Input, Models, Pipeline, RunOptions};
use crate::record::StreamState;
use crate::sink::prometheus::StreamMetrics;
use crate::streams::{self, StreamOutcome, StreamSpec};

/// A camera's pipeline running on its own thread.
pub struct CameraRun {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<StreamOutcome>,
    /// The supervisor's latest state (for the lease value and `cameras list`).
    pub status: Arc<Mutex<CameraStatus>>,
    /// Its counters, registered for /metrics.
    pub metrics: Arc<StreamMetrics>,
}

impl CameraRun {
    /// Starts `spec` on a new thread; its records go through `feed` (whose `status` and
    /// `metrics` this fills in).
    pub fn start(spec: StreamSpec, run: RunOptions, mut feed: Feed) -> Result<Self, String> {
        let counters = Arc::new(CaptureCounters::default());
        let metrics = Arc::new(StreamMetrics::new(spec.name.clone(), counters.clone()));
        let status = Arc::new(Mutex::new(CameraStatus {
            state: StreamState::Connecting,
            reason: None,
        }));
        feed.metrics = Some(metrics.clone());
        feed.status = status.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::Builder::new()
            .name(format!("affectstream-cam-{}", spec.name))
            .spawn(move || run_camera(spec, &run, feed, counters, stopping))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        Ok(Self {
            stop,
            thread,
            status,
            metrics,
        })
    }

    /// Asks the pipeline to stop (what was captured drains through the feed).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// True once the camera's thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the thread (call once [`Self::is_finished`]); its outcome.
    pub fn join(self) -> StreamOutcome {
        let name = self.metrics.name.clone();
        self.thread
            .join()
            .unwrap_or_else(|_| failed(&name, "its thread stopped unexpectedly"))
    }
}

fn failed(name: &str, reason: &str) -> StreamOutcome {
    StreamOutcome {
        name: name.to_owned(),
        state: StreamState::Failed,
        reason: Some(reason.to_owned()),
        reconnects: 0,
        frames: 0,
        dropped_frames: 0,
    }
}

/// Runs one camera's pipeline under the supervisor (reconnects, stall timeout, drop-oldest)
/// until it ends, fails, or `stop` is set; records and state changes go through `feed`.
/// This is the one place that builds a camera's pipeline on a worker.
pub fn run_camera(
    spec: StreamSpec,
    run: &RunOptions,
    feed: Feed,
    counters: Arc<CaptureCounters>,
    stop: Arc<AtomicBool>,
) -> StreamOutcome {
    let fail = |reason: String| {
        if let Ok(mut s) = feed.status.lock() {
            *s = CameraStatus {
                state: StreamState::Failed,
                reason: Some(reason.clone()),
            };
        }
        failed(&spec.name, &reason)
    };
    let source = match Source::parse(&spec.source) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let models = match Models::load(run) {
        Ok(m) => m,
        Err(e) => return fail(source.scrub(&e.to_string())),
    };
    let (mut targets, outputs) = CaptureTargets::channels(source.is_live());
    targets.counters = counters;
    let input = Input::Fed {
        outputs,
        counters: targets.counters.clone(),
        source_name: source.name.clone(),
        live: source.is_live(),
    };
    // The supervisor runs until the worker stops the camera; the stages until it ends the feed.
    let spawned = Pipeline::new(models, run).and_then(|pipeline| {
        pipeline
            .stream_name(spec.name.clone())
            .without_time_limit()
            .spawn(input)
    });
    let handle = match spawned {
        Ok(h) => h,
        Err(e) => return fail(e.to_string()),
    };
    let records_rx = handle.records().clone();
    let (status_tx, status_rx) = crossbeam_channel::bounded(64);
    let feeder = thread::Builder::new()
        .name(format!("affectstream-feed-{}", spec.name))
        .spawn(move || feed.run(records_rx, status_rx));
    let outcome = streams::supervise(spec, source, targets, status_tx, stop, &|| {
        handle.stages_finished()
    });
    let joined = handle.join();
    if let Ok(feeder) = feeder {
        feeder.join().ok();
    }
    match joined {
        Ok(_) => outcome,
        Err(e) => StreamOutcome {
            state: StreamState::Failed,
            reason: Some(e.to_string()),
            ..outcome
        },
    }
}
