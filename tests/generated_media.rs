//! Unusual but valid media, made in the test with GStreamer: tiny, huge, odd-sized and rotated
//! frames, no faces, ten faces, silence, clipped audio, 8 kHz mono and 48 kHz stereo. Each ends
//! in its documented graceful behaviour; every run has a time limit.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{parse_jsonl, run_binary, temp_dir, testdata};
use gstreamer as gst;
use gstreamer::prelude::*;

const LIMIT: Duration = Duration::from_secs(180);

/// Runs a gst-launch description to EOS (panics on error or after 120 s).
fn make(description: &str) {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(description).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("media generated in time");
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        matches!(msg.view(), gst::MessageView::Eos(..)),
        "{description}: {msg:?}"
    );
}

fn run_ok(path: &Path) -> Vec<serde_json::Value> {
    let o = run_binary(
        &["run", "--source", path.to_str().unwrap(), "--device", "cpu"],
        LIMIT,
    );
    assert_eq!(o.code, Some(0), "{}: {}", path.display(), o.stderr);
    assert!(!o.stderr.contains("panicked"));
    parse_jsonl(&o.stdout)
}

fn video(dir: &Path, name: &str, caps: &str, frames: u32) -> PathBuf {
    let path = dir.join(name);
    make(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! {caps} ! videoconvert ! vp8enc deadline=1 ! webmmux ! filesink location={}",
        path.display()
    ));
    path
}

#[test]
fn tiny_huge_and_odd_sized_frames_without_faces() {
    let dir = temp_dir("sizes");
    for (name, caps, frames) in [
        (
            "tiny.webm",
            "video/x-raw,width=16,height=16,framerate=25/1",
            10,
        ),
        (
            "huge.webm",
            "video/x-raw,width=3840,height=2160,framerate=25/1",
            3,
        ),
        (
            "odd.webm",
            "video/x-raw,width=333,height=197,framerate=25/1",
            10,
        ),
    ] {
        let records = run_ok(&video(&dir, name, caps, frames));
        assert_eq!(records.len(), frames as usize, "{name}: a record per frame");
        assert!(
            records
                .iter()
                .all(|r| r["faces"].as_array().unwrap().is_empty()),
            "{name}: no faces"
        );
        assert!(
            records.iter().all(|r| r["fused"].is_null()),
            "{name}: nothing to fuse"
        );
    }
}

/// Writes a 90-degree clockwise display rotation into the track header of the single-track
/// MP4 at `path` (GStreamer's muxers do not write one from a tag).
fn set_mp4_rotation_clockwise(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let tkhd = bytes
        .windows(4)
        .position(|w| w == b"tkhd")
        .expect("the MP4 has a track header");
    assert_eq!(bytes[tkhd + 4], 0, "a version-0 track header");
    // type, version/flags, created, modified, track id, reserved, duration, reserved (8),
    // layer, group, volume, reserved: the 3x3 matrix starts 44 bytes after the type.
    let matrix: [i32; 9] = [0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x4000_0000];
    for (i, v) in matrix.iter().enumerate() {
        let at = tkhd + 44 + 4 * i;
        bytes[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// Faces found in `records`, and how many of them have their eyes level and the right way
/// round (the first eye landmark, the subject's right eye, left of the second in the image, and
/// further apart across than up or down).
fn faces_and_upright(records: &[serde_json::Value]) -> (usize, usize) {
    let faces: Vec<&serde_json::Value> = records
        .iter()
        .flat_map(|r| r["faces"].as_array().unwrap())
        .collect();
    let upright = faces
        .iter()
        .filter(|f| {
            let eye = |i: usize| {
                let p = &f["landmarks"][i];
                (p[0].as_f64().unwrap(), p[1].as_f64().unwrap())
            };
            let ((x0, y0), (x1, y1)) = (eye(0), eye(1));
            x1 - x0 > (y1 - y0).abs()
        })
        .count();
    (faces.len(), upright)
}

#[test]
fn rotation_metadata_turns_the_frame() {
    // A talking head turned on its side: the detector finds no face in it as it is. The same
    // file saying "display turned 90 degrees clockwise" must reach the detector upright.
    let dir = temp_dir("rotate");
    let sideways = dir.join("sideways.mp4");
    let tagged = dir.join("tagged.mp4");
    make(&format!(
        "filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! identity eos-after=20 ! videoflip video-direction=90l ! videoconvert ! x264enc ! mp4mux ! filesink location={}",
        testdata().join("av/streams/tedlieu_60s_256.mp4").display(),
        sideways.display()
    ));
    std::fs::copy(&sideways, &tagged).unwrap();
    set_mp4_rotation_clockwise(&tagged);
    let records = run_ok(&sideways);
    let frames = records.len();
    assert!(frames >= 20, "{frames} frames");
    assert_eq!(
        faces_and_upright(&records),
        (0, 0),
        "a face on its side is missed"
    );
    let records = run_ok(&tagged);
    assert_eq!(records.len(), frames);
    assert_eq!(
        faces_and_upright(&records),
        (frames, frames),
        "turned upright by the capture"
    );
}

#[test]
fn ten_faces_at_once_get_ten_tracks() {
    // Tile one frame of a talking-head clip 5 x 2 into a still image.
    let dir = temp_dir("ten");
    let tile = dir.join("face.png");
    make(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! videoscale ! video/x-raw,width=200,height=200 ! pngenc snapshot=true ! filesink location={}",
        testdata().join("av/streams/tedlieu_60s_256.mp4").display(),
        tile.display()
    ));
    let grid = dir.join("grid.png");
    let mut desc = String::from("compositor name=c");
    for i in 0..10 {
        desc.push_str(&format!(
            " sink_{i}::xpos={} sink_{i}::ypos={}",
            (i % 5) * 220,
            (i / 5) * 220
        ));
    }
    desc.push_str(&format!(
        " ! videoconvert ! pngenc snapshot=true ! filesink location={}",
        grid.display()
    ));
    for i in 0..10 {
        desc.push_str(&format!(
            " filesrc location={} ! pngdec ! imagefreeze num-buffers=1 ! videoconvert ! c.sink_{i}",
            tile.display()
        ));
    }
    make(&desc);
    let records = run_ok(&grid);
    assert_eq!(records.len(), 1);
    let faces = records[0]["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 10, "ten faces found");
    let ids: std::collections::BTreeSet<u64> =
        faces.iter().map(|f| f["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 10, "ten distinct ids");
}

fn wav(dir: &Path, name: &str, source: &str, caps: &str) -> PathBuf {
    let path = dir.join(name);
    make(&format!(
        "{source} ! audioconvert ! audioresample ! {caps} ! wavenc ! filesink location={}",
        path.display()
    ));
    path
}

#[test]
fn silence_and_clipped_audio() {
    let dir = temp_dir("audio");
    let silence = wav(
        &dir,
        "silence.wav",
        "audiotestsrc wave=silence num-buffers=150",
        "audio/x-raw,rate=16000,channels=1",
    );
    let records = run_ok(&silence);
    assert!(!records.is_empty());
    for r in &records {
        assert!(
            r["voice"]["speech_prob"].as_f64().unwrap() < 0.5,
            "silence is not speech"
        );
        assert!(r["fused"].is_null(), "no reliable voice, no fused value");
    }
    let clipped = wav(
        &dir,
        "clipped.wav",
        "audiotestsrc wave=sine freq=220 volume=1.0 num-buffers=150 ! audio/x-raw,format=F32LE ! audioamplify amplification=4 clipping-method=clip",
        "audio/x-raw,rate=16000,channels=1",
    );
    let records = run_ok(&clipped);
    let clipping = records
        .iter()
        .filter_map(|r| r["voice"]["clipping"].as_f64())
        .fold(0.0, f64::max);
    assert!(clipping > 0.1, "clipping measured: {clipping}");
}

#[test]
fn eight_khz_mono_and_48_khz_stereo_speech() {
    let dir = temp_dir("rates");
    let speech = testdata().join("speech/ravdess/03-01-05-02-01-01-05.wav");
    for (name, caps) in [
        ("8k.wav", "audio/x-raw,rate=8000,channels=1"),
        ("48k.wav", "audio/x-raw,rate=48000,channels=2"),
    ] {
        let path = wav(
            &dir,
            name,
            &format!("filesrc location={} ! wavparse", speech.display()),
            caps,
        );
        let records = run_ok(&path);
        assert!(records.len() >= 5, "{name}: one record per hop");
        let speech_seen = records
            .iter()
            .any(|r| r["voice"]["speech_prob"].as_f64().unwrap_or(0.0) > 0.5);
        assert!(speech_seen, "{name}: the actor's speech is found");
        assert!(records.iter().any(|r| r["voice"]["arousal"].is_number()));
    }
}

#[test]
fn random_bytes_named_wav() {
    let dir = temp_dir("random");
    let path = dir.join("noise.wav");
    let bytes: Vec<u8> = (0u32..50_000)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, bytes).unwrap();
    let o = run_binary(&["run", "--source", path.to_str().unwrap()], LIMIT);
    common::assert_clear_failure(&o, "noise.wav", "not a media file");
}
