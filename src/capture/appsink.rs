//! The appsink ends of the branches (`pipelines/*-branch.txt`): their callbacks turn samples
//! into [`VideoFrame`]s and [`AudioBlock`]s, stamp them on the stream's timeline and deliver
//! them (see `delivery`). A callback that cannot go on posts an element error saying why
//! before it returns the flow error, so the bus loop reports the reason, not GStreamer's
//! bare "Internal data stream error".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_base as gst_base;
use gstreamer_base::prelude::*;
use gstreamer_video as gst_video;

use super::delivery::{CaptureTargets, Closed, TargetSlot, current_targets};
use super::{AudioBlock, CaptureOptions, VideoFrame};
use crate::metrics::Stamps;

/// Posts `reason` as a stream error of `sink` (the bus loop reports it, naming the source)
/// and returns the flow error that stops the stream.
fn fail(sink: &gst_app::AppSink, reason: &str) -> gst::FlowError {
    gst::element_error!(sink, gst::StreamError::Failed, ("{}", reason));
    gst::FlowError::Error
}

/// The stage is gone: the stream stops quietly (a shutdown, not an error to report).
fn closed(_: Closed) -> gst::FlowError {
    gst::FlowError::Flushing
}

/// Parses `description` into a bin, lets `attach` set up its appsinks, adds it to
/// `pipeline` and links `pad` to it.
pub(super) fn link_branch(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    description: &str,
    attach: impl FnOnce(&gst::Bin) -> Result<(), String>,
) -> Result<(), String> {
    let bin = gst::parse::bin_from_description(description, true).map_err(|e| e.to_string())?;
    start_flips_in_passthrough(&bin);
    attach(&bin)?;
    pipeline.add(&bin).map_err(|e| e.to_string())?;
    bin.sync_state_with_parent().map_err(|e| e.to_string())?;
    let sink = bin.static_pad("sink").ok_or("branch has no sink pad")?;
    pad.link(&sink).map_err(|e| e.to_string())?;
    Ok(())
}

/// Puts every `videoflip` of `bin` in passthrough. GStreamer 1.22's videoflip switches
/// passthrough only when its method changes, so one that never sees a rotation tag copies
/// every frame (an identity "flip": 0.1 ms and 1.4 MB of memory traffic per 720p frame); an
/// orientation tag still turns it on, as that is a change of method.
fn start_flips_in_passthrough(bin: &gst::Bin) {
    for element in bin.iterate_recurse().into_iter().flatten() {
        if element.factory().is_some_and(|f| f.name() == "videoflip")
            && let Some(transform) = element.downcast_ref::<gst_base::BaseTransform>()
        {
            transform.set_passthrough(true);
        }
    }
}

fn appsink(bin: &gst::Bin, name: &str) -> Result<gst_app::AppSink, String> {
    bin.by_name(name)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| format!("branch has no appsink named {name}"))
}

/// Running time of a buffer: stream time mapped through its segment (equals the timestamp
/// for a plain file).
fn running_time(sample: &gst::Sample, pts: Option<gst::ClockTime>) -> Option<Duration> {
    let pts = pts?;
    let running = sample
        .segment()
        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
        .and_then(|s| s.to_running_time(pts))
        .unwrap_or(pts);
    Some(Duration::from_nanos(running.nseconds()))
}

/// The video info of the caps the sink negotiated, read once.
fn video_info(
    sink: &gst_app::AppSink,
    sample: &gst::Sample,
    info: &Mutex<Option<gst_video::VideoInfo>>,
) -> Result<gst_video::VideoInfo, gst::FlowError> {
    let mut slot = info
        .lock()
        .map_err(|_| fail(sink, "the video sink's caps lock is poisoned"))?;
    if let Some(info) = slot.as_ref() {
        return Ok(info.clone());
    }
    let caps = sample
        .caps()
        .ok_or_else(|| fail(sink, "a video sample came without caps"))?;
    let parsed = gst_video::VideoInfo::from_caps(caps).map_err(|e| {
        fail(
            sink,
            &format!("the video caps cannot be read ({e}): {caps}"),
        )
    })?;
    *slot = Some(parsed.clone());
    Ok(parsed)
}

/// The next sample of `sink` and the targets to deliver it to: end of stream once the
/// capture is stopping or nothing takes its frames any more.
fn next_sample(
    sink: &gst_app::AppSink,
    stopping: &AtomicBool,
    slot: &TargetSlot,
) -> Result<(gst::Sample, CaptureTargets), gst::FlowError> {
    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
    if stopping.load(Ordering::Relaxed) {
        return Err(gst::FlowError::Eos);
    }
    let targets = current_targets(slot).ok_or(gst::FlowError::Eos)?;
    Ok((sample, targets))
}

/// Sets up the video branch's appsink `sink`: each sample becomes a [`VideoFrame`] delivered
/// into the slot's targets.
pub(super) fn attach_video_sink(
    bin: &gst::Bin,
    slot: TargetSlot,
    stopping: Arc<AtomicBool>,
    options: CaptureOptions,
) -> Result<(), String> {
    let sink = appsink(bin, "sink")?;
    sink.set_property("sync", options.paced);
    let info: Mutex<Option<gst_video::VideoInfo>> = Mutex::new(None);
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let (sample, targets) = next_sample(sink, &stopping, &slot)?;
                let decoded = Instant::now();
                let info = video_info(sink, &sample, &info)?;
                let buffer = sample
                    .buffer_owned()
                    .ok_or_else(|| fail(sink, "a video sample came without a buffer"))?;
                let pts = running_time(&sample, buffer.pts());
                let counters = &targets.counters;
                counters.touch();
                let index = counters.frames.fetch_add(1, Ordering::Relaxed);
                let mut frame = VideoFrame::from_buffer(buffer, &info, index)
                    .map_err(|e| fail(sink, &format!("video frame {index}: {e}")))?;
                if let Some(pts) = pts {
                    frame.meta.pts = pts;
                }
                frame.meta.pts += options.pts_offset;
                frame.meta.stamps = Stamps::new(decoded);
                targets.video.send(frame).map_err(closed)?;
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(())
}

/// Sets up the audio branch's appsinks `sink16k` and `sink44k`: each sample becomes an
/// [`AudioBlock`] of that rate delivered into the slot's targets.
pub(super) fn attach_audio_sinks(
    bin: &gst::Bin,
    slot: TargetSlot,
    stopping: Arc<AtomicBool>,
    options: CaptureOptions,
) -> Result<(), String> {
    for (name, rate) in [("sink16k", 16_000u32), ("sink44k", 44_100u32)] {
        let sink = appsink(bin, name)?;
        sink.set_property("sync", options.paced);
        let slot = slot.clone();
        let stopping = stopping.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let (sample, targets) = next_sample(sink, &stopping, &slot)?;
                    let buffer = sample
                        .buffer()
                        .ok_or_else(|| fail(sink, "an audio sample came without a buffer"))?;
                    let pts = running_time(&sample, buffer.pts()).map(|p| p + options.pts_offset);
                    targets.counters.touch();
                    let map = buffer.map_readable().map_err(|_| {
                        fail(
                            sink,
                            &format!("cannot map a {}-byte audio buffer", buffer.size()),
                        )
                    })?;
                    let samples: Vec<f32> = map
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    targets
                        .audio
                        .send(AudioBlock { rate, pts, samples })
                        .map_err(closed)?;
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::delivery::CaptureTargets;
    use crate::capture::{Capture, CaptureError, Source};

    /// Runs `description` (its appsink named `sink`) with the video callbacks as a capture
    /// of `source`, and returns how the bus loop says it ended.
    fn run_video_sink(description: &str, source: &Source) -> Result<(), CaptureError> {
        gst::init().unwrap();
        let pipeline = gst::parse::launch(description)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let (targets, _outputs) = CaptureTargets::channels(false);
        let slot: TargetSlot = Arc::new(Mutex::new(Some(targets.clone())));
        let stopping = Arc::new(AtomicBool::new(false));
        attach_video_sink(
            pipeline.upcast_ref::<gst::Bin>(),
            slot.clone(),
            stopping.clone(),
            CaptureOptions::default(),
        )
        .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let capture = Capture {
            pipeline,
            source: source.clone(),
            counters: targets.counters.clone(),
            stopping,
            slot,
            live: false,
        };
        capture
            .poll(Some(Duration::from_secs(10)))
            .expect("the pipeline ended within 10 s")
    }

    #[test]
    fn a_video_callback_that_fails_says_why_through_the_bus() {
        // Audio caps on the video sink: the callback cannot read them as video.
        let source = Source::parse("rtsp://admin:hunter2@127.0.0.1:9/cam").unwrap();
        let error = run_video_sink(
            "audiotestsrc num-buffers=3 ! audio/x-raw,format=F32LE,rate=16000,channels=1 \
             ! appsink name=sink",
            &source,
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, CaptureError::Decode { .. }), "{message}");
        assert!(
            message.starts_with("cannot decode 'rtsp://admin:***@127.0.0.1:9/cam'"),
            "{message}"
        );
        assert!(
            message.contains("the video caps cannot be read"),
            "{message}"
        );
        assert!(message.contains("audio/x-raw"), "{message}");
        assert!(!message.contains("Internal data stream error"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn video_frames_reach_the_stage_with_their_timeline() {
        gst::init().unwrap();
        let pipeline = gst::parse::launch(
            "videotestsrc num-buffers=5 ! video/x-raw,format=RGB,width=33,height=8,framerate=10/1 \
             ! appsink name=sink",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let (targets, outputs) = CaptureTargets::channels(false);
        let slot: TargetSlot = Arc::new(Mutex::new(Some(targets.clone())));
        let options = CaptureOptions {
            pts_offset: Duration::from_secs(7),
            ..CaptureOptions::default()
        };
        attach_video_sink(
            pipeline.upcast_ref::<gst::Bin>(),
            slot,
            Arc::new(AtomicBool::new(false)),
            options,
        )
        .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let frames: Vec<VideoFrame> = (0..5)
            .map(|_| outputs.video.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        pipeline.set_state(gst::State::Null).unwrap();
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(frame.meta.index, i as u64);
            assert_eq!(frame.meta.pts, Duration::from_millis(7000 + 100 * i as u64));
            assert_eq!(frame.meta.duration, Duration::from_millis(100));
            assert_eq!((frame.meta.width, frame.meta.height), (33, 8));
            assert_eq!(frame.rgb().map_or(0, <[u8]>::len), 33 * 8 * 3); // rows of 99 bytes, unpadded
        }
        assert_eq!(targets.counters.frames.load(Ordering::Relaxed), 5);
    }
}
