//! Embedding affectstream: run the pipeline on a media file or URI and print one line per
//! record (stream time, each face's calibrated valence/arousal, the conflict score).
//!
//! ```text
//! cargo run --release --example embed -- path/to/clip.mp4
//! t=1.23s face 1 v=+0.12 a=-0.05 conflict=0.04
//! ```
//!
//! It needs only the library (`default-features = false` is enough) and the models that
//! `scripts/setup.sh` installs. The pattern: build a `Pipeline` from `RunOptions`, spawn it on
//! an input, read `records()` until the channel closes, then `join()` for the models back (and
//! the error, if the run failed).

use std::io::Write;
use std::process::ExitCode;

use affectstream::capture::Source;
use affectstream::pipeline::{Input, Pipeline, RunOptions};
use affectstream::record::Record;

fn main() -> ExitCode {
    let Some(media) = std::env::args().nth(1) else {
        eprintln!("usage: embed MEDIA (a file path or a URI)");
        return ExitCode::from(2);
    };
    match print_records(&media, &mut std::io::stdout().lock()) {
        Ok(n) => {
            eprintln!("{n} records");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the pipeline on `media` and writes one line per record into `out`; returns how many.
pub fn print_records(media: &str, out: &mut impl Write) -> Result<u64, Box<dyn std::error::Error>> {
    let options = RunOptions::new(media);
    let source = Source::parse(media)?;
    let handle = Pipeline::load(&options)?.spawn(Input::Source(source))?;
    let mut count = 0;
    for record in handle.records() {
        writeln!(out, "{}", line(&record))?;
        count += 1;
    }
    // The records channel closed: every stage has finished. `join` says whether the run
    // failed (a decode error after some records, say) and hands the models back.
    handle.join()?;
    Ok(count)
}

/// One record as a line of text.
pub fn line(record: &Record) -> String {
    let mut text = format!("t={:.2}s", record.t);
    for face in &record.faces {
        text += &format!(
            " face {} v={:+.2} a={:+.2}",
            face.id, face.valence, face.arousal
        );
    }
    if let Some(fused) = &record.fused {
        text += &format!(" conflict={:.2}", fused.conflict);
    }
    text
}
