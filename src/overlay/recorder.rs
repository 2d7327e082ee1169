//! The `r` key: writes the records the overlay sees to a JSON Lines file while on, and flushes
//! it when turned off or when the demo quits.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::record::Record;
use crate::sink::{JsonlSink, JsonlTarget, SinkError};

/// What a toggle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toggled {
    /// Recording started into this file.
    Started(PathBuf),
    /// Recording stopped; the file is flushed and holds `records` records.
    Stopped {
        /// The finished file.
        path: PathBuf,
        /// Records written to it.
        records: u64,
    },
}

/// A switchable JSONL writer shared by the overlay (switch) and the sink thread (writes).
pub struct Recorder {
    dir: PathBuf,
    active: Mutex<Option<(PathBuf, JsonlSink, u64)>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder that creates its files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            active: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<(PathBuf, JsonlSink, u64)>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file being written, if recording.
    pub fn path(&self) -> Option<PathBuf> {
        self.lock().as_ref().map(|(p, _, _)| p.clone())
    }

    /// Starts a new file (named by the time) or stops and flushes the current one.
    pub fn toggle(&self) -> Result<Toggled, SinkError> {
        let mut active = self.lock();
        if let Some((path, mut sink, records)) = active.take() {
            sink.flush()?;
            return Ok(Toggled::Stopped { path, records });
        }
        let path = unique_path(&self.dir);
        let sink = JsonlSink::open(&JsonlTarget::File(path.clone()))?;
        *active = Some((path.clone(), sink, 0));
        Ok(Toggled::Started(path))
    }

    /// Writes `record` when recording (sink thread). A write error stops the recording.
    pub fn write(&self, record: &Record) {
        let mut active = self.lock();
        let Some((path, sink, n)) = active.as_mut() else {
            return;
        };
        match sink.write(record) {
            Ok(()) => *n += 1,
            Err(e) => {
                tracing::error!("recording to {} stopped: {e}", path.display());
                *active = None;
            }
        }
    }

    /// Stops recording and flushes; returns the file and its record count, if one was open.
    pub fn finish(&self) -> Result<Option<(PathBuf, u64)>, SinkError> {
        match self.lock().take() {
            Some((path, mut sink, n)) => {
                sink.flush()?;
                Ok(Some((path, n)))
            }
            None => Ok(None),
        }
    }
}

/// `dir/affectstream-<unix seconds>[-k].jsonl`, not yet existing.
fn unique_path(dir: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut path = dir.join(format!("affectstream-{secs}.jsonl"));
    let mut k = 1;
    while path.exists() {
        path = dir.join(format!("affectstream-{secs}-{k}.jsonl"));
        k += 1;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toggling_writes_one_file_per_recording() {
        let dir = std::env::temp_dir().join(format!("affectstream-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rec = Recorder::new(&dir);
        let record = Record {
            source: "s".into(),
            stream: None,
            frame: Some(0),
            t: 0.0,
            latency_ms: None,
            stages_ms: Default::default(),
            device: "cpu",
            faces: vec![],
            voice: None,
            fused: None,
            events: vec![],
        };
        rec.write(&record); // not recording: ignored
        let Toggled::Started(path) = rec.toggle().unwrap() else {
            panic!("expected a start");
        };
        rec.write(&record);
        rec.write(&record);
        assert_eq!(
            rec.toggle().unwrap(),
            Toggled::Stopped {
                path: path.clone(),
                records: 2
            }
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(rec.finish().unwrap().is_none());
        std::fs::remove_dir_all(&dir).ok();
    }
}
