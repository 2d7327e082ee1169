//! CSV sink: one row per face per frame, for spreadsheets and pandas. Columns are fixed and
//! documented in README.md; empty cells mean "not available" (no voice, no fused value).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::SinkError;
use super::hub::{Line, Output, write_lines};
use crate::record::Record;

/// The header row.
pub const HEADER: &str = "stream,source,frame,t,face,x,y,width,height,score,face_valence,\
face_arousal,voice_valence,voice_arousal,speech_prob,valence,arousal,conflict,\
gate_face_valence,gate_voice_valence,gate_face_arousal,gate_voice_arousal,latency_ms";

/// Writes face rows to a file.
pub struct CsvWriter {
    writer: BufWriter<File>,
    path: PathBuf,
}

impl CsvWriter {
    /// Creates (or truncates) `path` and writes the header.
    pub fn create(path: &Path) -> Result<Self, SinkError> {
        let create = |source| SinkError::Create {
            path: path.to_owned(),
            source,
        };
        let mut writer = BufWriter::new(File::create(path).map_err(create)?);
        writeln!(writer, "{HEADER}").map_err(create)?;
        Ok(Self {
            writer,
            path: path.to_owned(),
        })
    }

    /// Writes the rows of every record from `rx` until it closes.
    pub fn run(self, rx: Receiver<Arc<Line>>) -> Result<(), SinkError> {
        let target = self.path.display().to_string();
        write_lines(self.writer, &target, rx, |line, w| match &line.output {
            Output::Record(record) => write_rows(w, record),
            Output::Status(_) => Ok(()),
        })
    }
}

/// Quotes a text cell when it holds a separator, quote or newline.
fn text_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn num<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// Writes one row per face of `record` (none for frames without a face).
pub fn write_rows(w: &mut impl Write, record: &Record) -> std::io::Result<()> {
    let voice = record.voice.as_ref();
    for face in &record.faces {
        let fused = face.fused.as_ref();
        let [x, y, width, height] = face.bbox;
        writeln!(
            w,
            "{},{},{},{:.4},{},{x:.1},{y:.1},{width:.1},{height:.1},{:.4},{:.4},{:.4},{},{},{},{},{},{},{},{},{},{},{}",
            text_cell(record.stream.as_deref().unwrap_or_default()),
            text_cell(&record.source),
            num(record.frame),
            record.t,
            face.id,
            face.score,
            face.valence,
            face.arousal,
            num(voice.and_then(|v| v.valence)),
            num(voice.and_then(|v| v.arousal)),
            num(voice.map(|v| v.speech_prob)),
            num(fused.map(|f| f.valence)),
            num(fused.map(|f| f.arousal)),
            num(fused.map(|f| f.conflict)),
            num(fused.map(|f| f.gates_valence[0])),
            num(fused.map(|f| f.gates_valence[1])),
            num(fused.map(|f| f.gates_arousal[0])),
            num(fused.map(|f| f.gates_arousal[1])),
            num(record.latency_ms.map(|l| format!("{l:.3}"))),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FaceRecord, StageTimes};

    #[test]
    fn one_row_per_face_with_as_many_cells_as_the_header() {
        let face = |id| FaceRecord {
            id,
            bbox: [1.0, 2.0, 30.0, 40.0],
            score: 0.9,
            landmarks: None,
            probs: vec![],
            valence: 0.5,
            arousal: -0.25,
            valence_raw: 0.4,
            arousal_raw: -0.1,
            calibration: None,
            blur: 100.0,
            fused: None,
        };
        let record = Record {
            source: "rtsp://u:***@cam/x,y".into(),
            stream: Some("lobby".into()),
            frame: Some(3),
            t: 0.12,
            latency_ms: Some(4.5),
            stages_ms: StageTimes::default(),
            device: "cpu",
            faces: vec![face(1), face(2)],
            voice: None,
            fused: None,
            events: vec![],
        };
        let mut out = Vec::new();
        write_rows(&mut out, &record).unwrap();
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 2);
        let columns = HEADER.split(',').count();
        for row in rows {
            // The quoted source holds one comma of its own.
            assert_eq!(row.split(',').count(), columns + 1, "{row}");
            assert!(row.starts_with("lobby,\"rtsp://u:***@cam/x,y\",3,0.1200,"));
        }
    }
}
