//! What a capture delivers: [`VideoFrame`]s (packed RGB behind a [`FrameMeta`] header that the
//! stages carry on without the pixels) and [`AudioBlock`]s (mono F32).

use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer_video as gst_video;

use crate::metrics::Stamps;

/// Pixels of a decoded frame: the mapped GStreamer buffer when rows are tightly packed
/// (no copy), else a packed copy.
enum Pixels {
    Mapped(Box<gst_video::VideoFrame<gst_video::video_frame::Readable>>),
    Owned(Vec<u8>),
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

/// One decoded video frame, packed RGB (3 bytes per pixel, rows without padding).
pub struct VideoFrame {
    /// What the frame is: index, timestamps, size, stage stamps.
    pub meta: FrameMeta,
    pixels: Pixels,
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
            pixels: Pixels::Owned(rgb),
        }
    }

    /// Packed RGB bytes, `width * height * 3` long.
    pub fn rgb(&self) -> &[u8] {
        match &self.pixels {
            Pixels::Mapped(f) => f.plane_data(0).unwrap_or(&[]),
            Pixels::Owned(v) => v,
        }
    }

    /// Frame `index` from a decoded RGB buffer described by `info`: the buffer mapped as is
    /// when its rows are packed, else copied without the row padding. The timestamp is the
    /// buffer's (else `index` frame durations), the duration the buffer's (else the caps'
    /// frame rate, else 40 ms). Errors say why the buffer cannot be read.
    pub(super) fn from_buffer(
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
        let row = width as usize * 3;
        let size = buffer.size();
        let frame = gst_video::VideoFrame::from_buffer_readable(buffer, info).map_err(|_| {
            format!(
                "cannot map a {size}-byte buffer as a {width}x{height} {} frame",
                info.format().to_str()
            )
        })?;
        let stride = info
            .stride()
            .first()
            .and_then(|s| usize::try_from(*s).ok())
            .ok_or_else(|| format!("the {width}x{height} frame has no usable row stride"))?;
        let pixels = if stride == row {
            Pixels::Mapped(Box::new(frame))
        } else {
            let data = frame
                .plane_data(0)
                .map_err(|e| format!("cannot read the frame's pixels: {e}"))?;
            let mut packed = Vec::with_capacity(row * height as usize);
            for y in 0..height as usize {
                let line = data.get(y * stride..y * stride + row).ok_or_else(|| {
                    format!(
                        "row {y} of the {width}x{height} frame runs past its {}-byte plane",
                        data.len()
                    )
                })?;
                packed.extend_from_slice(line);
            }
            Pixels::Owned(packed)
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
        assert_eq!(frame.rgb().len(), 4 * 2 * 3);
        assert_eq!(frame.rgb()[13], 13);
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
        let rgb = frame.rgb();
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
        assert_eq!(frame.rgb(), &[1, 2, 3, 4, 5, 6]);
        assert_eq!(frame.meta.index, 7);
        assert_eq!(frame.meta.pts, Duration::from_secs(1));
    }
}
