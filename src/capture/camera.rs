//! A camera as a capture source: `v4l2src` (pipelines/camera.txt) decoded and linked to the
//! same video branch and appsink as files, so frames are the same [`VideoFrame`]s with
//! timestamps on the pipeline's running time. The camera has no audio: the microphone
//! (see [`super::microphone`]) is stamped against [`Capture::stream_clock`] instead.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Receiver;
use gstreamer as gst;
use gstreamer::prelude::*;

use super::{
    Capture, CaptureError, CaptureOptions, CaptureTargets, Source, TargetSlot, VIDEO_BRANCH,
    VideoFrame, attach_video_sink, first_bus_error, init,
};

/// The current time on the clock video timestamps use (e.g. the capture pipeline's running
/// time), so audio from another device (the microphone) lines up with the video by timestamp.
pub type StreamClock = Arc<dyn Fn() -> Duration + Send + Sync>;

const CAMERA: &str = include_str!("../../pipelines/camera.txt");

/// The device node of camera `index` (`/dev/video<index>`).
pub fn camera_device(index: u32) -> PathBuf {
    PathBuf::from(format!("/dev/video{index}"))
}

/// The camera pipeline for `device`: pipelines/camera.txt, then the video branch files use.
pub fn camera_description(device: &Path) -> String {
    format!(
        "{} ! {}",
        CAMERA
            .trim()
            .replace("{device}", &device.display().to_string()),
        VIDEO_BRANCH.trim()
    )
}

impl Source {
    /// The camera `/dev/video<index>` as a source.
    pub fn camera(index: u32) -> Self {
        let device = camera_device(index);
        Self {
            name: format!("camera {index} ({})", device.display()),
            uri: format!("v4l2://{}", device.display()),
            path: None,
            secrets: Vec::new(),
        }
    }
}

impl Capture {
    /// Starts camera `index` (video only). Returns the capture and its video channel.
    pub fn start_camera(index: u32) -> Result<(Self, Receiver<VideoFrame>), CaptureError> {
        init()?;
        let source = Source::camera(index);
        let device = camera_device(index);
        if !device.exists() {
            return Err(CaptureError::Open {
                source_name: source.name,
                message: format!(
                    "no camera found ({} missing); choose a source with --source file.mp4",
                    device.display()
                ),
            });
        }
        let description = camera_description(&device);
        let setup = |e: &dyn std::fmt::Display| CaptureError::Setup(e.to_string());
        let element = gst::parse::launch(&description).map_err(|e| setup(&e))?;
        let pipeline = element
            .downcast::<gst::Pipeline>()
            .map_err(|_| CaptureError::Setup("the camera description is not a pipeline".into()))?;
        // A camera is live: a full queue drops its oldest frame (counted), never blocks.
        let (targets, outputs) = CaptureTargets::channels(true);
        let slot: TargetSlot = Arc::new(Mutex::new(Some(targets.clone())));
        let stopping = Arc::new(AtomicBool::new(false));
        let options = CaptureOptions {
            live: true,
            ..CaptureOptions::default()
        };
        attach_video_sink(
            pipeline.upcast_ref::<gst::Bin>(),
            slot.clone(),
            stopping.clone(),
            options,
        )
        .map_err(|e| setup(&e))?;
        if pipeline.set_state(gst::State::Playing).is_err() {
            let message =
                first_bus_error(&pipeline).unwrap_or_else(|| "the camera refused to start".into());
            pipeline.set_state(gst::State::Null).ok();
            return Err(CaptureError::Open {
                source_name: source.name,
                message,
            });
        }
        Ok((
            Self {
                pipeline,
                source,
                counters: targets.counters.clone(),
                stopping,
                slot,
                live: true,
            },
            outputs.video,
        ))
    }

    /// The pipeline's running time now: the clock the video frames' timestamps are on.
    pub fn stream_clock(&self) -> StreamClock {
        let pipeline = self.pipeline.downgrade();
        Arc::new(move || {
            pipeline
                .upgrade()
                .and_then(|p| p.current_running_time())
                .map(|t| Duration::from_nanos(t.nseconds()))
                .unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_camera_description_is_a_pipeline_ending_in_the_video_appsink() {
        init().unwrap();
        let description = camera_description(Path::new("/dev/video57"));
        assert!(description.starts_with("v4l2src device=/dev/video57 "));
        let pipeline = gst::parse::launch(&description)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        assert!(pipeline.by_name("sink").is_some());
    }

    #[test]
    fn a_missing_camera_names_its_device_and_the_way_out() {
        let Err(e) = Capture::start_camera(57) else {
            panic!("/dev/video57 opened");
        };
        let message = e.to_string();
        assert!(
            message.contains("no camera found (/dev/video57 missing)"),
            "{message}"
        );
        assert!(message.contains("--source file.mp4"), "{message}");
    }
}
