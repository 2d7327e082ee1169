//! Face detectors: YuNet through ONNX Runtime (primary: about 3x faster than OpenCV's DNN on
//! the same weights), and OpenCV's Haar cascade as a fallback when no YuNet file is available.

use std::path::Path;

use super::FaceError;
use super::crop::{FrameMat, plane_mat};
use super::detection::{BBox, Detection, StrideOutputs, decode_yunet, nms};
use crate::capture::{Chroma, FrameImage, PixelFormat};
use crate::runtime::Runtime;
use crate::runtime::batch::BatchPolicy;
use crate::runtime::batched_session::{BatchedSession, SessionBackend, SessionClient, TensorItem};
use opencv::core::{self as cv, Mat, Size, Vector};
use opencv::imgproc;
use opencv::objdetect::CascadeClassifier;
use opencv::prelude::*;

/// Detector settings.
#[derive(Debug, Clone, Copy)]
pub struct DetectorConfig {
    /// Frames are shrunk so their long side is at most this many pixels before detection.
    pub max_side: u32,
    /// Frames smaller than this (long side) are enlarged to it, so tiny images still work.
    pub min_side: u32,
    /// Minimum detector score; about 0.9 keeps background objects out.
    pub score_threshold: f32,
    /// IoU above which overlapping detections are merged.
    pub nms_iou: f32,
    /// At most this many faces per frame (best scores kept).
    pub max_faces: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            max_side: 320,
            min_side: 160,
            score_threshold: 0.9,
            nms_iou: 0.3,
            max_faces: 16,
        }
    }
}

/// A face detector working on a frame's planes (or packed RGB).
pub enum FaceDetector {
    /// YuNet through ONNX Runtime.
    YuNet(Box<YuNet>),
    /// OpenCV Haar cascade (no landmarks, no real score).
    Haar(Box<Haar>),
}

impl FaceDetector {
    /// Detections in frame pixels, best score first.
    pub fn detect(&mut self, frame: &FrameImage<'_>) -> Result<Vec<Detection>, FaceError> {
        match self {
            FaceDetector::YuNet(d) => d.detect(frame),
            FaceDetector::Haar(d) => d.detect(frame),
        }
    }

    /// Tells the shared detector this stream's frame needs no detection, so a batch of the
    /// other streams' frames does not wait for it.
    pub fn idle(&self) {
        if let FaceDetector::YuNet(d) = self {
            d.session.skip();
        }
    }

    /// Changes the minimum detector score (YuNet; the Haar cascade has no score).
    pub fn set_score_threshold(&mut self, threshold: f32) {
        match self {
            FaceDetector::YuNet(d) => d.config.score_threshold = threshold,
            FaceDetector::Haar(d) => d.config.score_threshold = threshold,
        }
    }

    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            FaceDetector::YuNet(_) => "yunet",
            FaceDetector::Haar(_) => "haar",
        }
    }
}

/// The detector model loaded once per process: YuNet behind a cross-stream batcher (frames of
/// the same input size share an inference), or the Haar cascade's file (each stream loads its
/// own classifier: OpenCV's is not shared between threads). Cheap to clone.
#[derive(Clone)]
pub enum SharedDetector {
    /// YuNet through ONNX Runtime.
    YuNet {
        /// The shared session.
        session: BatchedSession,
        /// Its strides.
        strides: Vec<u32>,
        /// Index of the cls, obj, bbox and kps outputs of each stride.
        heads: Vec<[usize; 4]>,
        /// Fixed input size of a static model ([0, 0] for the dynamic one).
        fixed_size: [u32; 2],
    },
    /// The Haar cascade at this path.
    Haar(std::path::PathBuf),
}

impl SharedDetector {
    /// Loads the YuNet model at `path` (its outputs checked against `strides`) behind a
    /// batcher with the detector policy of the runtime's provider; shapes are warmed when
    /// first seen (the frame size is not known before).
    pub fn yunet(
        runtime: &Runtime,
        path: &Path,
        strides: Vec<u32>,
        fixed_size: [u32; 2],
    ) -> Result<Self, FaceError> {
        let session = runtime.session(path)?;
        let outputs: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect();
        let mut heads = Vec::with_capacity(strides.len());
        for s in &strides {
            let mut index = [0usize; 4];
            for (slot, head) in index.iter_mut().zip(["cls", "obj", "bbox", "kps"]) {
                let name = format!("{head}_{s}");
                *slot = outputs.iter().position(|o| *o == name).ok_or_else(|| {
                    FaceError::WrongModel {
                        path: path.to_owned(),
                        message: format!("no output '{name}' (outputs: {})", outputs.join(", ")),
                    }
                })?;
            }
            heads.push(index);
        }
        let input = session
            .inputs()
            .first()
            .map(|i| i.name().to_owned())
            .unwrap_or_else(|| "input".into());
        let session = SessionBackend::new(session, input).start(
            "face_detector",
            BatchPolicy::detector(runtime.provider()),
            &[],
        )?;
        Ok(Self::YuNet {
            session,
            strides,
            heads,
            fixed_size,
        })
    }

    /// A detector for one more stream: its own settings and buffers, the shared model.
    pub fn detector(&self, config: DetectorConfig) -> Result<FaceDetector, FaceError> {
        Ok(match self {
            SharedDetector::YuNet {
                session,
                strides,
                heads,
                fixed_size,
            } => FaceDetector::YuNet(Box::new(YuNet {
                session: session.client(),
                config,
                strides: strides.clone(),
                heads: heads.clone(),
                fixed_size: *fixed_size,
                resized: Mat::default(),
                chroma: [Mat::default(), Mat::default()],
                halves: [Mat::default(), Mat::default()],
                input: Vec::new(),
                input_size: (0, 0),
            })),
            SharedDetector::Haar(path) => FaceDetector::Haar(Box::new(Haar::new(path, config)?)),
        })
    }

    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            SharedDetector::YuNet { .. } => "yunet",
            SharedDetector::Haar(_) => "haar",
        }
    }
}

/// YuNet for one stream: its handle on the shared session, reused resize and input buffers.
pub struct YuNet {
    session: SessionClient,
    config: DetectorConfig,
    strides: Vec<u32>,
    /// Index of the cls, obj, bbox and kps outputs of each stride.
    heads: Vec<[usize; 4]>,
    /// Fixed input size of a static model ([0, 0] for the dynamic one).
    fixed_size: [u32; 2],
    /// The RGB or luma plane at the detector's size.
    resized: Mat,
    /// The chroma plane(s) at the detector's size.
    chroma: [Mat; 2],
    /// Scratch planes of the halvings on the way to the detector's size.
    halves: [Mat; 2],
    input: Vec<f32>,
    input_size: (u32, u32),
}

fn round_up_32(v: u32) -> u32 {
    v.div_ceil(32).max(1) * 32
}

/// Where a frame goes in the detector's input tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorGeometry {
    /// Frame pixels → input pixels.
    pub scale: f32,
    /// Size of the resized frame.
    pub resized: (u32, u32),
    /// Size of the input tensor (multiples of 32 for the dynamic model).
    pub tensor: (u32, u32),
}

/// Detector input geometry for a `w` x `h` frame. Large frames are shrunk to `max_side`, small
/// ones (stills, thumbnails) enlarged to `min_side`; the frame sits at the top-left of a
/// zero-padded tensor. (Centring small images on a larger canvas was tried: on FER2013 stills
/// it missed more faces, 9 vs 5 of 210.)
pub fn detector_geometry(
    w: u32,
    h: u32,
    config: &DetectorConfig,
    fixed_size: [u32; 2],
) -> DetectorGeometry {
    let (w, h) = (w.max(1), h.max(1));
    let long = w.max(h) as f32;
    if fixed_size[0] > 0 {
        let scale = (fixed_size[0] as f32 / w as f32).min(fixed_size[1] as f32 / h as f32);
        let resized = (
            ((w as f32 * scale).round() as u32).clamp(1, fixed_size[0]),
            ((h as f32 * scale).round() as u32).clamp(1, fixed_size[1]),
        );
        return DetectorGeometry {
            scale,
            resized,
            tensor: (fixed_size[0], fixed_size[1]),
        };
    }
    let small = long < config.min_side as f32;
    let scale = if long > config.max_side as f32 {
        config.max_side as f32 / long
    } else if small {
        config.min_side as f32 / long
    } else {
        1.0
    };
    let rw = ((w as f32 * scale).round() as u32).max(1);
    let rh = ((h as f32 * scale).round() as u32).max(1);
    DetectorGeometry {
        scale,
        resized: (rw, rh),
        tensor: (round_up_32(rw), round_up_32(rh)),
    }
}

impl YuNet {
    /// A YuNet for one stream on its own session (not shared with other streams).
    pub fn new(
        runtime: &Runtime,
        path: &Path,
        strides: Vec<u32>,
        fixed_size: [u32; 2],
        config: DetectorConfig,
    ) -> Result<Self, FaceError> {
        match SharedDetector::yunet(runtime, path, strides, fixed_size)?.detector(config)? {
            FaceDetector::YuNet(yunet) => Ok(*yunet),
            FaceDetector::Haar(_) => Err(FaceError::WrongModel {
                path: path.to_owned(),
                message: "not a YuNet model".into(),
            }),
        }
    }

    /// Detects faces in a frame: its planes shrunk to the detector's size (area averaging),
    /// converted to BGR floats in one pass; no full-size RGB image is made.
    pub fn detect(&mut self, frame: &FrameImage<'_>) -> Result<Vec<Detection>, FaceError> {
        let (w, h) = (frame.width, frame.height);
        let DetectorGeometry {
            scale,
            resized: (rw, rh),
            tensor: (tw, th),
        } = detector_geometry(w, h, &self.config, self.fixed_size);
        if self.input_size != (tw, th) || self.input.len() != 3 * (tw * th) as usize {
            self.input = vec![0.0; 3 * (tw * th) as usize];
            self.input_size = (tw, th);
        }
        self.fill_input(frame, (rw, rh), tw)?;
        // The input buffer travels to the shared session and comes back with the outputs.
        let item = TensorItem {
            data: std::mem::take(&mut self.input),
            dims: vec![3, th as usize, tw as usize],
        };
        let mut out = self
            .session
            .run(vec![item])?
            .pop()
            .ok_or_else(|| FaceError::WrongModel {
                path: self.session.name().into(),
                message: "no output for the frame".into(),
            })?;
        self.input = std::mem::take(&mut out.input);
        let mut per_stride = Vec::with_capacity(self.strides.len());
        for (&s, &[cls, obj, bbox, kps]) in self.strides.iter().zip(&self.heads) {
            let get = |i: usize| -> Result<&[f32], FaceError> {
                out.outputs
                    .get(i)
                    .map(Vec::as_slice)
                    .ok_or_else(|| FaceError::WrongModel {
                        path: self.session.name().into(),
                        message: format!("output {i} missing"),
                    })
            };
            per_stride.push(StrideOutputs {
                stride: s,
                cls: get(cls)?,
                obj: get(obj)?,
                bbox: get(bbox)?,
                kps: get(kps)?,
            });
        }
        let raw = decode_yunet(&per_stride, tw, th, self.config.score_threshold);
        let mut dets = nms(raw, self.config.nms_iou);
        dets.truncate(self.config.max_faces);
        for d in &mut dets {
            d.bbox = d.bbox.unscaled(scale);
            if let Some(lm) = &mut d.landmarks {
                for p in lm.iter_mut() {
                    *p = [p[0] / scale, p[1] / scale];
                }
            }
        }
        Ok(dets)
    }
}

/// `src` resized to `size` into `dst` (area averaging when shrinking, bilinear when
/// enlarging); false when it already has that size (then use `src` itself). While the plane is
/// an even whole multiple of the target on both sides it is first halved (OpenCV's vectorised
/// 2x2 average, into `halves`): OpenCV averages other whole factors pixel by pixel, and a 720p
/// luma plane took 0.26 ms to reach 320x180 in one step against 0.04 ms in two halvings, within
/// one grey level of it.
fn resize_plane(
    src: &impl FrameMat,
    dst: &mut Mat,
    size: Size,
    halves: &mut [Mat; 2],
) -> opencv::Result<bool> {
    let (w0, h0) = (src.cols(), src.rows());
    let (mut w, mut h) = (w0, h0);
    if (w, h) == (size.width, size.height) {
        return Ok(false);
    }
    if size.width >= w {
        imgproc::resize(src, dst, size, 0.0, 0.0, imgproc::INTER_LINEAR)?;
        return Ok(true);
    }
    // Halvings while an even whole factor is left, then the rest (a whole factor too when the
    // first was one) unless they land on the target.
    let mut halvings = 0;
    while size.width > 0
        && size.height > 0
        && w % (2 * size.width) == 0
        && h % (2 * size.height) == 0
    {
        (w, h) = (w / 2, h / 2);
        halvings += 1;
    }
    let steps = halvings + usize::from((w, h) != (size.width, size.height));
    for step in 0..steps {
        let to = if step < halvings {
            Size::new(w0 >> (step + 1), h0 >> (step + 1))
        } else {
            size
        };
        let last = step + 1 == steps;
        let [a, b] = &mut *halves;
        let (from, scratch) = if step % 2 == 1 { (&*a, b) } else { (&*b, a) };
        let out = if last { &mut *dst } else { scratch };
        if step == 0 {
            imgproc::resize(src, out, to, 0.0, 0.0, imgproc::INTER_AREA)?;
        } else {
            imgproc::resize(from, out, to, 0.0, 0.0, imgproc::INTER_AREA)?;
        }
    }
    Ok(true)
}

impl YuNet {
    /// Writes `frame` at `rw` x `rh` as planar BGR floats 0..255 into the top-left of the
    /// zero-padded `tw`-wide input tensor: each plane resized on its own (the chroma straight
    /// from its subsampled size), then converted pixel by pixel.
    fn fill_input(
        &mut self,
        frame: &FrameImage<'_>,
        (rw, rh): (u32, u32),
        tw: u32,
    ) -> Result<(), FaceError> {
        let size = Size::new(rw as i32, rh as i32);
        let main = plane_mat(&frame.main)?;
        let Self {
            resized,
            chroma,
            halves,
            input,
            input_size,
            ..
        } = self;
        let main: &[u8] = if resize_plane(&main, resized, size, halves)? {
            resized.data_bytes()?
        } else {
            frame.main.data
        };
        let mut chroma_bytes: [&[u8]; 2] = [&[], &[]];
        let planes = match frame.chroma {
            Chroma::None => vec![],
            Chroma::Planar(u, v) => vec![u, v],
            Chroma::Interleaved(uv) => vec![uv],
        };
        for ((plane, scratch), bytes) in planes.iter().zip(chroma.iter_mut()).zip(&mut chroma_bytes)
        {
            let mat = plane_mat(plane)?;
            *bytes = if resize_plane(&mat, scratch, size, halves)? {
                scratch.data_bytes()?
            } else {
                plane.data
            };
        }
        let plane = (input_size.0 * input_size.1) as usize;
        let (rw, rh, tw) = (rw as usize, rh as usize, tw as usize);
        let (b_plane, rest) = input.split_at_mut(plane);
        let (g_plane, r_plane) = rest.split_at_mut(plane);
        let convert = frame.color.converter();
        for y in 0..rh {
            let (o, row) = (y * tw, y * rw);
            let out = Rows {
                r: &mut r_plane[o..o + rw],
                g: &mut g_plane[o..o + rw],
                b: &mut b_plane[o..o + rw],
            };
            match (frame.format, &frame.chroma) {
                (PixelFormat::Rgb, _) => out.fill(
                    main[row * 3..(row + rw) * 3]
                        .chunks_exact(3)
                        .map(|px| [px[0], px[1], px[2]]),
                ),
                (_, Chroma::None) => out.fill(main[row..row + rw].iter().map(|&l| [l, l, l])),
                (_, Chroma::Planar(..)) => {
                    convert.rgb_row_f32(
                        &main[row..row + rw],
                        &chroma_bytes[0][row..row + rw],
                        &chroma_bytes[1][row..row + rw],
                        [out.r, out.g, out.b],
                    );
                }
                (_, Chroma::Interleaved(_)) => {
                    let (l, uv) = (
                        &main[row..row + rw],
                        &chroma_bytes[0][2 * row..2 * (row + rw)],
                    );
                    out.fill(
                        l.iter()
                            .zip(uv.chunks_exact(2))
                            .map(|(&l, uv)| convert.rgb(l, uv[0], uv[1])),
                    );
                }
            }
        }
        Ok(())
    }
}

/// OpenCV's Haar cascade on the luma of the frame.
pub struct Haar {
    classifier: CascadeClassifier,
    config: DetectorConfig,
    gray: Mat,
    equalized: Mat,
}

/// Score reported for Haar detections, which have none of their own.
pub const HAAR_NOMINAL_SCORE: f32 = 0.8;

impl Haar {
    /// Loads the cascade XML at `path`.
    pub fn new(path: &Path, config: DetectorConfig) -> Result<Self, FaceError> {
        let classifier = CascadeClassifier::new(path)?;
        if classifier.empty()? {
            return Err(FaceError::WrongModel {
                path: path.to_owned(),
                message: "not a Haar cascade OpenCV can load".into(),
            });
        }
        Ok(Self {
            classifier,
            config,
            gray: Mat::default(),
            equalized: Mat::default(),
        })
    }

    /// Detects faces in a frame: on its luma plane (gray of an RGB frame).
    pub fn detect(&mut self, frame: &FrameImage<'_>) -> Result<Vec<Detection>, FaceError> {
        let main = plane_mat(&frame.main)?;
        if frame.format == PixelFormat::Rgb {
            imgproc::cvt_color(&main, &mut self.gray, imgproc::COLOR_RGB2GRAY, 0)?;
            imgproc::equalize_hist(&self.gray, &mut self.equalized)?;
        } else {
            imgproc::equalize_hist(&main, &mut self.equalized)?;
        }
        let mut rects = Vector::<cv::Rect>::new();
        let min = (frame.width.min(frame.height) as i32 / 10).max(24);
        self.classifier.detect_multi_scale(
            &self.equalized,
            &mut rects,
            1.1,
            5,
            0,
            Size::new(min, min),
            Size::default(),
        )?;
        let mut dets: Vec<Detection> = rects
            .iter()
            .map(|r| Detection {
                bbox: BBox {
                    x: r.x as f32,
                    y: r.y as f32,
                    w: r.width as f32,
                    h: r.height as f32,
                },
                score: HAAR_NOMINAL_SCORE,
                landmarks: None,
            })
            .collect();
        dets.sort_by(|a, b| b.bbox.area().total_cmp(&a.bbox.area()));
        dets.truncate(self.config.max_faces);
        Ok(dets)
    }
}

/// One row of the detector's planar input, written from RGB pixels.
struct Rows<'a> {
    r: &'a mut [f32],
    g: &'a mut [f32],
    b: &'a mut [f32],
}

impl Rows<'_> {
    /// Writes `pixels` (RGB, one per column) as floats 0..255.
    #[inline]
    fn fill(self, pixels: impl Iterator<Item = [u8; 3]>) {
        for (((r, g), b), px) in self
            .r
            .iter_mut()
            .zip(self.g.iter_mut())
            .zip(self.b.iter_mut())
            .zip(pixels)
        {
            *r = f32::from(px[0]);
            *g = f32::from(px[1]);
            *b = f32::from(px[2]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{CV_8UC1, Scalar};

    /// A plane with detail at every scale (a hashed pattern).
    fn pattern(w: i32, h: i32) -> Mat {
        let mut m = Mat::new_rows_cols_with_default(h, w, CV_8UC1, Scalar::all(0.0)).unwrap();
        for (i, p) in m.data_bytes_mut().unwrap().iter_mut().enumerate() {
            *p = ((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8;
        }
        m
    }

    #[test]
    fn planes_shrink_by_halving_to_what_one_area_resize_gives() {
        let mut halves = [Mat::default(), Mat::default()];
        // 720p (two halvings), 1080p (one, then a third), odd sides and a factor that is not
        // whole on one side (one step), 360p (one halving).
        for ((w, h), (tw, th)) in [
            ((1280, 720), (320, 180)),
            ((1920, 1080), (320, 180)),
            ((1281, 721), (320, 180)),
            ((640, 480), (160, 100)),
            ((640, 360), (320, 180)),
        ] {
            let src = pattern(w, h);
            let size = Size::new(tw, th);
            let mut fast = Mat::default();
            assert!(resize_plane(&src, &mut fast, size, &mut halves).unwrap());
            let mut direct = Mat::default();
            imgproc::resize(&src, &mut direct, size, 0.0, 0.0, imgproc::INTER_AREA).unwrap();
            assert_eq!((fast.cols(), fast.rows()), (tw, th));
            let worst = fast
                .data_bytes()
                .unwrap()
                .iter()
                .zip(direct.data_bytes().unwrap())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(worst <= 1, "{w}x{h} -> {tw}x{th}: off by {worst}");
        }
        let same = pattern(320, 180);
        let mut out = Mat::default();
        assert!(!resize_plane(&same, &mut out, Size::new(320, 180), &mut halves).unwrap());
    }

    #[test]
    fn detector_input_is_shrunk_enlarged_and_padded_to_multiples_of_32() {
        let c = DetectorConfig::default();
        let g = detector_geometry(1280, 720, &c, [0, 0]);
        assert!((g.scale - 0.25).abs() < 1e-6);
        assert_eq!((g.resized, g.tensor), ((320, 180), (320, 192)));
        let g = detector_geometry(256, 256, &c, [0, 0]);
        assert_eq!(
            (g.scale, g.resized, g.tensor),
            (1.0, (256, 256), (256, 256))
        );
        let g = detector_geometry(48, 48, &c, [0, 0]);
        assert!((g.scale - 160.0 / 48.0).abs() < 1e-5);
        assert_eq!((g.resized, g.tensor), ((160, 160), (160, 160)));
        let g = detector_geometry(1280, 720, &c, [640, 640]);
        assert_eq!((g.resized, g.tensor), ((640, 360), (640, 640)));
    }
}
