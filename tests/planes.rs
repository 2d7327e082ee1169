//! The decoder's planes against packed RGB on real frames: the same frames decoded both ways
//! (the capture's video branch, and GStreamer's `videoconvert` to RGB as the pipeline did
//! before), the faces found on each, and every crop kind the face ensemble cuts compared by
//! mean absolute error.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use opencv::prelude::*;

use affectstream::capture::{Capture, PixelFormat, Source, VideoFrame};
use affectstream::encode::runtime::DeviceRequest;
use affectstream::face::crop::{
    CropColor, extract_box_padded, extract_box_padded_from, extract_crop, extract_crop_from,
    plane_mat,
};
use affectstream::pipeline::{Models, RunOptions};

/// Frames compared per clip (spread over its first seconds).
const FRAMES: usize = 6;
/// Every `STEP`-th decoded frame is compared.
const STEP: usize = 15;

/// The first `FRAMES` every-`STEP`-th frames of `path` as packed RGB (videoconvert).
fn rgb_frames(path: &Path) -> Vec<VideoFrame> {
    gst::init().unwrap();
    let uri = gst::glib::filename_to_uri(path, None).unwrap();
    let pipeline = gst::parse::launch(&format!(
        "uridecodebin uri={uri} ! videoflip video-direction=auto ! videoconvert \
         ! video/x-raw,format=RGB ! appsink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut frames = Vec::new();
    let mut index = 0;
    while frames.len() < FRAMES {
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) else {
            break;
        };
        if index % STEP == 0 {
            let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
            let buffer = sample.buffer_owned().unwrap();
            frames.push(VideoFrame::from_buffer(buffer, &info, index as u64).unwrap());
        }
        index += 1;
    }
    pipeline.set_state(gst::State::Null).unwrap();
    frames
}

/// The same frames through the capture's own video branch (the decoder's planes).
fn plane_frames(path: &Path) -> Vec<VideoFrame> {
    let source = Source::parse(path.to_str().unwrap()).unwrap();
    let (capture, outputs) = Capture::start(&source).unwrap();
    let mut frames = Vec::new();
    let mut index = 0;
    while frames.len() < FRAMES {
        let Ok(frame) = outputs.video.recv_timeout(Duration::from_secs(10)) else {
            break;
        };
        if index % STEP == 0 {
            frames.push(frame);
        }
        index += 1;
    }
    drop(outputs);
    drop(capture);
    frames
}

fn mae(a: &opencv::core::Mat, b: &opencv::core::Mat) -> f64 {
    errors(a, b).0
}

/// Mean absolute error, mean difference (`b - a`) and the mean absolute error left once that
/// difference is taken out, in 8-bit levels.
fn errors(a: &opencv::core::Mat, b: &opencv::core::Mat) -> (f64, f64, f64) {
    let (a, b) = (a.data_bytes().unwrap(), b.data_bytes().unwrap());
    assert_eq!(a.len(), b.len());
    let n = a.len() as f64;
    let diff = |(x, y): (&u8, &u8)| f64::from(*y) - f64::from(*x);
    let mae = a.iter().zip(b).map(|p| diff(p).abs()).sum::<f64>() / n;
    let bias = a.iter().zip(b).map(diff).sum::<f64>() / n;
    let centred = a.iter().zip(b).map(|p| (diff(p) - bias).abs()).sum::<f64>() / n;
    (mae, bias, centred)
}

/// GStreamer 1.22's `videoconvert` (the RGB reference) comes out about 2 levels darker than
/// the BT.601/BT.709 formulas the planes are converted with (limited-range white, Y 235,
/// becomes 253, not 255): the crops may differ by that much on average, and by little once
/// that offset is taken out.
const MAX_MAE: f64 = 3.5;
const MAX_CENTRED_MAE: f64 = 2.0;

/// Crops from planes and from RGB of the faces found on `clip`'s frames: returns the worst
/// mean absolute error and the worst once the mean difference is taken out over the crop
/// kinds, and checks the detections agree.
fn compare(clip: &str, format: PixelFormat) -> (f64, f64) {
    let path = common::testdata().join(clip);
    let rgb = rgb_frames(&path);
    let planes = plane_frames(&path);
    assert_eq!(rgb.len(), FRAMES, "{clip}: RGB frames");
    assert_eq!(planes.len(), FRAMES, "{clip}: plane frames");
    let options = RunOptions {
        device: DeviceRequest::Cpu,
        ..RunOptions::new("")
    };
    let mut models = Models::load(&options).expect("models (run scripts/setup.sh)");
    models.face.set_score_threshold(0.6);
    let kinds = [
        (true, 48, CropColor::Gray),
        (true, 64, CropColor::Gray),
        (true, 64, CropColor::Rgb),
        (true, 224, CropColor::Bgr),
        (false, 112, CropColor::Rgb),
        (false, 48, CropColor::Gray),
    ];
    let (mut worst, mut worst_centred) = (0.0f64, 0.0f64);
    let mut compared = 0;
    for (rgb_frame, plane_frame) in rgb.into_iter().zip(planes) {
        assert_eq!(plane_frame.format(), format, "{clip}: decoded format");
        assert_eq!(rgb_frame.meta.index, plane_frame.meta.index);
        models.face.reset();
        let from_rgb = models.face.process(rgb_frame).unwrap();
        models.face.reset();
        let from_planes = models.face.process(plane_frame).unwrap();
        assert_eq!(
            from_rgb.faces.len(),
            from_planes.faces.len(),
            "{clip}: faces found on RGB and on planes"
        );
        let rgb_image = from_rgb.frame.image();
        let rgb_mat = plane_mat(&rgb_image.main).unwrap();
        let plane_image = from_planes.frame.image();
        for (a, b) in from_rgb.faces.iter().zip(&from_planes.faces) {
            let iou = a.detection.bbox.iou(&b.detection.bbox);
            assert!(iou > 0.9, "{clip}: boxes {a:?} and {b:?} overlap {iou}");
            for (aligned, side, color) in kinds {
                let (reference, cut) = if aligned {
                    (
                        extract_crop(&rgb_mat, &a.crop, side, color).unwrap(),
                        extract_crop_from(&plane_image, &a.crop, side, color).unwrap(),
                    )
                } else {
                    (
                        extract_box_padded(&rgb_mat, &a.detection, 0.0, side, color).unwrap(),
                        extract_box_padded_from(&plane_image, &a.detection, 0.0, side, color)
                            .unwrap(),
                    )
                };
                let (e, bias, centred) = errors(&reference, &cut);
                eprintln!(
                    "{clip} frame {}: {} {side} {color:?}: MAE {e:.2}, mean difference \
                     {bias:+.2}, MAE without it {centred:.2}",
                    from_rgb.frame.meta.index,
                    if aligned { "aligned" } else { "box_pad" }
                );
                worst = worst.max(e);
                worst_centred = worst_centred.max(centred);
                compared += 1;
            }
        }
    }
    assert!(compared > 0, "{clip}: no face to compare");
    (worst, worst_centred)
}

#[test]
fn crops_from_i420_planes_match_crops_from_rgb_on_the_720p_stream() {
    let (worst, centred) = compare(
        "av/streams/obama_dnc2020_cspan_64s_720p.mp4",
        PixelFormat::I420,
    );
    assert!(worst <= MAX_MAE, "worst crop MAE {worst:.2}");
    assert!(
        centred <= MAX_CENTRED_MAE,
        "worst centred crop MAE {centred:.2}"
    );
}

#[test]
fn crops_from_i420_planes_match_crops_from_rgb_on_a_256_stream() {
    let (worst, centred) = compare("av/streams/tedlieu_60s_256.mp4", PixelFormat::I420);
    assert!(worst <= MAX_MAE, "worst crop MAE {worst:.2}");
    assert!(
        centred <= MAX_CENTRED_MAE,
        "worst centred crop MAE {centred:.2}"
    );
}

#[test]
fn crops_from_a_gray_jpeg_match_crops_from_rgb() {
    // A 48x48 FER2013 still: the decoder's GRAY8 plane.
    let path = common::testdata().join("faces/fer2013/happy");
    let mut stills: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    stills.sort();
    let clip = stills[0].strip_prefix(common::testdata()).unwrap();
    let path = common::testdata().join(clip);
    let rgb = rgb_frames(&path);
    let planes = plane_frames(&path);
    assert_eq!(planes[0].format(), PixelFormat::Gray);
    let rgb_image = rgb[0].image();
    let rgb_mat = plane_mat(&rgb_image.main).unwrap();
    let geom = affectstream::face::crop::CropGeometry {
        center: (24.0, 24.0),
        side: 48.0,
        angle_deg: 5.0,
    };
    let a = extract_crop(&rgb_mat, &geom, 64, CropColor::Gray).unwrap();
    let b = extract_crop_from(&planes[0].image(), &geom, 64, CropColor::Gray).unwrap();
    assert!(mae(&a, &b) <= 0.5, "MAE {}", mae(&a, &b));
}
