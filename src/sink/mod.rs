//! Sinks: where records go. This module writes JSON Lines to a file or stdout and keeps the
//! run's latency statistics; every record is written, in order, then flushed at the end.
//! Multi-stream runs go through [`hub`], which adds CSV ([`csv`]) and the live WebSocket and
//! Prometheus endpoint ([`server`]).

pub mod csv;
pub mod hub;
pub mod prometheus;
pub mod server;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crossbeam_channel::Receiver;

use crate::metrics::LatencyStats;
use crate::record::Record;

/// Errors writing records.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write records to {target}: {source}")]
    Write {
        target: String,
        source: std::io::Error,
    },
    #[error("live endpoint: {0}")]
    Serve(String),
}

/// Where JSONL goes.
#[derive(Debug, Clone)]
pub enum JsonlTarget {
    /// Standard output.
    Stdout,
    /// A file (created or truncated).
    File(PathBuf),
    /// Nowhere (benchmarks: records are counted and measured, not kept).
    Discard,
}

/// What a finished sink reports.
#[derive(Default)]
pub struct SinkSummary {
    /// Records written.
    pub records: u64,
    /// Records with at least one face.
    pub records_with_faces: u64,
    /// Latency statistics of the video records.
    pub latency: LatencyStats,
}

/// A JSON Lines writer.
pub struct JsonlSink {
    writer: Box<dyn Write + Send>,
    target: String,
}

/// A buffered writer for `target` and its name for messages.
pub(crate) fn open_target(
    target: &JsonlTarget,
) -> Result<(Box<dyn Write + Send>, String), SinkError> {
    Ok(match target {
        JsonlTarget::Stdout => (Box::new(BufWriter::new(std::io::stdout())), "stdout".into()),
        JsonlTarget::Discard => (Box::new(std::io::sink()), "nowhere".into()),
        JsonlTarget::File(path) => {
            let file = File::create(path).map_err(|source| SinkError::Create {
                path: path.clone(),
                source,
            })?;
            (Box::new(BufWriter::new(file)), path.display().to_string())
        }
    })
}

impl JsonlSink {
    /// Opens the target.
    pub fn open(target: &JsonlTarget) -> Result<Self, SinkError> {
        let (writer, name) = open_target(target)?;
        Ok(Self {
            writer,
            target: name,
        })
    }

    /// Writes one record as a line.
    pub fn write(&mut self, record: &Record) -> Result<(), SinkError> {
        let err = |source| SinkError::Write {
            target: self.target.clone(),
            source,
        };
        serde_json::to_writer(&mut self.writer, record).map_err(|e| err(e.into()))?;
        self.writer.write_all(b"\n").map_err(err)
    }

    /// Flushes buffered lines.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.writer.flush().map_err(|source| SinkError::Write {
            target: self.target.clone(),
            source,
        })
    }

    /// Writes every record from `rx` until it closes, calling `on_record` after each (progress);
    /// flushes at the end.
    pub fn run(
        mut self,
        rx: Receiver<Record>,
        mut on_record: impl FnMut(&Record),
    ) -> Result<SinkSummary, SinkError> {
        let mut summary = SinkSummary {
            records: 0,
            records_with_faces: 0,
            latency: LatencyStats::default(),
        };
        let mut result = Ok(());
        for record in rx {
            if result.is_ok() {
                result = self.write(&record);
            }
            summary.records += 1;
            if !record.faces.is_empty() {
                summary.records_with_faces += 1;
            }
            summary.latency.add_record(&record);
            on_record(&record);
        }
        result?;
        self.flush()?;
        Ok(summary)
    }
}
