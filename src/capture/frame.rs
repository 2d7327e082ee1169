//! What a capture delivers: [`VideoFrame`]s (the decoder's planes — I420, NV12, ... — behind a
//! [`FrameMeta`] header that the stages carry on without the pixels) and [`AudioBlock`]s (mono
//! F32).

use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::VideoFrameExt;

use super::color::YuvColor;
use crate::metrics::Stamps;

/// How a frame's pixels are laid out: as the decoder gave them (the video branch converts
/// only formats outside this list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Packed R, G, B (frames built from RGB bytes, RGB decoders such as PNG).
    Rgb,
    /// Luma only (grayscale JPEGs), full range.
    Gray,
    /// Y, U and V planes, chroma halved both ways (software H.264/H.265/VP9 decoders).
    I420,
    /// A Y plane and an interleaved UV plane, chroma halved both ways (hardware decoders).
    Nv12,
    /// Y, U and V planes, chroma halved horizontally (4:2:2 JPEGs).
    Y42b,
    /// Y, U and V planes at full size (4:4:4 JPEGs).
    Y444,
}

impl PixelFormat {
    /// The GStreamer format this is, if it is one of ours.
    pub fn from_gst(format: gst_video::VideoFormat) -> Option<Self> {
        use gst_video::VideoFormat as F;
        Some(match format {
            F::Rgb => Self::Rgb,
            F::Gray8 => Self::Gray,
            F::I420 => Self::I420,
            F::Nv12 => Self::Nv12,
            F::Y42b => Self::Y42b,
            F::Y444 => Self::Y444,
            _ => return None,
        })
    }

    /// Chroma subsampling (horizontal, vertical); (1, 1) for RGB and gray.
    pub fn subsampling(self) -> (u32, u32) {
        match self {
            Self::Rgb | Self::Gray | Self::Y444 => (1, 1),
            Self::I420 | Self::Nv12 => (2, 2),
            Self::Y42b => (2, 1),
        }
    }

    /// (width, height, channels) of each plane of a `w` x `h` frame, in order.
    pub fn plane_shapes(self, w: u32, h: u32) -> Vec<(u32, u32, u32)> {
        let (sx, sy) = self.subsampling();
        let c = (w.div_ceil(sx), h.div_ceil(sy));
        match self {
            Self::Rgb => vec![(w, h, 3)],
            Self::Gray => vec![(w, h, 1)],
            Self::Nv12 => vec![(w, h, 1), (c.0, c.1, 2)],
            Self::I420 | Self::Y42b | Self::Y444 => vec![(w, h, 1), (c.0, c.1, 1), (c.0, c.1, 1)],
        }
    }
}

/// One plane of a frame, rows packed (no padding).
#[derive(Debug, Clone, Copy)]
pub struct Plane<'a> {
    /// `width * height * channels` bytes (checked by [`FrameImage::check`]).
    pub data: &'a [u8],
    /// Samples per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Bytes per sample: 3 (RGB), 2 (interleaved UV) or 1.
    pub channels: u32,
}

/// The chroma of a frame, as laid out.
#[derive(Debug, Clone, Copy)]
pub enum Chroma<'a> {
    /// None (RGB, gray).
    None,
    /// Separate U (Cb) and V (Cr) planes.
    Planar(Plane<'a>, Plane<'a>),
    /// One plane of U, V pairs.
    Interleaved(Plane<'a>),
}

/// A borrowed view of a frame's pixels: its format, planes and colour conversion.
#[derive(Debug, Clone, Copy)]
pub struct FrameImage<'a> {
    /// Pixel layout.
    pub format: PixelFormat,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// The RGB or luma plane.
    pub main: Plane<'a>,
    /// The chroma planes, if any.
    pub chroma: Chroma<'a>,
    /// How Y'CbCr becomes RGB.
    pub color: YuvColor,
}

impl FrameImage<'_> {
    /// Checks that every plane holds the bytes its size needs: `Err((len, expected))` for the
    /// first that does not.
    pub fn check(&self) -> Result<(), (usize, usize)> {
        let planes = match self.chroma {
            Chroma::None => vec![self.main],
            Chroma::Planar(u, v) => vec![self.main, u, v],
            Chroma::Interleaved(uv) => vec![self.main, uv],
        };
        let shapes = self.format.plane_shapes(self.width, self.height);
        for (plane, (w, h, c)) in planes.iter().zip(shapes) {
            let expected = (w * h * c) as usize;
            if plane.data.len() != expected || expected == 0 {
                return Err((plane.data.len(), expected));
            }
        }
        Ok(())
    }

    /// R, G, B of frame pixel (`x`, `y`) (nearest chroma sample); black outside the frame.
    pub fn rgb_at(&self, x: u32, y: u32, convert: &super::color::YuvToRgb) -> [u8; 3] {
        let (w, h) = (self.width, self.height);
        if x >= w || y >= h {
            return [0, 0, 0];
        }
        let at = |p: &Plane<'_>, px: u32, py: u32, c: u32| -> u8 {
            let i = ((py.min(p.height.saturating_sub(1)) * p.width
                + px.min(p.width.saturating_sub(1)))
                * p.channels
                + c) as usize;
            p.data.get(i).copied().unwrap_or(0)
        };
        if self.format == PixelFormat::Rgb {
            return [
                at(&self.main, x, y, 0),
                at(&self.main, x, y, 1),
                at(&self.main, x, y, 2),
            ];
        }
        let luma = at(&self.main, x, y, 0);
        let (sx, sy) = self.format.subsampling();
        let (cx, cy) = (x / sx, y / sy);
        let (u, v) = match &self.chroma {
            Chroma::None => return [luma; 3],
            Chroma::Planar(u, v) => (at(u, cx, cy, 0), at(v, cx, cy, 0)),
            Chroma::Interleaved(uv) => (at(uv, cx, cy, 0), at(uv, cx, cy, 1)),
        };
        convert.rgb(luma, u, v)
    }

    /// Packed RGB of every `step`-th pixel of every `step`-th row (nearest neighbour):
    /// `(width, height, bytes)`. `step` 1 converts the whole frame.
    pub fn sampled_rgb(&self, step: u32) -> (u32, u32, Vec<u8>) {
        let step = step.max(1);
        let (dw, dh) = (self.width.div_ceil(step), self.height.div_ceil(step));
        let convert = self.color.converter();
        let mut out = Vec::with_capacity(dw as usize * dh as usize * 3);
        for y in (0..self.height).step_by(step as usize) {
            for x in (0..self.width).step_by(step as usize) {
                out.extend_from_slice(&self.rgb_at(x, y, &convert));
            }
        }
        (dw, dh, out)
    }
}

/// Pixels of a decoded frame: the mapped GStreamer buffer when every plane's rows are tightly
/// packed (no copy), else packed copies of the planes.
enum Pixels {
    Mapped(Box<gst_video::VideoFrame<gst_video::video_frame::Readable>>),
    Owned(Vec<Vec<u8>>),
}

/// A [`VideoFrame`]'s header: what the frame was, carried through the stages without its pixels.
#[derive(Debug, Clone, Copy)]
pub struct FrameMeta {
    /// Frame number in decode order, from 0.
    pub index: u64,
    /// Stream time of the frame (presentation timestamp).
    pub pts: Duration,
    /// How long the frame is shown (from the buffer, else from the caps' frame rate).
    pub duration: Duration,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Decode instant and stage stamps.
    pub stamps: Stamps,
}

/// One decoded video frame: its header and its pixels as the decoder laid them out.
pub struct VideoFrame {
    /// What the frame is: index, timestamps, size, stage stamps.
    pub meta: FrameMeta,
    format: PixelFormat,
    color: YuvColor,
    pixels: Pixels,
}

impl Clone for VideoFrame {
    /// A copy that owns its planes (benches and tests reuse one decoded frame).
    fn clone(&self) -> Self {
        let image = self.image();
        let mut planes = vec![image.main.data.to_vec()];
        match image.chroma {
            Chroma::None => {}
            Chroma::Planar(u, v) => planes.extend([u.data.to_vec(), v.data.to_vec()]),
            Chroma::Interleaved(uv) => planes.push(uv.data.to_vec()),
        }
        Self {
            meta: self.meta,
            format: self.format,
            color: self.color,
            pixels: Pixels::Owned(planes),
        }
    }
}

impl VideoFrame {
    /// A frame from packed RGB bytes (tests, benches, still images).
    pub fn from_rgb(index: u64, pts: Duration, width: u32, height: u32, rgb: Vec<u8>) -> Self {
        Self {
            meta: FrameMeta {
                index,
                pts,
                duration: Duration::from_millis(40),
                width,
                height,
                stamps: Stamps::new(Instant::now()),
            },
            format: PixelFormat::Rgb,
            color: YuvColor::default(),
            pixels: Pixels::Owned(vec![rgb]),
        }
    }

    /// The frame's pixel layout.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// A view of the planes (what the face stage detects on and the encoder cuts crops from).
    pub fn image(&self) -> FrameImage<'_> {
        let (w, h) = (self.meta.width, self.meta.height);
        let shapes = self.format.plane_shapes(w, h);
        let plane = |i: usize| -> Plane<'_> {
            let (pw, ph, c) = shapes.get(i).copied().unwrap_or((0, 0, 1));
            let data: &[u8] = match &self.pixels {
                Pixels::Mapped(f) => f
                    .plane_data(i as u32)
                    .ok()
                    .and_then(|d| d.get(..(pw * ph * c) as usize))
                    .unwrap_or(&[]),
                Pixels::Owned(planes) => planes.get(i).map_or(&[], Vec::as_slice),
            };
            Plane {
                data,
                width: pw,
                height: ph,
                channels: c,
            }
        };
        let chroma = match self.format {
            PixelFormat::Rgb | PixelFormat::Gray => Chroma::None,
            PixelFormat::Nv12 => Chroma::Interleaved(plane(1)),
            PixelFormat::I420 | PixelFormat::Y42b | PixelFormat::Y444 => {
                Chroma::Planar(plane(1), plane(2))
            }
        };
        FrameImage {
            format: self.format,
            width: w,
            height: h,
            main: plane(0),
            chroma,
            color: self.color,
        }
    }

    /// Packed RGB bytes when the frame is RGB (`width * height * 3` long), else `None`.
    pub fn rgb(&self) -> Option<&[u8]> {
        (self.format == PixelFormat::Rgb).then(|| self.image().main.data)
    }

    /// The whole frame converted to packed RGB (a full-resolution copy: tests and tools only;
    /// the pipeline converts crops).
    pub fn to_rgb(&self) -> Vec<u8> {
        self.image().sampled_rgb(1).2
    }

    /// Frame `index` from a decoded buffer described by `info` (RGB, GRAY8, I420, NV12, Y42B or
    /// Y444): the buffer mapped as is when its planes' rows are packed, else copied without the
    /// row padding. The timestamp is the buffer's (else `index` frame durations), the duration
    /// the buffer's (else the caps' frame rate, else 40 ms). Errors say why the buffer cannot be
    /// read.
    pub fn from_buffer(
        buffer: gst::Buffer,
        info: &gst_video::VideoInfo,
        index: u64,
    ) -> Result<Self, String> {
        let pts = buffer.pts().map(|t| Duration::from_nanos(t.nseconds()));
        let fps = info.fps();
        let nominal = if fps.numer() > 0 {
            Duration::from_secs_f64(fps.denom() as f64 / fps.numer() as f64)
        } else {
            Duration::from_millis(40)
        };
        let duration = buffer
            .duration()
            .map(|t| Duration::from_nanos(t.nseconds()))
            .unwrap_or(nominal);
        let (width, height) = (info.width(), info.height());
        let format = PixelFormat::from_gst(info.format()).ok_or_else(|| {
            format!(
                "the video branch delivered {}, which is not RGB, GRAY8, I420, NV12, Y42B or Y444",
                info.format().to_str()
            )
        })?;
        let size = buffer.size();
        let frame = gst_video::VideoFrame::from_buffer_readable(buffer, info).map_err(|_| {
            format!(
                "cannot map a {size}-byte buffer as a {width}x{height} {} frame",
                info.format().to_str()
            )
        })?;
        let shapes = format.plane_shapes(width, height);
        // The mapped frame's strides: a buffer with a video meta (its planes where its producer
        // put them) may differ from the caps' default layout.
        let strides: Vec<usize> = shapes
            .iter()
            .enumerate()
            .map(|(i, _)| {
                frame
                    .plane_stride()
                    .get(i)
                    .and_then(|s| usize::try_from(*s).ok())
                    .ok_or_else(|| {
                        format!("plane {i} of the {width}x{height} frame has no usable row stride")
                    })
            })
            .collect::<Result<_, _>>()?;
        let packed = shapes
            .iter()
            .zip(&strides)
            .all(|((w, _, c), s)| (*w * *c) as usize == *s);
        let pixels = if packed {
            Pixels::Mapped(Box::new(frame))
        } else {
            let mut planes = Vec::with_capacity(shapes.len());
            for (i, ((w, h, c), stride)) in shapes.iter().zip(&strides).enumerate() {
                let data = frame
                    .plane_data(i as u32)
                    .map_err(|e| format!("cannot read the frame's pixels: {e}"))?;
                let row = (*w * *c) as usize;
                let mut copy = Vec::with_capacity(row * *h as usize);
                for y in 0..*h as usize {
                    let line = data.get(y * stride..y * stride + row).ok_or_else(|| {
                        format!(
                            "row {y} of plane {i} of the {width}x{height} frame runs past its {}-byte plane",
                            data.len()
                        )
                    })?;
                    copy.extend_from_slice(line);
                }
                planes.push(copy);
            }
            Pixels::Owned(planes)
        };
        Ok(Self {
            meta: FrameMeta {
                index,
                pts: pts.unwrap_or(nominal * index as u32),
                duration,
                width,
                height,
                stamps: Stamps::new(Instant::now()),
            },
            format,
            color: if format == PixelFormat::Gray {
                YuvColor {
                    full_range: true,
                    ..YuvColor::default()
                }
            } else {
                YuvColor::from_info(info)
            },
            pixels,
        })
    }
}

/// Mono F32 audio decoded from the source.
pub struct AudioBlock {
    /// Sample rate: 16 000 (VAD branch) or 44 100 (speech-emotion branch).
    pub rate: u32,
    /// Stream time of the first sample.
    pub pts: Option<Duration>,
    /// The samples, in [-1, 1].
    pub samples: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb_info(width: u32, height: u32) -> gst_video::VideoInfo {
        gst::init().unwrap();
        gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, width, height)
            .fps(gst::Fraction::new(25, 1))
            .build()
            .unwrap()
    }

    /// A buffer of `info`'s size whose byte i is i mod 251, with the given timestamp.
    fn buffer(info: &gst_video::VideoInfo, pts_ms: Option<u64>) -> gst::Buffer {
        let bytes: Vec<u8> = (0..info.size()).map(|i| (i % 251) as u8).collect();
        let mut buffer = gst::Buffer::from_mut_slice(bytes);
        if let Some(ms) = pts_ms {
            buffer
                .get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(ms));
        }
        buffer
    }

    #[test]
    fn packed_rows_are_mapped_and_the_header_comes_from_buffer_and_caps() {
        // 4 px * 3 bytes = 12, already a multiple of 4: no padding.
        let info = rgb_info(4, 2);
        assert_eq!(info.stride()[0], 12);
        let frame = VideoFrame::from_buffer(buffer(&info, Some(120)), &info, 3).unwrap();
        assert!(matches!(frame.pixels, Pixels::Mapped(_)));
        assert_eq!(frame.rgb().unwrap().len(), 4 * 2 * 3);
        assert_eq!(frame.rgb().unwrap()[13], 13);
        let meta = frame.meta;
        assert_eq!((meta.index, meta.width, meta.height), (3, 4, 2));
        assert_eq!(meta.pts, Duration::from_millis(120));
        assert_eq!(meta.duration, Duration::from_millis(40)); // 25 fps
    }

    #[test]
    fn padded_rows_are_copied_packed_and_a_missing_pts_counts_frames() {
        // 5 px * 3 bytes = 15, padded to a stride of 16.
        let info = rgb_info(5, 3);
        assert_eq!(info.stride()[0], 16);
        let frame = VideoFrame::from_buffer(buffer(&info, None), &info, 2).unwrap();
        assert!(matches!(frame.pixels, Pixels::Owned(_)));
        let rgb = frame.rgb().unwrap();
        assert_eq!(rgb.len(), 5 * 3 * 3);
        // Row 1 starts at byte 16 of the buffer.
        assert_eq!(&rgb[15..18], &[16, 17, 18]);
        assert_eq!(frame.meta.pts, Duration::from_millis(80));
    }

    #[test]
    fn a_buffer_too_small_for_its_caps_says_so() {
        let info = rgb_info(64, 48);
        let short = gst::Buffer::from_mut_slice(vec![0u8; 100]);
        let Err(message) = VideoFrame::from_buffer(short, &info, 0) else {
            panic!("a 100-byte buffer mapped as 64x48");
        };
        assert!(message.contains("100-byte buffer"), "{message}");
        assert!(message.contains("64x48 RGB"), "{message}");
    }

    #[test]
    fn a_frame_from_rgb_bytes_keeps_them() {
        let frame = VideoFrame::from_rgb(7, Duration::from_secs(1), 2, 1, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(frame.rgb().unwrap(), &[1, 2, 3, 4, 5, 6]);
        assert_eq!(frame.to_rgb(), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(frame.meta.index, 7);
        assert_eq!(frame.meta.pts, Duration::from_secs(1));
    }

    fn yuv_info(format: gst_video::VideoFormat, width: u32, height: u32) -> gst_video::VideoInfo {
        gst::init().unwrap();
        gst_video::VideoInfo::builder(format, width, height)
            .fps(gst::Fraction::new(25, 1))
            .build()
            .unwrap()
    }

    #[test]
    fn i420_planes_are_mapped_when_packed_and_copied_when_padded() {
        // 8x4: Y rows of 8, chroma rows of 4 — packed.
        let info = yuv_info(gst_video::VideoFormat::I420, 8, 4);
        let frame = VideoFrame::from_buffer(buffer(&info, Some(0)), &info, 0).unwrap();
        assert!(matches!(frame.pixels, Pixels::Mapped(_)));
        let image = frame.image();
        assert_eq!(image.check(), Ok(()));
        assert_eq!(image.main.data.len(), 32);
        let Chroma::Planar(u, v) = image.chroma else {
            panic!("I420 has planar chroma");
        };
        assert_eq!(
            (u.width, u.height, u.data.len(), v.data.len()),
            (4, 2, 8, 8)
        );
        assert_eq!(u.data[0], 32); // the U plane starts after 32 bytes of Y
        assert!(frame.rgb().is_none());
        // 6x2: Y stride 8, chroma 3 wide with stride 4 — copied without the padding.
        let info = yuv_info(gst_video::VideoFormat::I420, 6, 2);
        let frame = VideoFrame::from_buffer(buffer(&info, Some(0)), &info, 0).unwrap();
        assert!(matches!(frame.pixels, Pixels::Owned(_)));
        let image = frame.image();
        assert_eq!(image.check(), Ok(()));
        assert_eq!(image.main.data, &[0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]);
        let Chroma::Planar(u, _) = image.chroma else {
            panic!("I420 has planar chroma");
        };
        assert_eq!(u.data, &[16, 17, 18]);
        // A copy owns its planes and says the same.
        let copy = frame.clone();
        assert_eq!(copy.image().main.data, image.main.data);
        assert_eq!(copy.format(), PixelFormat::I420);
    }

    #[test]
    fn nv12_has_interleaved_chroma_and_converts_to_rgb() {
        let info = yuv_info(gst_video::VideoFormat::Nv12, 4, 2);
        let mut bytes = vec![235u8; 8];
        bytes.extend([128, 128, 128, 128]);
        let frame = VideoFrame::from_buffer(gst::Buffer::from_mut_slice(bytes), &info, 0).unwrap();
        let image = frame.image();
        assert!(matches!(image.chroma, Chroma::Interleaved(p) if p.channels == 2 && p.width == 2));
        assert_eq!(frame.to_rgb(), vec![255; 4 * 2 * 3]);
        let (w, h, rgb) = image.sampled_rgb(2);
        assert_eq!((w, h, rgb.len()), (2, 1, 6));
    }

    #[test]
    fn formats_outside_the_list_are_refused() {
        let info = yuv_info(gst_video::VideoFormat::Yuy2, 4, 2);
        let Err(message) = VideoFrame::from_buffer(buffer(&info, None), &info, 0) else {
            panic!("YUY2 accepted");
        };
        assert!(message.contains("YUY2"), "{message}");
    }
}
