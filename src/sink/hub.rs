//! The sink hub of a multi-stream run: one thread takes the records and status changes of
//! every stream, serialises each once and hands it to every consumer (JSONL file or stdout,
//! CSV, WebSocket clients) through a bounded queue per consumer. For live runs a consumer
//! that is behind loses lines (counted) instead of slowing the others or the capture; for
//! offline runs every consumer gets every line.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::SinkError;
use super::csv::CsvWriter;
use super::server::Clients;
use crate::record::{Record, StatusRecord};
use crate::sink::JsonlTarget;
use crate::sink::prometheus::{Registry, SinkCounters, StreamMetrics};

/// Lines a consumer may be behind before it loses lines (live runs).
pub const CONSUMER_QUEUE: usize = 1024;

/// What the hub distributes.
pub enum Output {
    /// A record of one stream (boxed: a record is several times larger than a status).
    Record(Box<Record>),
    /// A stream changed state.
    Status(StatusRecord),
}

/// An output with its JSON line, shared by every consumer.
pub struct Line {
    /// The output itself (the CSV writer needs its fields).
    pub output: Output,
    /// The output as one JSON line, without the newline.
    pub json: String,
}

struct Consumer {
    tx: Sender<Arc<Line>>,
    counters: Arc<SinkCounters>,
    thread: thread::JoinHandle<Result<(), SinkError>>,
}

/// Where the hub writes.
#[derive(Debug, Clone)]
pub struct HubTargets {
    /// JSON Lines (records and status changes).
    pub jsonl: JsonlTarget,
    /// CSV, one row per face per frame.
    pub csv: Option<PathBuf>,
}

/// The running hub: a thread fed by the streams.
pub struct SinkHub {
    thread: thread::JoinHandle<Result<HubSummary, SinkError>>,
}

/// What the hub did.
#[derive(Debug, Clone, Copy, Default)]
pub struct HubSummary {
    /// Records received from all streams.
    pub records: u64,
    /// Status changes received.
    pub statuses: u64,
}

impl SinkHub {
    /// Opens the targets and starts the hub thread on `rx`; it ends when every sender of
    /// `records` and `statuses` is gone. `lossless` makes consumers block instead of dropping (offline runs).
    pub fn start(
        targets: &HubTargets,
        records: Receiver<Record>,
        statuses: Receiver<StatusRecord>,
        registry: Arc<Registry>,
        clients: Option<Arc<Clients>>,
        lossless: bool,
    ) -> Result<Self, SinkError> {
        let mut consumers = Vec::new();
        if !matches!(targets.jsonl, JsonlTarget::Discard) {
            let (writer, name) = super::open_target(&targets.jsonl)?;
            consumers.push(spawn_consumer(&registry, "jsonl", move |rx| {
                write_lines(writer, &name, rx, |line, w| {
                    w.write_all(line.json.as_bytes())?;
                    w.write_all(b"\n")
                })
            })?);
        }
        if let Some(path) = &targets.csv {
            let csv = CsvWriter::create(path)?;
            consumers.push(spawn_consumer(&registry, "csv", move |rx| csv.run(rx))?);
        }
        let thread = thread::Builder::new()
            .name("affectstream-hub".into())
            .spawn(move || {
                let rx = merge(records, statuses);
                distribute(rx, consumers, &registry, clients, lossless)
            })
            .map_err(|e| SinkError::Write {
                target: "sink hub".into(),
                source: e,
            })?;
        Ok(Self { thread })
    }

    /// Waits until every stream has ended and every consumer has flushed.
    pub fn finish(self) -> Result<HubSummary, SinkError> {
        self.thread.join().map_err(|_| SinkError::Write {
            target: "sink hub".into(),
            source: std::io::Error::other("the sink hub thread stopped unexpectedly"),
        })?
    }
}

fn spawn_consumer(
    registry: &Registry,
    name: &'static str,
    body: impl FnOnce(Receiver<Arc<Line>>) -> Result<(), SinkError> + Send + 'static,
) -> Result<Consumer, SinkError> {
    let (tx, rx) = crossbeam_channel::bounded(CONSUMER_QUEUE);
    let thread = thread::Builder::new()
        .name(format!("affectstream-sink-{name}"))
        .spawn(move || body(rx))
        .map_err(|e| SinkError::Write {
            target: name.into(),
            source: e,
        })?;
    Ok(Consumer {
        tx,
        counters: registry.add_sink(name),
        thread,
    })
}

/// Writes every line from `rx` with `write`, flushing whenever the queue runs dry (so a live
/// reader sees lines promptly without a flush per line). After a write error the lines are
/// drained and dropped, and the error is returned at the end.
pub(crate) fn write_lines<W: Write>(
    mut writer: W,
    target: &str,
    rx: Receiver<Arc<Line>>,
    mut write: impl FnMut(&Line, &mut W) -> std::io::Result<()>,
) -> Result<(), SinkError> {
    let mut result = Ok(());
    for line in rx.iter() {
        if result.is_err() {
            continue;
        }
        result = write(&line, &mut writer);
        if result.is_ok() && rx.is_empty() {
            result = writer.flush();
        }
    }
    result
        .and_then(|()| writer.flush())
        .map_err(|source| SinkError::Write {
            target: target.to_owned(),
            source,
        })
}

/// Both inputs as one iterator of outputs, in arrival order, until both have closed.
fn merge(
    records: Receiver<Record>,
    statuses: Receiver<StatusRecord>,
) -> impl Iterator<Item = Output> {
    let never_r = crossbeam_channel::never();
    let never_s = crossbeam_channel::never();
    let (mut open_r, mut open_s) = (true, true);
    std::iter::from_fn(move || {
        while open_r || open_s {
            let r = if open_r { &records } else { &never_r };
            let s = if open_s { &statuses } else { &never_s };
            crossbeam_channel::select! {
                recv(r) -> msg => match msg {
                    Ok(record) => return Some(Output::Record(Box::new(record))),
                    Err(_) => open_r = false,
                },
                recv(s) -> msg => match msg {
                    Ok(status) => return Some(Output::Status(status)),
                    Err(_) => open_s = false,
                },
            }
        }
        None
    })
}

fn distribute(
    rx: impl Iterator<Item = Output>,
    consumers: Vec<Consumer>,
    registry: &Registry,
    clients: Option<Arc<Clients>>,
    lossless: bool,
) -> Result<HubSummary, SinkError> {
    let streams = registry.streams();
    let metrics_of = |name: Option<&str>| -> Option<&Arc<StreamMetrics>> {
        streams.iter().find(|m| Some(m.name.as_str()) == name)
    };
    let mut summary = HubSummary::default();
    for output in rx {
        let json = match &output {
            Output::Record(r) => {
                summary.records += 1;
                if let Some(m) = metrics_of(r.stream.as_deref()) {
                    m.observe(r);
                }
                serde_json::to_string(r)
            }
            Output::Status(s) => {
                summary.statuses += 1;
                serde_json::to_string(s)
            }
        };
        let Ok(json) = json else {
            continue; // plain data structs always serialise
        };
        let line = Arc::new(Line { output, json });
        for consumer in &consumers {
            let sent = if lossless {
                consumer.tx.send(line.clone()).is_ok()
            } else {
                match consumer.tx.try_send(line.clone()) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        consumer.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        false
                    }
                    Err(TrySendError::Disconnected(_)) => false,
                }
            };
            if sent {
                consumer.counters.written.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(clients) = &clients {
            clients.broadcast(&line.json);
        }
    }
    let mut result = Ok(summary);
    for consumer in consumers {
        drop(consumer.tx);
        let outcome = consumer.thread.join().unwrap_or_else(|_| {
            Err(SinkError::Write {
                target: "sink".into(),
                source: std::io::Error::other("a sink thread stopped unexpectedly"),
            })
        });
        if let (Ok(_), Err(e)) = (&result, outcome) {
            result = Err(e);
        }
    }
    result
}
