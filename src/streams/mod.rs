//! Many streams in one process, each kept alive by its own supervisor.
//!
//! ```text
//!            ┌ supervisor ─ Capture (reconnects) ─▶ stages (face, encode, audio, fusion) ┐
//! stream 1..n┤                 │ status changes                               records  ├▶ sink hub ─▶ JSONL, CSV,
//!            └ ...             └──────────────────────────────────────────────────────▶┘            WebSocket, /metrics
//! ```
//!
//! A supervisor owns the sending ends of its stream's stage channels and hands them to each
//! new capture, so the stages (and their models, tracks and smoothing) outlive reconnects.
//! A lost, refused or stalled stream is retried with exponential backoff and full jitter
//! (`backoff`) until its outage exceeds the retry budget; then it is failed and the others go
//! on. While it waits, the RTSP server's port is probed (`probe`), so a camera that comes back
//! is retried at once instead of after the grown backoff.

pub mod backoff;
pub mod probe;
pub mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;

use crate::capture::{Capture, CaptureOptions, CaptureTargets, Source};
use crate::pipeline::{
    Input, Pipeline, PipelineError, PipelineHandle, RecordQueue, RunOptions, STAGE_QUEUE,
    SharedModels,
};
use crate::record::StatusRecord;
pub use crate::record::StreamState;
use crate::sink::hub::{HubSummary, HubTargets, SinkHub};
use crate::sink::prometheus::{Registry, StreamMetrics};
use crate::sink::server::{Server, ServerConfig};
use backoff::Jitter;
use probe::{ReturnProbe, Seen};
pub use settings::StreamSettings;

/// One stream to run.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Name carried by its records, logs and metrics.
    pub name: String,
    /// Path or URL (may hold credentials; never printed as is).
    pub source: String,
    /// Connection and recovery settings.
    pub settings: StreamSettings,
}

/// Everything a multi-stream run needs.
pub struct StreamsOptions {
    /// The streams.
    pub streams: Vec<StreamSpec>,
    /// Models, stage settings and device (its `source`, `out` and `capture` are ignored).
    pub run: RunOptions,
    /// JSONL and CSV outputs.
    pub sinks: HubTargets,
    /// The WebSocket and /metrics endpoint, when wanted.
    pub server: Option<ServerConfig>,
    /// Stop every stream after this long.
    pub max_duration: Option<Duration>,
    /// Set from anywhere (a signal handler) to stop every stream; what was captured drains.
    pub stop: Arc<AtomicBool>,
}

/// Errors that end a multi-stream run before or outside any one stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    #[error("no streams to run: give --source or [[stream]] entries in --config")]
    NoStreams,
    #[error("two streams are named '{0}': stream names must be unique")]
    DuplicateName(String),
    #[error("stream '{stream}': {source}")]
    Stream {
        stream: String,
        #[source]
        source: Box<PipelineError>,
    },
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error("cannot start a thread: {0}")]
    Thread(String),
}

/// How one stream ended.
#[derive(Debug, Clone)]
pub struct StreamOutcome {
    /// The stream's name.
    pub name: String,
    /// Ended or failed.
    pub state: StreamState,
    /// Why it failed (or what ended it).
    pub reason: Option<String>,
    /// Times it came back after being lost.
    pub reconnects: u64,
    /// Video frames decoded.
    pub frames: u64,
    /// Video frames dropped because a stage was behind.
    pub dropped_frames: u64,
}

/// What a multi-stream run reports.
#[derive(Debug, Clone)]
pub struct StreamsSummary {
    /// Each stream's end, in the order given.
    pub streams: Vec<StreamOutcome>,
    /// Records and status lines the sinks received.
    pub hub: HubSummary,
    /// Wall time of the run.
    pub wall: Duration,
    /// Where the endpoint listened (the bound address, port 0 resolved).
    pub listen: Option<SocketAddr>,
}

/// Poll interval of a supervisor (stop flag, stall check, state changes).
const POLL: Duration = Duration::from_millis(100);

/// Runs every stream until each has ended or failed (or `stop`/`max_duration`), writing
/// records and status changes to the sinks. `on_listen` learns the endpoint's address.
pub fn run_streams(
    opts: &StreamsOptions,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<StreamsSummary, StreamsError> {
    if opts.streams.is_empty() {
        return Err(StreamsError::NoStreams);
    }
    for (i, s) in opts.streams.iter().enumerate() {
        if opts.streams[..i].iter().any(|o| o.name == s.name) {
            return Err(StreamsError::DuplicateName(s.name.clone()));
        }
    }
    let started = Instant::now();
    let stream_error = |name: &str, e: PipelineError| StreamsError::Stream {
        stream: name.to_owned(),
        source: Box::new(e),
    };
    // Open every source and load the models first: a typo fails the run before it starts.
    // The models are loaded once; each stream gets its own state on the shared sessions.
    let mut prepared = Vec::new();
    let mut shared: Option<SharedModels> = None;
    for spec in &opts.streams {
        let source = Source::parse(&spec.source).map_err(|e| stream_error(&spec.name, e.into()))?;
        let loaded = match &shared {
            Some(loaded) => loaded,
            None => shared
                .insert(SharedModels::load(&opts.run).map_err(|e| stream_error(&spec.name, e))?),
        };
        let models = loaded.stream().map_err(|e| stream_error(&spec.name, e))?;
        prepared.push((spec.clone(), source, models));
    }
    drop(shared);
    let lossless = prepared.iter().all(|(_, source, _)| !source.is_live());

    let registry = Arc::new(Registry::default());
    let server = opts
        .server
        .clone()
        .map(|config| Server::start(config, registry.clone()))
        .transpose()?;
    if let Some(server) = &server {
        on_listen(server.addr);
    }
    let records = RecordQueue::bounded(STAGE_QUEUE * prepared.len());
    let (status_tx, status_rx) = crossbeam_channel::bounded::<StatusRecord>(64);

    let mut supervisors = Vec::new();
    let mut metrics_list = Vec::new();
    for (index, (spec, source, models)) in prepared.into_iter().enumerate() {
        let (targets, outputs) = CaptureTargets::channels(source.is_live());
        let metrics = Arc::new(StreamMetrics::new(
            spec.name.clone(),
            targets.counters.clone(),
        ));
        registry.add_stream(metrics.clone());
        metrics_list.push(metrics.clone());
        let input = Input::Fed {
            outputs,
            counters: targets.counters.clone(),
            source_name: source.name.clone(),
            live: source.is_live(),
        };
        // The supervisor keeps the run's time limit; the stages run until it ends the feed.
        let pipeline = Pipeline::new(models, &opts.run)
            .map_err(|e| stream_error(&spec.name, e))?
            .stream_name(spec.name.clone())
            .records_into(records.clone())
            .without_time_limit();
        let stages = pipeline
            .spawn(input)
            .map_err(|e| stream_error(&spec.name, e))?;
        let supervisor = Supervisor {
            spec,
            source,
            targets,
            metrics,
            status: status_tx.clone(),
            stop: opts.stop.clone(),
            deadline: opts.max_duration.map(|d| started + d),
            jitter: Jitter::new(index as u64),
        };
        let handle = thread::Builder::new()
            .name(format!("affectstream-supervise-{index}"))
            .spawn(move || supervisor.run(stages))
            .map_err(|e| StreamsError::Thread(e.to_string()))?;
        supervisors.push(handle);
    }
    // The hub starts after the streams are registered, so it can find their counters.
    let hub = SinkHub::start(
        &opts.sinks,
        records.receiver(),
        status_rx,
        registry.clone(),
        server.as_ref().map(|s| s.clients.clone()),
        lossless,
    )?;
    drop(records);
    drop(status_tx);

    let mut outcomes = Vec::new();
    for (handle, metrics) in supervisors.into_iter().zip(&metrics_list) {
        let outcome = handle.join().unwrap_or_else(|_| StreamOutcome {
            name: metrics.name.clone(),
            state: StreamState::Failed,
            reason: Some("its supervisor thread stopped unexpectedly".into()),
            reconnects: metrics.reconnects.load(Ordering::Relaxed),
            frames: metrics.capture.frames.load(Ordering::Relaxed),
            dropped_frames: metrics.capture.dropped_frames.load(Ordering::Relaxed),
        });
        outcomes.push(outcome);
    }
    let hub = hub.finish()?;
    let listen = server.as_ref().map(|s| s.addr);
    drop(server);
    Ok(StreamsSummary {
        streams: outcomes,
        hub,
        wall: started.elapsed(),
        listen,
    })
}

/// Keeps one source connected into `targets` (reconnecting live sources, with the spec's
/// backoff, budget and stall timeout) until it ends, fails, or `stop` is set; reports each
/// state change into `status`. `stages_ended` tells when the stages fed by `targets` have
/// stopped. The targets are dropped on return, so those stages drain. This is what each
/// stream of [`run_streams`] runs; the live demo runs it for an RTSP source.
pub fn supervise(
    spec: StreamSpec,
    source: Source,
    targets: CaptureTargets,
    status: Sender<StatusRecord>,
    stop: Arc<AtomicBool>,
    stages_ended: &dyn Fn() -> bool,
) -> StreamOutcome {
    let metrics = Arc::new(StreamMetrics::new(
        spec.name.clone(),
        targets.counters.clone(),
    ));
    let mut supervisor = Supervisor {
        spec,
        source,
        targets,
        metrics,
        status,
        stop,
        deadline: None,
        jitter: Jitter::new(0),
    };
    supervisor.supervise(stages_ended)
}

/// How one connection of a stream ended.
enum Ended {
    /// The run is being stopped.
    Stopped,
    /// A file reached its end.
    EndOfStream,
    /// A stage thread ended early (its error comes with the join).
    StageStopped,
    /// Connection lost, refused or stalled: try again.
    Lost(String),
}

/// How a wait before a retry ended.
enum Waited {
    /// The backoff delay passed.
    Elapsed,
    /// The probe saw the server come back.
    Returned,
    /// The run is being stopped.
    Stopped,
}

/// Keeps one stream running: connects, watches, reconnects, reports state changes.
struct Supervisor {
    spec: StreamSpec,
    source: Source,
    targets: CaptureTargets,
    metrics: Arc<StreamMetrics>,
    status: Sender<StatusRecord>,
    stop: Arc<AtomicBool>,
    deadline: Option<Instant>,
    jitter: Jitter,
}

impl Supervisor {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Enters `state` (when it is a change, or a new reason), logging and reporting it.
    fn enter(&self, state: StreamState, reason: Option<String>) {
        let previous = self.metrics.state();
        self.metrics.set_state(state);
        let name = &self.spec.name;
        let why = reason.as_deref().unwrap_or("");
        match state {
            StreamState::Failed => tracing::error!(stream = %name, "failed: {why}"),
            // Retries of the first connection are as worth a warning as reconnects.
            StreamState::Reconnecting | StreamState::Connecting if reason.is_some() => {
                tracing::warn!(stream = %name, "{}: {why}", state.name())
            }
            _ if previous != state => {
                tracing::info!(stream = %name, "{}{}{why}", state.name(), if why.is_empty() { "" } else { ": " })
            }
            _ => {}
        }
        let counters = &self.targets.counters;
        let status = StatusRecord {
            stream: name.clone(),
            source: self.source.name.clone(),
            state,
            reason,
            reconnects: self.metrics.reconnects.load(Ordering::Relaxed),
            frames: counters.frames.load(Ordering::Relaxed),
            dropped_frames: counters.dropped_frames.load(Ordering::Relaxed),
            wall_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        // The hub is never slow for long; a closed hub means the run is ending.
        self.status.send(status).ok();
    }

    fn outcome(&self, state: StreamState, reason: Option<String>) -> StreamOutcome {
        self.enter(state, reason.clone());
        let counters = &self.targets.counters;
        StreamOutcome {
            name: self.spec.name.clone(),
            state,
            reason,
            reconnects: self.metrics.reconnects.load(Ordering::Relaxed),
            frames: counters.frames.load(Ordering::Relaxed),
            dropped_frames: counters.dropped_frames.load(Ordering::Relaxed),
        }
    }

    fn run(mut self, stages: PipelineHandle) -> StreamOutcome {
        let outcome = self.supervise(&|| stages.stages_finished());
        // Closing the capture channels lets the stages drain and end.
        let Self {
            targets, metrics, ..
        } = self;
        drop(targets);
        match stages.join() {
            Ok(_) => outcome,
            Err(e) => StreamOutcome {
                state: StreamState::Failed,
                reason: Some(e.to_string()),
                reconnects: metrics.reconnects.load(Ordering::Relaxed),
                ..outcome
            },
        }
    }

    fn supervise(&mut self, stages_ended: &dyn Fn() -> bool) -> StreamOutcome {
        let live = self.source.is_live();
        let started = Instant::now();
        let settings = self.spec.settings;
        let mut ever_live = false;
        let mut failures_in_a_row = 0u32;
        // Where the backoff stands: the failures in a row since the stream was live or its
        // server was last seen coming back.
        let mut backoff_step = 0u32;
        let mut outage_since = started;
        let mut probe = if live {
            ReturnProbe::new(&self.source.uri, settings.reconnect_probe)
        } else {
            None
        };
        self.enter(StreamState::Connecting, None);
        loop {
            if self.stopping() {
                return self.outcome(StreamState::Ended, Some("stopped".into()));
            }
            let options = CaptureOptions {
                paced: false,
                live,
                pts_offset: if live {
                    started.elapsed()
                } else {
                    Duration::ZERO
                },
                rtsp: settings.rtsp,
                ..CaptureOptions::default()
            };
            let attempt_started = Instant::now();
            let ended = match Capture::start_into(&self.source, options, &self.targets) {
                Err(e) => Ended::Lost(e.to_string()),
                Ok(capture) => {
                    let ended = self.watch(&capture, stages_ended, attempt_started, &mut ever_live);
                    if matches!(self.metrics.state(), StreamState::Live) {
                        failures_in_a_row = 0;
                        backoff_step = 0;
                        outage_since = Instant::now();
                    }
                    ended
                }
            };
            let reason = match ended {
                Ended::Stopped => return self.outcome(StreamState::Ended, Some("stopped".into())),
                Ended::EndOfStream => return self.outcome(StreamState::Ended, None),
                Ended::StageStopped => {
                    return self.outcome(StreamState::Failed, Some("a stage stopped".into()));
                }
                Ended::Lost(reason) => reason,
            };
            if !live {
                return self.outcome(StreamState::Failed, Some(reason));
            }
            self.metrics.failed_attempts.fetch_add(1, Ordering::Relaxed);
            let delay = settings
                .backoff()
                .delay(backoff_step, self.jitter.next_unit());
            failures_in_a_row += 1;
            backoff_step += 1;
            if outage_since.elapsed() + delay > settings.retry_budget {
                let reason = format!(
                    "gave up after {failures_in_a_row} failed attempts over {:.1} s (retry budget {:.1} s): {reason}",
                    outage_since.elapsed().as_secs_f64(),
                    settings.retry_budget.as_secs_f64()
                );
                return self.outcome(StreamState::Failed, Some(reason));
            }
            let state = if ever_live {
                StreamState::Reconnecting
            } else {
                StreamState::Connecting
            };
            self.enter(
                state,
                Some(format!(
                    "{reason}; retrying in {:.2} s",
                    delay.as_secs_f64()
                )),
            );
            match self.wait_to_retry(delay, probe.as_mut()) {
                Waited::Stopped => {
                    return self.outcome(StreamState::Ended, Some("stopped".into()));
                }
                // The server is back: should this attempt fail too (a camera still booting),
                // the next waits are short again.
                Waited::Returned => backoff_step = 0,
                Waited::Elapsed => {}
            }
        }
    }

    /// Waits `delay` before the next attempt, or less when `probe` sees the server return
    /// (probed once at the start, then every interval while it is down) or the run stops.
    fn wait_to_retry(&self, delay: Duration, mut probe: Option<&mut ReturnProbe>) -> Waited {
        let until = Instant::now() + delay;
        let mut next_probe = Some(Instant::now());
        loop {
            if self.stopping() {
                return Waited::Stopped;
            }
            let now = Instant::now();
            if now >= until {
                return Waited::Elapsed;
            }
            if let (Some(p), Some(at)) = (probe.as_deref_mut(), next_probe)
                && now >= at
            {
                match p.check() {
                    Seen::Returned => {
                        tracing::info!(
                            stream = %self.spec.name,
                            "{} accepts connections again: retrying now",
                            p.server()
                        );
                        return Waited::Returned;
                    }
                    // Up and not returning (e.g. it refuses the stream): the plain backoff.
                    Seen::Up => next_probe = None,
                    Seen::Down => next_probe = Some(at + p.interval),
                }
            }
            let wake = next_probe.map_or(until, |at| at.min(until));
            thread::sleep(POLL.min(wake.saturating_duration_since(Instant::now())));
        }
    }

    /// Watches one connection until it ends; enters Live when data flows.
    fn watch(
        &self,
        capture: &Capture,
        stages_ended: &dyn Fn() -> bool,
        attempt_started: Instant,
        ever_live: &mut bool,
    ) -> Ended {
        let live = self.source.is_live();
        let stall = self.spec.settings.stall_timeout;
        let counters = &self.targets.counters;
        let mut lost_at = self.metrics.state() != StreamState::Live;
        loop {
            if self.stopping() {
                return Ended::Stopped;
            }
            if stages_ended() {
                return Ended::StageStopped;
            }
            match capture.poll(Some(POLL)) {
                Some(Ok(())) if live => {
                    return Ended::Lost("the server ended the stream".into());
                }
                Some(Ok(())) => return Ended::EndOfStream,
                Some(Err(e)) => return Ended::Lost(e.to_string()),
                None => {}
            }
            let last = counters.last_buffer().filter(|t| *t >= attempt_started);
            if last.is_some() && lost_at {
                lost_at = false;
                let reason = if *ever_live {
                    self.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
                    Some(format!(
                        "reconnected {:.2} s after this attempt began",
                        attempt_started.elapsed().as_secs_f64()
                    ))
                } else {
                    None
                };
                *ever_live = true;
                self.enter(StreamState::Live, reason);
            }
            if live {
                let since = last.unwrap_or(attempt_started);
                if since.elapsed() > stall {
                    return Ended::Lost(format!(
                        "no data for {:.1} s (stall timeout)",
                        since.elapsed().as_secs_f64()
                    ));
                }
            }
        }
    }
}
