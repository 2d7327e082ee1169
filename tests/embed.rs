//! `examples/embed.rs`, the model program for users who embed the library, run as a test: the
//! example's own code on a real talking-head clip, through the real models.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../examples/embed.rs"]
mod embed;

use std::path::{Path, PathBuf};

fn testdata() -> PathBuf {
    std::env::var_os("AFFECTSTREAM_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata"))
}

#[test]
fn the_embedding_example_prints_one_line_per_record_with_faces_and_conflict() {
    let clip = testdata().join("face_video/mead_dreamtalk/M030_front_happy_level3_001.mp4");
    let mut out = Vec::new();
    let n = embed::print_records(clip.to_str().unwrap(), &mut out).expect("the example runs");
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as u64, n);
    assert!(
        n > 50,
        "a few seconds of video give a record per frame: {n}"
    );
    assert!(lines.iter().all(|l| l.starts_with("t=")), "{text}");
    let with_face = lines.iter().filter(|l| l.contains(" face ")).count();
    assert!(
        with_face * 10 >= lines.len() * 9,
        "the face is found: {text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" v=") && l.contains(" conflict="))
    );
}

#[test]
fn the_embedding_example_reports_a_missing_file() {
    let mut out = Vec::new();
    let err = embed::print_records("/nonexistent/clip.mp4", &mut out)
        .expect_err("a missing file is an error");
    assert!(err.to_string().contains("/nonexistent/clip.mp4"), "{err}");
    assert!(out.is_empty());
}
