//! `affectstream worker`: claims cameras from the registry, runs each with the existing
//! supervisor and publishes its records and events to JetStream (feature `broker`).
//!
//! ```text
//!  main thread: waits                  affectstream-broker thread (tokio, current-thread)
//!  ┌──────────────────────────┐        ┌─────────────────────────────────────────────────┐
//!  │ camera thread per camera │ spawn  │ control loop (every 250 ms): watchers of the     │
//!  │  supervise + stages      │◀───────│ three buckets, heartbeat, claims, renewals,      │
//!  │  feed ─push─▶ Backlog ───┼───────▶│ fencing, fair share; publisher task ─▶ JetStream │
//!  └──────────────────────────┘        └─────────────────────────────────────────────────┘
//! ```
//!
//! Two connections: `control` (KV: leases, heartbeats, watchers) and `data` (publishes), so
//! renewals never queue behind a burst of records.

pub mod camera;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Entry, Operation, Store};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::broker::lease::{self, Cas, Decision, LeaseClock, LeaseValue, Peer, Timing};
use crate::broker::publish::{self, Backlog, CameraStatus, Feed, PublishCounters};
use crate::broker::registry::{self, CameraEntry};
use crate::broker::{self, BrokerOptions, Connection, ConnectionState, names};
use crate::pipeline::RunOptions;
use crate::record::StreamState;
use crate::sink::prometheus::{MetricsSection, Registry, escape, header};
use crate::sink::server::{Server, ServerConfig};
use crate::streams::StreamSpec;
use camera::CameraRun;

/// A failed camera is tried again after this long (or when its registry entry changes).
const FAILED_RETRY: Duration = Duration::from_secs(60);
/// After giving a camera back, the next one waits until it is taken or this long.
const RELEASE_COOLDOWN: Duration = Duration::from_secs(3);
/// After a watcher (re)starts, its bucket's picture is complete after this long.
const SETTLE: Duration = Duration::from_millis(400);
/// How long a stopping worker waits for its pipelines, then for its publish acks.
const DRAIN: Duration = Duration::from_secs(3);

/// Everything a worker needs.
pub struct WorkerOptions {
    /// The broker.
    pub broker: BrokerOptions,
    /// This worker's name (records' `worker`, lease holder).
    pub name: String,
    /// At most this many cameras.
    pub max_cameras: u32,
    /// Models and stage settings for every camera (`source`, `out`, `capture` ignored).
    pub run: RunOptions,
    /// The /metrics endpoint, when wanted.
    pub server: Option<ServerConfig>,
    /// Bound of the records backlog.
    pub record_backlog: usize,
    /// Bound of the events backlog.
    pub event_backlog: usize,
    /// Bound of the un-acked publishes.
    pub max_pending: usize,
    /// Set (by SIGTERM/SIGINT) to hand the cameras back and stop.
    pub stop: Arc<AtomicBool>,
}

/// Errors that end a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error("cannot start the broker thread: {0}")]
    Thread(String),
}

/// What a worker did, for its last log line.
#[derive(Debug, Clone, Default)]
pub struct WorkerSummary {
    /// Leases won.
    pub claims: u64,
    /// Cameras given back (rebalance, removal, shutdown).
    pub releases: u64,
    /// Leases lost (taken over, or fenced for want of renewals).
    pub lease_losses: u64,
    /// Messages the server stored.
    pub acked: u64,
    /// Re-sends it had already stored.
    pub duplicates: u64,
    /// Records dropped from the full backlog.
    pub dropped_records: u64,
    /// Messages still unpublished at exit.
    pub unpublished: u64,
}

/// The worker's own counters, rendered into /metrics.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Cameras held now.
    pub held: AtomicU64,
    /// Leases won.
    pub claims: AtomicU64,
    /// Claims another worker won first.
    pub claim_conflicts: AtomicU64,
    /// Successful renewals.
    pub renewals: AtomicU64,
    /// Renewals without an answer.
    pub renewal_failures: AtomicU64,
    /// Leases lost (taken over, or fenced for want of renewals).
    pub lease_losses: AtomicU64,
    /// Cameras given back.
    pub releases: AtomicU64,
    publish: Mutex<Option<(Arc<PublishCounters>, Arc<Backlog>)>>,
    connections: Mutex<Vec<(&'static str, Arc<ConnectionState>)>>,
}

impl MetricsSection for WorkerCounters {
    fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, kind, help, v) in [
            (
                "worker_cameras_held",
                "gauge",
                "Cameras this worker holds a lease on.",
                &self.held,
            ),
            (
                "worker_claims_total",
                "counter",
                "Leases won.",
                &self.claims,
            ),
            (
                "worker_claim_conflicts_total",
                "counter",
                "Claims another worker won first.",
                &self.claim_conflicts,
            ),
            (
                "worker_renewals_total",
                "counter",
                "Successful lease renewals.",
                &self.renewals,
            ),
            (
                "worker_renewal_failures_total",
                "counter",
                "Lease renewals without an answer.",
                &self.renewal_failures,
            ),
            (
                "worker_lease_losses_total",
                "counter",
                "Leases lost: taken over, or fenced for want of renewals.",
                &self.lease_losses,
            ),
            (
                "worker_releases_total",
                "counter",
                "Cameras given back (rebalance, removal, shutdown).",
                &self.releases,
            ),
        ] {
            header(out, name, kind, help);
            let _ = writeln!(out, "affectstream_{name} {}", load(v));
        }
        if let Ok(guard) = self.publish.lock()
            && let Some((c, backlog)) = guard.as_ref()
        {
            header(
                out,
                "broker_publishes_pending",
                "gauge",
                "Messages waiting or un-acked.",
            );
            let _ = writeln!(
                out,
                "affectstream_broker_publishes_pending {}",
                backlog.pending()
            );
            for (name, help, v) in [
                (
                    "broker_publishes_in_flight",
                    "Published, not yet acknowledged.",
                    &c.in_flight,
                ),
                (
                    "broker_backlog_peak",
                    "Largest backlog so far.",
                    &c.backlog_peak,
                ),
            ] {
                header(out, name, "gauge", help);
                let _ = writeln!(out, "affectstream_{name} {}", load(v));
            }
            for (name, help, v) in [
                (
                    "broker_publishes_acked_total",
                    "Messages the server stored.",
                    &c.acked,
                ),
                (
                    "broker_publishes_duplicate_total",
                    "Re-sends the server had already stored.",
                    &c.duplicates,
                ),
                (
                    "broker_publishes_failed_total",
                    "Publish attempts without an ack (re-sent).",
                    &c.failed,
                ),
                (
                    "broker_records_dropped_total",
                    "Records dropped because the backlog was full.",
                    &c.dropped_records,
                ),
                (
                    "broker_events_dropped_total",
                    "Events dropped because the events backlog was full.",
                    &c.dropped_events,
                ),
                (
                    "broker_records_fenced_total",
                    "Records not published because their lease had run out.",
                    &c.fenced,
                ),
            ] {
                header(out, name, "counter", help);
                let _ = writeln!(out, "affectstream_{name} {}", load(v));
            }
        }
        header(
            out,
            "broker_connection_state",
            "gauge",
            "1 for the state each broker connection is in, 0 for the others.",
        );
        if let Ok(list) = self.connections.lock() {
            for (purpose, state) in list.iter() {
                let now = state.get();
                for v in [
                    ConnectionState::PENDING,
                    ConnectionState::CONNECTED,
                    ConnectionState::DISCONNECTED,
                ] {
                    let _ = writeln!(
                        out,
                        "affectstream_broker_connection_state{{connection=\"{}\",state=\"{}\"}} {}",
                        escape(purpose),
                        ConnectionState::name(v),
                        u8::from(v == now)
                    );
                }
            }
        }
    }
}

/// A worker heartbeat (KV `affect_workers`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// `--max-cameras`.
    pub max_cameras: u32,
    /// Cameras held.
    pub held: u32,
    /// The /metrics address, when served.
    #[serde(default)]
    pub metrics: Option<String>,
}

/// Runs a worker until `opts.stop` is set; then hands its cameras back.
pub fn run_worker(
    opts: WorkerOptions,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<WorkerSummary, WorkerError> {
    opts.broker.validate()?;
    names::check_name("worker", &opts.name).map_err(broker::BrokerError::Options)?;
    let registry = Arc::new(Registry::default());
    let counters = Arc::new(WorkerCounters::default());
    registry.add_section(counters.clone());
    let server = opts
        .server
        .clone()
        .map(|config| Server::start(config, registry.clone()))
        .transpose()?;
    let listen = server.as_ref().map(|s| s.addr);
    if let Some(addr) = listen {
        on_listen(addr);
    }
    let thread = std::thread::Builder::new()
        .name("affectstream-broker".into())
        .spawn(move || -> Result<WorkerSummary, WorkerError> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| WorkerError::Thread(e.to_string()))?;
            let control = Control::new(opts, registry, counters, listen);
            Ok(runtime.block_on(control.run()))
        })
        .map_err(|e| WorkerError::Thread(e.to_string()))?;
    let summary = thread
        .join()
        .map_err(|_| WorkerError::Thread("the broker thread stopped unexpectedly".into()))?;
    drop(server);
    summary
}

/// Which bucket a watcher follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bucket {
    Cameras,
    Leases,
    Workers,
}

/// What the watchers tell the control loop.
enum Watched {
    /// The watcher (re)started: forget this bucket's picture, it is replayed.
    Reset(Bucket),
    /// A key's latest value (or its deletion).
    Entry(Bucket, Box<Entry>),
}

/// A key as last seen: its value (None when deleted), revision, and when it was seen here.
#[derive(Debug, Clone)]
struct Seen<V> {
    value: Option<V>,
    revision: u64,
    at: Instant,
}

/// What the control loop hears back from its spawned requests.
enum Reply {
    Claim {
        camera: String,
        sent: Instant,
        result: Cas,
    },
    Renew {
        camera: String,
        claim_rev: u64,
        sent: Instant,
        result: Cas,
    },
    Heartbeat(Result<(), String>),
}

/// Where a held camera is.
enum Phase {
    /// Its pipeline runs (or starts).
    Running(CameraRun),
    /// It failed; tried again at `retry_at`.
    Failed { retry_at: Instant },
    /// Stopping (nothing to stop when `run` is None); then give the lease back (`release`)
    /// or just forget it (lost).
    Stopping {
        run: Option<CameraRun>,
        release: bool,
    },
}

/// A camera this worker holds a lease on.
struct Held {
    entry: CameraEntry,
    entry_rev: u64,
    claim_rev: u64,
    rev: u64,
    clock: Arc<LeaseClock>,
    claimed_at: Instant,
    last_sent: Instant,
    renewing: bool,
    written: Option<(String, Option<String>)>,
    status: CameraStatus,
    phase: Phase,
}

impl Held {
    /// Asks its pipeline (if any) to stop and enters `Stopping`; then the lease is given back
    /// (`release`) or just forgotten (lost).
    fn stop(&mut self, release: bool) {
        let phase = std::mem::replace(
            &mut self.phase,
            Phase::Failed {
                retry_at: Instant::now(),
            },
        );
        let run = match phase {
            Phase::Running(run) => Some(run),
            Phase::Stopping { run, .. } => run,
            Phase::Failed { .. } => None,
        };
        if let Some(run) = &run {
            run.stop();
        }
        self.phase = Phase::Stopping { run, release };
    }
}

struct Control {
    opts: WorkerOptions,
    registry: Arc<Registry>,
    counters: Arc<WorkerCounters>,
    listen: Option<SocketAddr>,
    cameras: BTreeMap<String, Seen<CameraEntry>>,
    leases: HashMap<String, Seen<LeaseValue>>,
    workers: HashMap<String, Seen<Heartbeat>>,
    settled: HashMap<Bucket, Instant>,
    held: BTreeMap<String, Held>,
    claiming: Vec<String>,
    last_release: Option<(Instant, String)>,
    heartbeat_sent: Option<Instant>,
    heartbeat_in_flight: bool,
    renew_failing: bool,
    /// Random per process, written into every lease value.
    instance: String,
    /// The control connection's state: no claims while it is down (the client would deliver
    /// them late, after their reply timed out).
    control_state: Option<Arc<ConnectionState>>,
}

/// Decodes a JSON value of a KV entry (None for deletions and unreadable values).
fn decode<V: for<'de> Deserialize<'de>>(entry: &Entry) -> Option<V> {
    match entry.operation {
        Operation::Put => serde_json::from_slice(&entry.value).ok(),
        _ => None,
    }
}

impl Control {
    fn new(
        opts: WorkerOptions,
        registry: Arc<Registry>,
        counters: Arc<WorkerCounters>,
        listen: Option<SocketAddr>,
    ) -> Self {
        Self {
            opts,
            registry,
            counters,
            listen,
            cameras: BTreeMap::new(),
            leases: HashMap::new(),
            workers: HashMap::new(),
            settled: HashMap::new(),
            held: BTreeMap::new(),
            claiming: Vec::new(),
            last_release: None,
            heartbeat_sent: None,
            heartbeat_in_flight: false,
            renew_failing: false,
            instance: format!(
                "{:016x}",
                (crate::streams::backoff::Jitter::new(u64::from(std::process::id())).next_unit()
                    * (u64::MAX as f64)) as u64
            ),
            control_state: None,
        }
    }

    fn stopping(&self) -> bool {
        self.opts.stop.load(Ordering::SeqCst)
    }

    /// Connects, retrying with backoff (logged once per change of reason) until `stop`.
    async fn connect(&self, purpose: &'static str) -> Option<Connection> {
        let mut delay = Duration::from_millis(250);
        let mut last_reason = String::new();
        let mut jitter = crate::streams::backoff::Jitter::new(u64::from(std::process::id()));
        loop {
            if self.stopping() {
                return None;
            }
            match broker::connect(&self.opts.broker, &self.opts.name, purpose).await {
                Ok(c) => {
                    tracing::info!(
                        connection = purpose,
                        "connected to the NATS server at {}",
                        self.opts.broker.display_url()
                    );
                    return Some(c);
                }
                Err(e) => {
                    let reason = e.to_string();
                    if reason != last_reason {
                        tracing::warn!(connection = purpose, "{reason}; retrying with backoff");
                        last_reason = reason;
                    }
                }
            }
            let wait = delay.mul_f64(0.5 + jitter.next_unit() / 2.0);
            self.sleep_unless_stopped(wait).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn sleep_unless_stopped(&self, total: Duration) {
        let until = Instant::now() + total;
        while Instant::now() < until && !self.stopping() {
            tokio::time::sleep(Duration::from_millis(50).min(until - Instant::now())).await;
        }
    }

    async fn run(mut self) -> WorkerSummary {
        let Some(control) = self.connect("control").await else {
            return WorkerSummary::default();
        };
        let Some(data) = self.connect("data").await else {
            return WorkerSummary::default();
        };
        self.control_state = Some(control.state.clone());
        if let Ok(mut list) = self.counters.connections.lock() {
            list.push(("control", control.state.clone()));
            list.push(("data", data.state.clone()));
        }
        let mut failing = String::new();
        let layout = loop {
            match broker::ensure_layout(&control.js).await {
                Ok(layout) => break layout,
                Err(e) => {
                    let e = self.opts.broker.scrub(&e);
                    if e != failing {
                        tracing::warn!("{e}; retrying");
                        failing = e;
                    }
                }
            }
            self.sleep_unless_stopped(Duration::from_secs(1)).await;
            if self.stopping() {
                return WorkerSummary::default();
            }
        };
        let timing = Timing::for_ttl(layout.lease_ttl);
        tracing::info!(
            worker = %self.opts.name,
            max_cameras = self.opts.max_cameras,
            "worker ready (lease TTL {:.1} s, renew every {:.1} s, fence after {:.1} s)",
            timing.ttl.as_secs_f64(),
            timing.renew.as_secs_f64(),
            timing.fence.as_secs_f64()
        );
        let backlog = Backlog::new(self.opts.record_backlog, self.opts.event_backlog);
        if let Ok(mut p) = self.counters.publish.lock() {
            *p = Some((backlog.counters.clone(), backlog.clone()));
        }
        let publisher = tokio::spawn(publish::run_publisher(
            data.js.clone(),
            backlog.clone(),
            self.opts.max_pending,
        ));
        let (watch_tx, mut watch_rx) = mpsc::channel::<Watched>(1024);
        let mut watchers = Vec::new();
        for (bucket, store) in [
            (Bucket::Cameras, layout.cameras.clone()),
            (Bucket::Leases, layout.leases.clone()),
            (Bucket::Workers, layout.workers.clone()),
        ] {
            watchers.push(tokio::spawn(watch_bucket(bucket, store, watch_tx.clone())));
        }
        let (reply_tx, mut reply_rx) = mpsc::channel::<Reply>(1024);
        let mut tick = tokio::time::interval(timing.scan);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.stopping() {
            tokio::select! {
                Some(w) = watch_rx.recv() => self.on_watched(w),
                Some(r) = reply_rx.recv() => self.on_reply(r, &timing, &backlog),
                _ = tick.tick() => self.on_tick(&layout, &timing, &backlog, &reply_tx),
            }
        }
        tracing::info!(worker = %self.opts.name, cameras = self.held.len(), "stopping: handing the cameras back");
        let summary = self.shutdown(&layout, &backlog).await;
        backlog.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), publisher).await;
        for w in watchers {
            w.abort();
        }
        summary
    }

    fn on_watched(&mut self, w: Watched) {
        let now = Instant::now();
        match w {
            Watched::Reset(bucket) => {
                match bucket {
                    Bucket::Cameras => self.cameras.clear(),
                    Bucket::Leases => self.leases.clear(),
                    Bucket::Workers => self.workers.clear(),
                }
                self.settled.insert(bucket, now + SETTLE);
            }
            Watched::Entry(bucket, entry) => {
                let key = entry.key.clone();
                let revision = entry.revision;
                match bucket {
                    Bucket::Cameras => {
                        let value = decode::<CameraEntry>(&entry);
                        self.cameras.insert(
                            key,
                            Seen {
                                value,
                                revision,
                                at: now,
                            },
                        );
                    }
                    Bucket::Leases => {
                        let value = decode::<LeaseValue>(&entry);
                        self.leases.insert(
                            key,
                            Seen {
                                value,
                                revision,
                                at: now,
                            },
                        );
                    }
                    Bucket::Workers => {
                        let value = decode::<Heartbeat>(&entry);
                        self.workers.insert(
                            key,
                            Seen {
                                value,
                                revision,
                                at: now,
                            },
                        );
                    }
                }
            }
        }
    }

    fn on_reply(&mut self, reply: Reply, timing: &Timing, backlog: &Arc<Backlog>) {
        match reply {
            Reply::Heartbeat(result) => {
                self.heartbeat_in_flight = false;
                if let Err(e) = result {
                    tracing::debug!("heartbeat failed: {e}");
                }
            }
            Reply::Claim {
                camera,
                sent,
                result,
            } => {
                self.claiming.retain(|c| *c != camera);
                match result {
                    Cas::Won(rev) => self.claimed(camera, rev, sent, timing, backlog),
                    Cas::Lost => {
                        self.counters
                            .claim_conflicts
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Cas::Failed(e) => tracing::debug!(camera = %camera, "claim failed: {e}"),
                }
            }
            Reply::Renew {
                camera,
                claim_rev,
                sent,
                result,
            } => {
                let Some(held) = self.held.get_mut(&camera) else {
                    return;
                };
                if held.claim_rev != claim_rev {
                    return;
                }
                held.renewing = false;
                match result {
                    Cas::Won(rev) => {
                        held.rev = rev;
                        held.clock.extend(sent + timing.fence);
                        self.counters.renewals.fetch_add(1, Ordering::Relaxed);
                        if self.renew_failing {
                            self.renew_failing = false;
                            tracing::info!("renewing leases again");
                        }
                    }
                    Cas::Lost => {
                        tracing::warn!(camera = %camera, "lease lost: another worker holds it now; stopping the camera");
                        self.counters.lease_losses.fetch_add(1, Ordering::Relaxed);
                        self.lose(&camera);
                    }
                    Cas::Failed(e) => {
                        self.counters
                            .renewal_failures
                            .fetch_add(1, Ordering::Relaxed);
                        held.written = None;
                        if !self.renew_failing {
                            self.renew_failing = true;
                            tracing::warn!(
                                "cannot renew leases ({}); cameras keep running for up to {:.1} s after their last renewal",
                                self.opts.broker.scrub(&e),
                                timing.fence.as_secs_f64()
                            );
                        }
                    }
                }
            }
        }
    }

    /// A claim was won: start the camera.
    fn claimed(
        &mut self,
        camera: String,
        rev: u64,
        sent: Instant,
        timing: &Timing,
        backlog: &Arc<Backlog>,
    ) {
        if self.held.contains_key(&camera) {
            return;
        }
        let registered = self
            .cameras
            .get(&camera)
            .and_then(|s| s.value.clone().map(|v| (v, s.revision)));
        self.counters.claims.fetch_add(1, Ordering::Relaxed);
        let Some((entry, entry_rev)) = registered else {
            // Removed from the registry meanwhile: give the lease straight back (next tick).
            self.held.insert(
                camera,
                Held {
                    entry: CameraEntry {
                        url: String::new(),
                        options: BTreeMap::new(),
                        added_ms: 0,
                    },
                    entry_rev: 0,
                    claim_rev: rev,
                    rev,
                    clock: Arc::new(LeaseClock::new(sent)),
                    claimed_at: Instant::now(),
                    last_sent: sent,
                    renewing: false,
                    written: None,
                    status: CameraStatus {
                        state: StreamState::Ended,
                        reason: None,
                    },
                    phase: Phase::Stopping {
                        run: None,
                        release: true,
                    },
                },
            );
            return;
        };
        tracing::info!(camera = %camera, lease_rev = rev, "claimed");
        let clock = Arc::new(LeaseClock::new(sent + timing.fence));
        let mut held = Held {
            entry,
            entry_rev,
            claim_rev: rev,
            rev,
            clock,
            claimed_at: Instant::now(),
            last_sent: sent,
            renewing: false,
            written: Some(("connecting".into(), None)),
            status: CameraStatus {
                state: StreamState::Connecting,
                reason: None,
            },
            phase: Phase::Failed {
                retry_at: Instant::now(),
            },
        };
        held.phase = self.start(&camera, &held, backlog);
        self.held.insert(camera, held);
        self.counters
            .held
            .store(self.held.len() as u64, Ordering::Relaxed);
    }

    /// Starts a held camera's pipeline.
    fn start(&self, camera: &str, held: &Held, backlog: &Arc<Backlog>) -> Phase {
        let settings = match registry::settings(&held.entry.options) {
            Ok(s) => s,
            Err(reason) => {
                tracing::error!(camera = %camera, "failed: {reason}");
                return Phase::Failed {
                    retry_at: Instant::now() + FAILED_RETRY,
                };
            }
        };
        let spec = StreamSpec {
            name: camera.to_owned(),
            source: held.entry.url.clone(),
            settings,
        };
        let feed = Feed {
            camera: camera.to_owned(),
            worker: self.opts.name.clone(),
            lease_rev: held.claim_rev,
            clock: held.clock.clone(),
            backlog: backlog.clone(),
            metrics: None,
            status: Arc::new(Mutex::new(held.status.clone())),
        };
        match CameraRun::start(spec, self.opts.run.clone(), feed) {
            Ok(run) => {
                self.registry.remove_stream(camera);
                self.registry.add_stream(run.metrics.clone());
                Phase::Running(run)
            }
            Err(reason) => {
                tracing::error!(camera = %camera, "failed: {reason}");
                Phase::Failed {
                    retry_at: Instant::now() + FAILED_RETRY,
                }
            }
        }
    }

    /// The lease is not ours any more: publish nothing more, stop the pipeline, forget it.
    fn lose(&mut self, camera: &str) {
        let Some(held) = self.held.get_mut(camera) else {
            return;
        };
        held.clock.lose();
        held.stop(false);
    }

    /// Stops a camera and gives its lease back once it has stopped.
    fn release(&mut self, camera: &str, why: &str) {
        let Some(held) = self.held.get_mut(camera) else {
            return;
        };
        tracing::info!(camera = %camera, "giving the camera back: {why}");
        self.counters.releases.fetch_add(1, Ordering::Relaxed);
        held.stop(true);
    }

    fn on_tick(
        &mut self,
        layout: &broker::Layout,
        timing: &Timing,
        backlog: &Arc<Backlog>,
        replies: &mpsc::Sender<Reply>,
    ) {
        let now = Instant::now();
        self.heartbeat(&layout.workers, timing, replies);
        self.reap(&layout.leases);
        // Fencing: no successful renew for `fence`.
        let fenced: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| !h.clock.valid() && !matches!(h.phase, Phase::Stopping { .. }))
            .map(|(c, _)| c.clone())
            .collect();
        for camera in fenced {
            tracing::warn!(
                camera = %camera,
                "no lease renewal for {:.1} s: stopping the camera before its lease can pass to another worker",
                timing.fence.as_secs_f64()
            );
            self.counters.lease_losses.fetch_add(1, Ordering::Relaxed);
            self.lose(&camera);
        }
        // Cameras removed from the registry, or whose entry changed.
        let cameras_settled = self.is_settled(Bucket::Cameras, now);
        if cameras_settled {
            let gone: Vec<(String, bool)> = self
                .held
                .iter()
                .filter(|(_, h)| !matches!(h.phase, Phase::Stopping { .. }))
                .filter_map(|(c, h)| match self.cameras.get(c) {
                    Some(Seen {
                        value: Some(_),
                        revision,
                        ..
                    }) if *revision == h.entry_rev => None,
                    Some(Seen { value: Some(_), .. }) => Some((c.clone(), true)),
                    _ => Some((c.clone(), false)),
                })
                .collect();
            for (camera, changed) in gone {
                self.release(
                    &camera,
                    if changed {
                        "its registry entry changed"
                    } else {
                        "removed from the registry"
                    },
                );
            }
        }
        // Failed cameras are tried again after a while.
        let retry: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| matches!(h.phase, Phase::Failed { retry_at } if retry_at <= now))
            .map(|(c, _)| c.clone())
            .collect();
        for camera in retry {
            if let Some(held) = self.held.get(&camera) {
                tracing::info!(camera = %camera, "trying the failed camera again");
                let phase = self.start(&camera, held, backlog);
                if let Some(held) = self.held.get_mut(&camera) {
                    held.phase = phase;
                }
            }
        }
        self.renew(&layout.leases, timing, replies);
        let connected = self
            .control_state
            .as_ref()
            .is_some_and(|s| s.get() == ConnectionState::CONNECTED);
        if connected
            && [Bucket::Cameras, Bucket::Leases, Bucket::Workers]
                .iter()
                .all(|b| self.is_settled(*b, now))
        {
            self.balance(&layout.leases, timing, backlog, replies);
        }
        self.counters
            .held
            .store(self.held.len() as u64, Ordering::Relaxed);
    }

    fn is_settled(&self, bucket: Bucket, now: Instant) -> bool {
        self.settled.get(&bucket).is_some_and(|at| now >= *at)
    }

    fn heartbeat(&mut self, store: &Store, timing: &Timing, replies: &mpsc::Sender<Reply>) {
        if self.heartbeat_in_flight
            || self
                .heartbeat_sent
                .is_some_and(|at| at.elapsed() < timing.renew)
        {
            return;
        }
        self.heartbeat_in_flight = true;
        self.heartbeat_sent = Some(Instant::now());
        let value = Heartbeat {
            max_cameras: self.opts.max_cameras,
            held: self.held.len() as u32,
            metrics: self.listen.map(|a| a.to_string()),
        };
        let bytes = bytes::Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        let store = store.clone();
        let name = self.opts.name.clone();
        let replies = replies.clone();
        tokio::spawn(async move {
            let result = store
                .put(name, bytes)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            replies.send(Reply::Heartbeat(result)).await.ok();
        });
    }

    /// Joins cameras whose pipeline ended: stopped ones give their lease back (or are
    /// forgotten), failed ones wait for their retry.
    fn reap(&mut self, leases: &Store) {
        let done: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| match &h.phase {
                Phase::Running(run) => run.is_finished(),
                Phase::Stopping { run, .. } => run.as_ref().is_none_or(CameraRun::is_finished),
                Phase::Failed { .. } => false,
            })
            .map(|(c, _)| c.clone())
            .collect();
        for camera in done {
            let Some(mut held) = self.held.remove(&camera) else {
                continue;
            };
            let phase = std::mem::replace(
                &mut held.phase,
                Phase::Failed {
                    retry_at: Instant::now(),
                },
            );
            match phase {
                Phase::Stopping { run, release } => {
                    if let Some(run) = run {
                        run.join();
                    }
                    self.registry.remove_stream(&camera);
                    if release {
                        let store = leases.clone();
                        let (key, rev) = (camera.clone(), held.rev);
                        let (me, instance) = (self.opts.name.clone(), self.instance.clone());
                        tokio::spawn(async move {
                            if let Err(e) = lease::release(&store, &key, rev, &me, &instance).await
                            {
                                tracing::debug!(camera = %key, "release failed (the lease expires instead): {e}");
                            }
                        });
                        self.last_release = Some((Instant::now(), camera));
                    }
                }
                Phase::Running(run) => {
                    let outcome = run.join();
                    let reason = outcome
                        .reason
                        .clone()
                        .unwrap_or_else(|| "the stream ended".into());
                    tracing::error!(camera = %camera, "failed: {reason}; trying again in {:.0} s", FAILED_RETRY.as_secs_f64());
                    held.status = CameraStatus {
                        state: StreamState::Failed,
                        reason: Some(reason),
                    };
                    held.phase = Phase::Failed {
                        retry_at: Instant::now() + FAILED_RETRY,
                    };
                    self.held.insert(camera, held);
                }
                Phase::Failed { .. } => {
                    self.held.insert(camera, held);
                }
            }
        }
    }

    /// Renews every lease that is due (or whose state changed), one request each, concurrently.
    fn renew(&mut self, leases: &Store, timing: &Timing, replies: &mpsc::Sender<Reply>) {
        let now = Instant::now();
        for (camera, held) in self.held.iter_mut() {
            if held.renewing || matches!(held.phase, Phase::Stopping { release: false, .. }) {
                continue;
            }
            if let Phase::Running(run) = &held.phase
                && let Ok(status) = run.status.lock()
            {
                held.status = status.clone();
            }
            let state = (
                held.status.state.name().to_owned(),
                held.status.reason.clone(),
            );
            let due = now.duration_since(held.last_sent) >= timing.renew;
            if !due && held.written.as_ref() == Some(&state) {
                continue;
            }
            held.renewing = true;
            held.last_sent = now;
            held.written = Some(state.clone());
            let value = LeaseValue {
                worker: self.opts.name.clone(),
                state: state.0,
                reason: state.1.map(|r| crate::capture::redact_url(&r).text),
                lease_rev: Some(held.claim_rev),
                instance: Some(self.instance.clone()),
            }
            .to_bytes();
            let store = leases.clone();
            let (key, expected, claim_rev) = (camera.clone(), held.rev, held.claim_rev);
            let replies = replies.clone();
            let me = self.opts.name.clone();
            let instance = self.instance.clone();
            tokio::spawn(async move {
                let result =
                    lease::renew(&store, &key, value, expected, &me, &instance, claim_rev).await;
                replies
                    .send(Reply::Renew {
                        camera: key,
                        claim_rev,
                        sent: now,
                        result,
                    })
                    .await
                    .ok();
            });
        }
    }

    /// The fair-share rule: claims free cameras or gives one back.
    fn balance(
        &mut self,
        leases: &Store,
        timing: &Timing,
        backlog: &Arc<Backlog>,
        replies: &mpsc::Sender<Reply>,
    ) {
        let now = Instant::now();
        let me = self.opts.name.clone();
        let stale = timing.ttl + timing.renew;
        // Our own claims whose reply never came (stored after the request timed out) are ours.
        let orphans: Vec<(String, u64, Instant)> = self
            .leases
            .iter()
            .filter(|(c, seen)| {
                !self.held.contains_key(*c)
                    && !self.claiming.contains(c)
                    && now.duration_since(seen.at) < stale
                    && seen
                        .value
                        .as_ref()
                        .is_some_and(|v| v.is_claim_of(&me, &self.instance))
            })
            .map(|(c, seen)| (c.clone(), seen.revision, seen.at))
            .collect();
        for (camera, revision, at) in orphans {
            tracing::debug!(camera = %camera, "a claim of ours was stored after its reply timed out");
            self.claimed(camera, revision, at, timing, backlog);
        }
        let cameras: Vec<String> = self
            .cameras
            .iter()
            .filter(|(_, s)| s.value.is_some())
            .map(|(c, _)| c.clone())
            .collect();
        let mut holders: HashMap<String, String> = HashMap::new();
        for (camera, seen) in &self.leases {
            if let Some(v) = &seen.value
                && now.duration_since(seen.at) < stale
                && !self.held.contains_key(camera)
            {
                // A lease under our name we do not hold is an earlier process's: not ours.
                let holder = if v.worker == me {
                    format!("{me} (earlier)")
                } else {
                    v.worker.clone()
                };
                holders.insert(camera.clone(), holder);
            }
        }
        for camera in &self.claiming {
            holders.insert(camera.clone(), me.clone());
        }
        let live = timing.ttl / 2;
        let mut peers: Vec<Peer> = self
            .workers
            .iter()
            .filter(|(name, s)| {
                **name != me && s.value.is_some() && now.duration_since(s.at) < live
            })
            .filter_map(|(name, s)| {
                s.value.as_ref().map(|hb| Peer {
                    name: name.clone(),
                    max_cameras: hb.max_cameras,
                })
            })
            .collect();
        peers.push(Peer {
            name: me.clone(),
            max_cameras: self.opts.max_cameras,
        });
        let mut mine: Vec<(&Instant, String)> = self
            .held
            .iter()
            .filter(|(_, h)| !matches!(h.phase, Phase::Stopping { .. }))
            .map(|(c, h)| (&h.claimed_at, c.clone()))
            .collect();
        mine.sort();
        let mine: Vec<String> = mine.into_iter().map(|(_, c)| c).collect();
        let mut mine_and_claiming = mine.clone();
        mine_and_claiming.extend(self.claiming.iter().cloned());
        match lease::decide(&me, &mine_and_claiming, &cameras, &holders, &peers) {
            Decision::Claim(list) => {
                for camera in list {
                    if self.claiming.contains(&camera) || self.held.contains_key(&camera) {
                        continue;
                    }
                    let expected = match self.leases.get(&camera) {
                        Some(Seen {
                            value: None,
                            revision,
                            ..
                        }) => *revision,
                        _ => 0,
                    };
                    self.claiming.push(camera.clone());
                    let value = LeaseValue {
                        worker: me.clone(),
                        state: "connecting".into(),
                        reason: None,
                        lease_rev: None,
                        instance: Some(self.instance.clone()),
                    }
                    .to_bytes();
                    let store = leases.clone();
                    let replies = replies.clone();
                    let (me, instance) = (me.clone(), self.instance.clone());
                    tokio::spawn(async move {
                        let sent = Instant::now();
                        let result =
                            lease::claim(&store, &camera, value, expected, &me, &instance).await;
                        replies
                            .send(Reply::Claim {
                                camera,
                                sent,
                                result,
                            })
                            .await
                            .ok();
                    });
                }
            }
            Decision::Release(camera) => {
                let cooling = self.last_release.as_ref().is_some_and(|(at, c)| {
                    at.elapsed() < RELEASE_COOLDOWN && !holders.contains_key(c)
                });
                let releasing = self
                    .held
                    .values()
                    .any(|h| matches!(h.phase, Phase::Stopping { release: true, .. }));
                if !cooling && !releasing {
                    self.release(&camera, "rebalancing to a less loaded worker");
                }
            }
            Decision::Hold => {}
        }
    }

    /// Stops every pipeline, waits for the publish acks, gives the leases back.
    async fn shutdown(&mut self, layout: &broker::Layout, backlog: &Arc<Backlog>) -> WorkerSummary {
        fn run_of(h: &Held) -> Option<&CameraRun> {
            match &h.phase {
                Phase::Running(run) | Phase::Stopping { run: Some(run), .. } => Some(run),
                _ => None,
            }
        }
        for run in self.held.values().filter_map(run_of) {
            run.stop();
        }
        let until = Instant::now() + DRAIN;
        while Instant::now() < until
            && self
                .held
                .values()
                .filter_map(run_of)
                .any(|r| !r.is_finished())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let until = Instant::now() + DRAIN;
        while Instant::now() < until && backlog.pending() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut releases = Vec::new();
        for (camera, held) in std::mem::take(&mut self.held) {
            if let Phase::Running(run) | Phase::Stopping { run: Some(run), .. } = held.phase
                && run.is_finished()
            {
                run.join();
            }
            if held.clock.valid() || !matches!(held.status.state, StreamState::Failed) {
                let store = layout.leases.clone();
                let (me, instance) = (self.opts.name.clone(), self.instance.clone());
                releases.push(async move {
                    lease::release(&store, &camera, held.rev, &me, &instance).await
                });
                self.counters.releases.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            futures_util::future::join_all(releases),
        )
        .await;
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            layout.workers.delete(self.opts.name.as_str()),
        )
        .await;
        let c = &backlog.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerSummary {
            claims: load(&self.counters.claims),
            releases: load(&self.counters.releases),
            lease_losses: load(&self.counters.lease_losses),
            acked: load(&c.acked),
            duplicates: load(&c.duplicates),
            dropped_records: load(&c.dropped_records),
            unpublished: backlog.pending() as u64,
        }
    }
}

/// Follows one bucket (current values, then changes), restarting after any error.
async fn watch_bucket(bucket: Bucket, store: Store, tx: mpsc::Sender<Watched>) {
    let mut failing = false;
    loop {
        match store.watch_with_history(">").await {
            Ok(mut watch) => {
                if failing {
                    failing = false;
                    tracing::debug!(?bucket, "watching again");
                }
                if tx.send(Watched::Reset(bucket)).await.is_err() {
                    return;
                }
                while let Some(item) = watch.next().await {
                    match item {
                        Ok(entry) => {
                            if tx
                                .send(Watched::Entry(bucket, Box::new(entry)))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(?bucket, "watch ended: {e}");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                if !failing {
                    failing = true;
                    tracing::debug!(?bucket, "cannot watch: {e}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
