//! From the pipeline to JetStream without ever waiting on the network.
//!
//! ```text
//!  fusion ══records(8)══▶ feed (per camera: fence check, seq, envelope, message id)
//!                           │ push (a mutex, never the network)
//!                           ▼
//!                        Backlog: events (kept first) | records (oldest dropped when full, counted)
//!                           │ pop, at most `max_pending` un-acked
//!                           ▼
//!                        publisher task (broker runtime) ─ publish + ack ─▶ JetStream
//!                           └─ no ack: back to the front of the backlog, re-sent with the same
//!                              message id (the server drops the duplicate)
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use crossbeam_channel::Receiver;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;

use super::lease::LeaseClock;
use super::names;
use crate::record::{ConflictEventRecord, Record, StatusRecord, StreamState};
use crate::sink::prometheus::StreamMetrics;

/// Default bound of the records backlog (messages).
pub const RECORD_BACKLOG: usize = 8192;
/// Default bound of the events backlog (messages).
pub const EVENT_BACKLOG: usize = 8192;
/// Default bound of the un-acked publishes.
pub const MAX_PENDING: usize = 256;

/// What kind of message: records go first when the backlog is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A per-frame record.
    Record,
    /// A conflict event or a state change.
    Event,
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Subject.
    pub subject: String,
    /// `Nats-Msg-Id`.
    pub id: String,
    /// JSON payload.
    pub payload: Bytes,
}

/// Counters of the publish path (for /metrics and the bench).
#[derive(Debug, Default)]
pub struct PublishCounters {
    /// Messages handed to the backlog.
    pub queued: AtomicU64,
    /// Messages the server acknowledged as stored.
    pub acked: AtomicU64,
    /// Re-sends the server acknowledged as duplicates (already stored).
    pub duplicates: AtomicU64,
    /// Publish attempts that got no ack (re-sent).
    pub failed: AtomicU64,
    /// Records dropped because the backlog was full.
    pub dropped_records: AtomicU64,
    /// Events dropped because the events backlog was full.
    pub dropped_events: AtomicU64,
    /// Records not published because the camera's lease had run out (fenced).
    pub fenced: AtomicU64,
    /// Published, not yet acknowledged.
    pub in_flight: AtomicU64,
    /// The backlog's high-water mark.
    pub backlog_peak: AtomicU64,
}

#[derive(Debug, Default)]
struct Queues {
    records: VecDeque<Outgoing>,
    events: VecDeque<Outgoing>,
}

/// The bounded backlog between the pipeline threads and the publisher task.
#[derive(Debug)]
pub struct Backlog {
    queues: Mutex<Queues>,
    notify: tokio::sync::Notify,
    record_cap: usize,
    event_cap: usize,
    /// The counters.
    pub counters: Arc<PublishCounters>,
    closed: AtomicBool,
}

impl Backlog {
    /// A backlog of at most `record_cap` records and `event_cap` events.
    pub fn new(record_cap: usize, event_cap: usize) -> Arc<Self> {
        Arc::new(Self {
            queues: Mutex::default(),
            notify: tokio::sync::Notify::new(),
            record_cap: record_cap.max(1),
            event_cap: event_cap.max(1),
            counters: Arc::default(),
            closed: AtomicBool::new(false),
        })
    }

    /// Queues a message without waiting: when its queue is full the oldest message of that
    /// queue is dropped (counted), so a full backlog loses per-frame records, not events.
    pub fn push(&self, class: Class, message: Outgoing) {
        let c = &self.counters;
        c.queued.fetch_add(1, Ordering::Relaxed);
        let Ok(mut q) = self.queues.lock() else {
            return;
        };
        let (queue, cap, dropped) = match class {
            Class::Record => (&mut q.records, self.record_cap, &c.dropped_records),
            Class::Event => (&mut q.events, self.event_cap, &c.dropped_events),
        };
        if queue.len() >= cap {
            queue.pop_front();
            dropped.fetch_add(1, Ordering::Relaxed);
        }
        queue.push_back(message);
        let len = (q.records.len() + q.events.len()) as u64;
        c.backlog_peak.fetch_max(len, Ordering::Relaxed);
        drop(q);
        self.notify.notify_one();
    }

    fn pop(&self) -> Option<(Class, Outgoing)> {
        let mut q = self.queues.lock().ok()?;
        if let Some(m) = q.events.pop_front() {
            return Some((Class::Event, m));
        }
        q.records.pop_front().map(|m| (Class::Record, m))
    }

    /// Puts a message whose publish failed back in front (it is re-sent first; a record is
    /// still subject to the bound).
    fn requeue(&self, class: Class, message: Outgoing) {
        let Ok(mut q) = self.queues.lock() else {
            return;
        };
        let (queue, cap, dropped) = match class {
            Class::Record => (
                &mut q.records,
                self.record_cap,
                &self.counters.dropped_records,
            ),
            Class::Event => (&mut q.events, self.event_cap, &self.counters.dropped_events),
        };
        if queue.len() >= cap {
            // The newest stays; the oldest (this one) is the one to lose.
            dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.push_front(message);
    }

    /// Messages waiting (not yet published).
    pub fn waiting(&self) -> usize {
        self.queues
            .lock()
            .map(|q| q.records.len() + q.events.len())
            .unwrap_or(0)
    }

    /// Messages waiting or un-acked.
    pub fn pending(&self) -> usize {
        self.waiting() + self.counters.in_flight.load(Ordering::Relaxed) as usize
    }

    /// Stops the publisher task once it has nothing in flight.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// Publishes what the backlog holds, at most `max_pending` un-acked at once, until the
/// backlog is closed and empty. Failures (no ack in time, no connection) put the message
/// back and pause dispatching with a growing delay (logged once per change).
pub async fn run_publisher(js: jetstream::Context, backlog: Arc<Backlog>, max_pending: usize) {
    let counters = backlog.counters.clone();
    let mut in_flight = FuturesUnordered::new();
    let mut pause: Option<tokio::time::Instant> = None;
    let mut delay = Duration::from_millis(50);
    let mut failing = false;
    loop {
        if pause.is_some_and(|p| tokio::time::Instant::now() >= p) {
            pause = None;
        }
        if pause.is_none() {
            while in_flight.len() < max_pending.max(1) {
                let Some((class, message)) = backlog.pop() else {
                    break;
                };
                let js = js.clone();
                in_flight.push(async move {
                    let result = publish_one(&js, &message).await;
                    (class, message, result)
                });
            }
        }
        counters
            .in_flight
            .store(in_flight.len() as u64, Ordering::Relaxed);
        if in_flight.is_empty() && backlog.closed.load(Ordering::SeqCst) && backlog.waiting() == 0 {
            return;
        }
        let wake = pause.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1));
        tokio::select! {
            Some((class, message, result)) = in_flight.next(), if !in_flight.is_empty() => {
                match result {
                    Ok(duplicate) => {
                        let counter = if duplicate { &counters.duplicates } else { &counters.acked };
                        counter.fetch_add(1, Ordering::Relaxed);
                        if failing {
                            failing = false;
                            tracing::info!("publishing to JetStream again");
                        }
                        delay = Duration::from_millis(50);
                    }
                    Err(reason) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        if !failing {
                            failing = true;
                            tracing::warn!("publishing to JetStream failed ({reason}); keeping a bounded backlog and retrying");
                        }
                        backlog.requeue(class, message);
                        pause = Some(tokio::time::Instant::now() + delay);
                        delay = (delay * 2).min(Duration::from_secs(1));
                    }
                }
            }
            _ = backlog.notify.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Publishes one message with its id and waits for the ack; true when the server says it
/// was a duplicate.
async fn publish_one(js: &jetstream::Context, message: &Outgoing) -> Result<bool, String> {
    let publish = PublishMessage::build()
        .message_id(message.id.as_str())
        .payload(message.payload.clone());
    let ack = js
        .send_publish(message.subject.clone(), publish)
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(|a| a.duplicate).map_err(|e| e.to_string())
}

/// What the broker adds to a record: today's record plus `worker`, `lease_rev`, `seq` and
/// `wall_ms` (`stream` is the camera name, already in the record).
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    #[serde(flatten)]
    body: &'a T,
    worker: &'a str,
    lease_rev: u64,
    seq: u64,
    wall_ms: u64,
}

/// A conflict event as published on the events stream.
#[derive(Serialize)]
struct EventBody<'a> {
    stream: &'a str,
    source: &'a str,
    frame: Option<u64>,
    #[serde(flatten)]
    event: &'a ConflictEventRecord,
}

/// The camera's state as the control loop and `cameras list` see it.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraStatus {
    /// The supervisor's last state.
    pub state: StreamState,
    /// Its reason.
    pub reason: Option<String>,
}

/// Hands one camera's records and state changes to the backlog, under one lease.
pub struct Feed {
    /// Camera name.
    pub camera: String,
    /// Worker name.
    pub worker: String,
    /// The claim's revision (fencing token).
    pub lease_rev: u64,
    /// The lease's fence.
    pub clock: Arc<LeaseClock>,
    /// Where messages go.
    pub backlog: Arc<Backlog>,
    /// The camera's metrics (records, state).
    pub metrics: Option<Arc<StreamMetrics>>,
    /// The latest state, for the lease value.
    pub status: Arc<Mutex<CameraStatus>>,
}

impl Feed {
    fn envelope<T: Serialize>(&self, body: &T, seq: u64) -> Option<Bytes> {
        serde_json::to_vec(&Envelope {
            body,
            worker: &self.worker,
            lease_rev: self.lease_rev,
            seq,
            wall_ms: super::wall_ms(),
        })
        .ok()
        .map(Bytes::from)
    }

    /// Hands over one record (and its events); false when the lease has run out.
    pub fn record(&self, record: &Record, seq: u64) -> bool {
        if !self.clock.valid() {
            self.backlog.counters.fenced.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if let Some(m) = &self.metrics {
            m.observe(record);
        }
        let Some(payload) = self.envelope(record, seq) else {
            return true;
        };
        for (i, event) in record.events.iter().enumerate() {
            let body = EventBody {
                stream: &self.camera,
                source: &record.source,
                frame: record.frame,
                event,
            };
            if let Some(payload) = self.envelope(&body, seq) {
                self.backlog.push(
                    Class::Event,
                    Outgoing {
                        subject: names::event_subject(&self.camera),
                        id: format!(
                            "{}:e{i}",
                            names::record_id(&self.camera, self.lease_rev, seq)
                        ),
                        payload,
                    },
                );
            }
        }
        self.backlog.push(
            Class::Record,
            Outgoing {
                subject: names::record_subject(&self.camera),
                id: names::record_id(&self.camera, self.lease_rev, seq),
                payload,
            },
        );
        true
    }

    /// Hands over a state change (numbered `n` within this lease).
    pub fn status_change(&self, status: &StatusRecord, n: u64) {
        if let Ok(mut s) = self.status.lock() {
            *s = CameraStatus {
                state: status.state,
                reason: status.reason.clone(),
            };
        }
        if let Some(m) = &self.metrics {
            m.set_state(status.state);
            m.reconnects.store(status.reconnects, Ordering::Relaxed);
        }
        if !self.clock.valid() {
            return;
        }
        if let Some(payload) = self.envelope(status, n) {
            self.backlog.push(
                Class::Event,
                Outgoing {
                    subject: names::event_subject(&self.camera),
                    id: format!("{}:{}:s{n}", self.camera, self.lease_rev),
                    payload,
                },
            );
        }
    }

    /// Runs until both channels close: records get `seq` 1, 2, ... within this lease.
    pub fn run(self, records: Receiver<Record>, statuses: Receiver<StatusRecord>) {
        let never_r = crossbeam_channel::never();
        let never_s = crossbeam_channel::never();
        let (mut open_r, mut open_s) = (true, true);
        let (mut seq, mut n) = (0u64, 0u64);
        while open_r || open_s {
            let r = if open_r { &records } else { &never_r };
            let s = if open_s { &statuses } else { &never_s };
            crossbeam_channel::select! {
                recv(r) -> msg => match msg {
                    Ok(record) => {
                        if self.clock.valid() {
                            seq += 1;
                        }
                        self.record(&record, seq);
                    }
                    Err(_) => open_r = false,
                },
                recv(s) -> msg => match msg {
                    Ok(status) => {
                        n += 1;
                        self.status_change(&status, n);
                    }
                    Err(_) => open_s = false,
                },
            }
        }
    }
}

/// What [`bench`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Records per second asked for (0: as fast as possible).
    pub target_rate: f64,
    /// Records offered to the publish path.
    pub offered: u64,
    /// Stored by the server.
    pub acked: u64,
    /// Dropped from the full backlog.
    pub dropped: u64,
    /// Publish attempts without an ack.
    pub failed: u64,
    /// Largest backlog seen.
    pub backlog_peak: u64,
    /// Wall time from the first record to the last ack.
    pub seconds: f64,
    /// Records offered per second.
    pub offered_per_s: f64,
    /// Records acknowledged per second.
    pub acked_per_s: f64,
    /// Bytes of one record's payload.
    pub record_bytes: usize,
}

/// Offers `seconds` of synthetic records (one face, voice, fused; like a real frame's) at
/// `rate` per second (0: as fast as the producer can) spread over `cameras` bench cameras
/// (`bench-0`, ...), through the same feed, backlog and publisher as a worker, and reports
/// what the server acknowledged.
pub async fn bench(
    js: jetstream::Context,
    rate: f64,
    seconds: f64,
    cameras: usize,
    record_cap: usize,
    max_pending: usize,
) -> BenchReport {
    let backlog = Backlog::new(record_cap, EVENT_BACKLOG);
    let publisher = tokio::spawn(run_publisher(js, backlog.clone(), max_pending));
    let record = synthetic_record();
    let record_bytes = serde_json::to_vec(&record).map(|v| v.len()).unwrap_or(0) + 60;
    let feeds: Vec<Feed> = (0..cameras.max(1))
        .map(|i| Feed {
            camera: format!("bench-{i}"),
            worker: "bench".into(),
            lease_rev: super::wall_ms(),
            clock: Arc::new(LeaseClock::unbounded()),
            backlog: backlog.clone(),
            metrics: None,
            status: Arc::new(Mutex::new(CameraStatus {
                state: StreamState::Live,
                reason: None,
            })),
        })
        .collect();
    let duration = Duration::from_secs_f64(seconds.max(0.1));
    let started = Instant::now();
    // The producer is a plain thread, as the pipeline's are.
    let producer = std::thread::spawn(move || {
        let mut offered = 0u64;
        let mut seq = 0u64;
        while started.elapsed() < duration {
            if rate > 0.0 {
                let due = (started.elapsed().as_secs_f64() * rate) as u64;
                if offered >= due {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
            }
            let feed = &feeds[(offered as usize) % feeds.len()];
            if offered.is_multiple_of(feeds.len() as u64) {
                seq += 1;
            }
            feed.record(&record, seq);
            offered += 1;
        }
        offered
    });
    let offered = loop {
        if producer.is_finished() {
            break producer.join().unwrap_or(0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    backlog.close();
    let drain = tokio::time::timeout(Duration::from_secs(60), publisher).await;
    if drain.is_err() {
        tracing::warn!("the bench's backlog did not drain within 60 s");
    }
    let seconds = started.elapsed().as_secs_f64();
    let c = &backlog.counters;
    let acked = c.acked.load(Ordering::Relaxed) + c.duplicates.load(Ordering::Relaxed);
    BenchReport {
        target_rate: rate,
        offered,
        acked,
        dropped: c.dropped_records.load(Ordering::Relaxed),
        failed: c.failed.load(Ordering::Relaxed),
        backlog_peak: c.backlog_peak.load(Ordering::Relaxed),
        seconds,
        offered_per_s: offered as f64 / duration.as_secs_f64(),
        acked_per_s: acked as f64 / seconds.max(1e-9),
        record_bytes,
    }
}

/// A record shaped like a real frame's: one face with landmarks and probabilities, the
/// voice, the fused estimate.
fn synthetic_record() -> Record {
    use crate::record::{FaceRecord, Fused, StageTimes, VoiceRecord};
    let fused = Fused {
        valence: 0.12,
        arousal: -0.05,
        conflict: 0.03,
        conflict_valence: 0.02,
        conflict_arousal: 0.01,
        conflict_active: false,
        gates_valence: [0.7, 0.3],
        gates_arousal: [0.4, 0.6],
        reliability: [0.9, 0.8],
    };
    Record {
        source: "rtsp://admin:***@10.0.0.7/stream1".into(),
        stream: Some("bench".into()),
        frame: Some(1234),
        t: 41.2,
        latency_ms: Some(4.2),
        stages_ms: StageTimes {
            detect: Some(1.1),
            encode: Some(0.9),
            fuse: Some(0.01),
        },
        device: "cpu",
        faces: vec![FaceRecord {
            id: 3,
            bbox: [101.0, 62.5, 88.0, 91.0],
            score: 0.97,
            landmarks: Some([
                [120.0, 90.0],
                [160.0, 90.0],
                [140.0, 110.0],
                [125.0, 130.0],
                [155.0, 130.0],
            ]),
            probs: vec![0.05, 0.01, 0.04, 0.4, 0.1, 0.05, 0.35],
            valence: 0.1,
            arousal: -0.1,
            valence_raw: 0.2,
            arousal_raw: 0.0,
            calibration: None,
            blur: 152.0,
            fused: Some(fused),
        }],
        voice: Some(VoiceRecord {
            speech_prob: 0.9,
            speech_fraction: 0.7,
            probs: None,
            valence: Some(0.05),
            arousal: Some(0.1),
            valence_raw: Some(0.1),
            arousal_raw: Some(0.2),
            calibration: None,
            prosody: Some([0.1, 0.2]),
            snr_db: Some(18.0),
            clipping: Some(0.0),
        }),
        fused: Some(fused),
        events: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str) -> Outgoing {
        Outgoing {
            subject: "s".into(),
            id: id.into(),
            payload: Bytes::new(),
        }
    }

    #[test]
    fn a_full_backlog_drops_the_oldest_records_and_keeps_the_events() {
        let b = Backlog::new(3, 10);
        b.push(Class::Event, msg("e1"));
        for i in 0..5 {
            b.push(Class::Record, msg(&format!("r{i}")));
        }
        assert_eq!(b.counters.dropped_records.load(Ordering::Relaxed), 2);
        assert_eq!(b.counters.dropped_events.load(Ordering::Relaxed), 0);
        assert_eq!(b.waiting(), 4);
        let order: Vec<String> = std::iter::from_fn(|| b.pop().map(|(_, m)| m.id)).collect();
        assert_eq!(order, ["e1", "r2", "r3", "r4"]);
        // A failed one goes back in front.
        b.push(Class::Record, msg("r5"));
        let (class, m) = b.pop().unwrap();
        b.requeue(class, m);
        b.push(Class::Record, msg("r6"));
        let order: Vec<String> = std::iter::from_fn(|| b.pop().map(|(_, m)| m.id)).collect();
        assert_eq!(order, ["r5", "r6"]);
    }

    #[test]
    fn a_record_keeps_its_fields_and_gains_the_broker_ones() {
        let b = Backlog::new(10, 10);
        let feed = Feed {
            camera: "lobby".into(),
            worker: "w1".into(),
            lease_rev: 42,
            clock: Arc::new(LeaseClock::unbounded()),
            backlog: b.clone(),
            metrics: None,
            status: Arc::new(Mutex::new(CameraStatus {
                state: StreamState::Live,
                reason: None,
            })),
        };
        let mut record = synthetic_record();
        record.stream = Some("lobby".into());
        assert!(feed.record(&record, 7));
        let (_, m) = b.pop().unwrap();
        assert_eq!(m.id, "lobby:42:7");
        assert_eq!(m.subject, "affect.rec.lobby");
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        for key in [
            "source",
            "frame",
            "t",
            "faces",
            "voice",
            "fused",
            "stages_ms",
        ] {
            assert!(v.get(key).is_some(), "{key} missing: {v}");
        }
        assert_eq!(v["stream"], "lobby");
        assert_eq!(v["worker"], "w1");
        assert_eq!(v["lease_rev"], 42);
        assert_eq!(v["seq"], 7);
        assert!(v["wall_ms"].as_u64().unwrap() > 1_600_000_000_000);
        // A fenced feed publishes nothing and counts it.
        feed.clock.lose();
        assert!(!feed.record(&record, 8));
        assert_eq!(b.counters.fenced.load(Ordering::Relaxed), 1);
        assert_eq!(b.waiting(), 0);
    }
}
