//! When to run the face detector: on a schedule that follows the scene. While the tracks are
//! stable the detector runs every `max_interval`-th frame and the tracker carries the boxes
//! between; it runs at once when no face is tracked, when the last detection lost or started a
//! track, or when something moved outside the tracked boxes (a cheap difference of a tiny
//! luma thumbnail, so a face entering the picture is found on the frame it appears). The first
//! faces found in an empty scene count as stable, so with an interval of 2 the detector runs on
//! the same frames as a plain every-2nd-frame schedule unless something changes.

use opencv::core::{Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;

use super::crop::plane_mat;
use super::detection::BBox;
use crate::capture::{FrameImage, PixelFormat, Plane};

/// Long side of the luma thumbnail the motion check compares, in pixels.
pub const THUMB_SIDE: u32 = 64;
/// A thumbnail pixel whose luma changed by more than this many levels since the last
/// detection counts as moved (above compression noise).
pub const MOVED_LEVELS: u8 = 16;
/// Tracked boxes are grown by this share of their side before motion inside them is ignored
/// (a moving head moves the pixels around its box too).
pub const BOX_GROWTH: f32 = 0.5;

/// Why a frame's detector ran (or did not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Carried: the tracker's boxes are reused.
    Skipped,
    /// `max_interval` frames since the last detection.
    Interval,
    /// No face tracked.
    NoFaces,
    /// The last detection lost a track or started one beside the existing ones: not stable
    /// yet.
    Unstable,
    /// Motion outside the tracked boxes.
    Motion,
    /// A carried face no longer matched near its box (`face::follow`).
    Lost,
}

/// The detection schedule's state for one stream.
#[derive(Debug)]
pub struct Schedule {
    /// Largest gap between detections, in frames (1: every frame).
    pub max_interval: u32,
    /// Share of the thumbnail outside the tracked boxes that must have moved to detect at
    /// once; 0 or less turns the motion check off.
    pub motion_share: f32,
    frames_since: u32,
    stable: bool,
    reference: Mat,
    thumb: Mat,
    gray: Mat,
    /// Detector runs per reason, and frames seen (for the log line at the end of a stream).
    pub counts: Counts,
}

/// How often the detector ran and why, over a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Frames seen.
    pub frames: u64,
    /// Runs because the interval was up.
    pub interval: u64,
    /// Runs because no face was tracked.
    pub no_faces: u64,
    /// Runs because the last detection changed the tracks.
    pub unstable: u64,
    /// Runs because of motion outside the tracks.
    pub motion: u64,
    /// Runs because a carried face was lost.
    pub lost: u64,
}

impl Counts {
    /// Detector runs in all.
    pub fn runs(&self) -> u64 {
        self.interval + self.no_faces + self.unstable + self.motion + self.lost
    }
}

impl Schedule {
    /// A schedule detecting at least every `max_interval` frames, at once on `motion_share`
    /// of moved pixels outside the tracks.
    pub fn new(max_interval: u32, motion_share: f32) -> Self {
        Self {
            max_interval: max_interval.max(1),
            motion_share,
            frames_since: u32::MAX,
            stable: false,
            reference: Mat::default(),
            thumb: Mat::default(),
            gray: Mat::default(),
            counts: Counts::default(),
        }
    }

    /// Forgets the stream (the next frame is detected) and its counts.
    pub fn reset(&mut self) {
        *self = Self::new(self.max_interval, self.motion_share);
    }

    /// Decides for `frame`, whose tracked boxes (frame pixels) are `boxes`.
    pub fn decide(&mut self, frame: &FrameImage<'_>, boxes: &[BBox]) -> opencv::Result<Reason> {
        self.counts.frames += 1;
        let motion_on = self.motion_share > 0.0 && self.max_interval > 1;
        if motion_on {
            self.thumbnail(frame)?;
        }
        let reason = if boxes.is_empty() {
            Reason::NoFaces
        } else if self.frames_since.saturating_add(1) >= self.max_interval {
            Reason::Interval
        } else if !self.stable {
            Reason::Unstable
        } else if motion_on && self.moved_outside(frame, boxes)? {
            Reason::Motion
        } else {
            Reason::Skipped
        };
        match reason {
            Reason::Skipped => self.frames_since = self.frames_since.saturating_add(1),
            _ => {
                self.frames_since = 0;
                if motion_on {
                    std::mem::swap(&mut self.reference, &mut self.thumb);
                }
            }
        }
        let c = &mut self.counts;
        match reason {
            Reason::Skipped => {}
            Reason::Interval => c.interval += 1,
            Reason::NoFaces => c.no_faces += 1,
            Reason::Unstable => c.unstable += 1,
            Reason::Motion => c.motion += 1,
            Reason::Lost => c.lost += 1,
        }
        Ok(reason)
    }

    /// Turns the frame `decide` just skipped into a detection: a carried face was lost
    /// (`face::follow` found it nowhere near its box).
    pub fn lost(&mut self) -> Reason {
        self.frames_since = 0;
        if self.motion_share > 0.0 && self.max_interval > 1 {
            std::mem::swap(&mut self.reference, &mut self.thumb);
        }
        self.counts.lost += 1;
        Reason::Lost
    }

    /// Tells the schedule what the detection just run did to the tracks: stable when every
    /// detection continued a track and no track went unmatched.
    pub fn detected(&mut self, stable: bool) {
        self.stable = stable;
    }

    /// The frame's luma shrunk to [`THUMB_SIDE`] (area averaging) into `self.thumb`.
    fn thumbnail(&mut self, frame: &FrameImage<'_>) -> opencv::Result<()> {
        let (w, h) = (frame.width.max(1), frame.height.max(1));
        let scale = THUMB_SIDE as f32 / w.max(h) as f32;
        let size = Size::new(
            ((w as f32 * scale).round() as i32).max(1),
            ((h as f32 * scale).round() as i32).max(1),
        );
        if frame.format == PixelFormat::Rgb {
            let main = plane_mat(&frame.main)?;
            imgproc::resize(&main, &mut self.gray, size, 0.0, 0.0, imgproc::INTER_AREA)?;
            imgproc::cvt_color(&self.gray, &mut self.thumb, imgproc::COLOR_RGB2GRAY, 0)?;
        } else {
            luma_thumbnail(&frame.main, size, &mut self.gray, &mut self.thumb)?;
        }
        Ok(())
    }

    /// True when more than `motion_share` of the thumbnail outside the (grown) tracked boxes
    /// changed by more than [`MOVED_LEVELS`] since the last detection.
    fn moved_outside(&self, frame: &FrameImage<'_>, boxes: &[BBox]) -> opencv::Result<bool> {
        if self.reference.size()? != self.thumb.size()? {
            return Ok(true);
        }
        let (tw, th) = (self.thumb.cols() as usize, self.thumb.rows() as usize);
        let (sx, sy) = (
            tw as f32 / frame.width.max(1) as f32,
            th as f32 / frame.height.max(1) as f32,
        );
        let inside: Vec<(f32, f32, f32, f32)> = boxes
            .iter()
            .map(|b| {
                let (gw, gh) = (b.w * BOX_GROWTH / 2.0, b.h * BOX_GROWTH / 2.0);
                (
                    (b.x - gw) * sx,
                    (b.y - gh) * sy,
                    (b.x + b.w + gw) * sx,
                    (b.y + b.h + gh) * sy,
                )
            })
            .collect();
        let (now, then) = (self.thumb.data_bytes()?, self.reference.data_bytes()?);
        let (mut outside, mut moved) = (0usize, 0usize);
        for y in 0..th {
            let cy = y as f32 + 0.5;
            for x in 0..tw {
                let cx = x as f32 + 0.5;
                if inside
                    .iter()
                    .any(|&(x0, y0, x1, y1)| cx >= x0 && cx < x1 && cy >= y0 && cy < y1)
                {
                    continue;
                }
                outside += 1;
                let i = y * tw + x;
                if now[i].abs_diff(then[i]) > MOVED_LEVELS {
                    moved += 1;
                }
            }
        }
        Ok(outside > 0 && moved as f32 > self.motion_share * outside as f32)
    }
}

/// Rows, and columns, of each thumbnail block read by [`luma_thumbnail`], at most: a block's
/// mean over 4 x 4 evenly spread samples is as good a motion signal as over all its pixels, and
/// reading every pixel of the frame on every frame cost about 5 % of the pipeline's CPU on
/// 720p.
pub const THUMB_SAMPLES_PER_SIDE: i32 = 4;

/// A one-channel `plane` shrunk to `size` into `out`: each pixel the mean of its block over up
/// to [`THUMB_SAMPLES_PER_SIDE`] evenly spread rows and as many columns (nearest-neighbour
/// decimation to that many samples per block, then area averaging; small frames are averaged
/// whole).
fn luma_thumbnail(
    plane: &Plane<'_>,
    size: Size,
    samples: &mut Mat,
    out: &mut Mat,
) -> opencv::Result<()> {
    let main = plane_mat(plane)?;
    let grid = Size::new(
        size.width * THUMB_SAMPLES_PER_SIDE,
        size.height * THUMB_SAMPLES_PER_SIDE,
    );
    if main.cols() > grid.width && main.rows() > grid.height {
        imgproc::resize(&main, samples, grid, 0.0, 0.0, imgproc::INTER_NEAREST)?;
        imgproc::resize(samples, out, size, 0.0, 0.0, imgproc::INTER_AREA)
    } else {
        imgproc::resize(&main, out, size, 0.0, 0.0, imgproc::INTER_AREA)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::VideoFrame;
    use std::time::Duration;

    /// A gray 128x72 RGB frame with a white square of side 16 at (`x`, `y`).
    fn frame(square: Option<(usize, usize)>) -> VideoFrame {
        let (w, h) = (128usize, 72usize);
        let mut rgb = vec![60u8; w * h * 3];
        if let Some((x0, y0)) = square {
            for y in y0..y0 + 16 {
                for x in x0..x0 + 16 {
                    rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].fill(250);
                }
            }
        }
        VideoFrame::from_rgb(0, Duration::ZERO, w as u32, h as u32, rgb)
    }

    fn face() -> BBox {
        BBox {
            x: 10.0,
            y: 10.0,
            w: 20.0,
            h: 20.0,
        }
    }

    #[test]
    fn stable_tracks_are_detected_every_max_interval_frames() {
        let mut s = Schedule::new(4, 0.02);
        let f = frame(None);
        let image = f.image();
        assert_eq!(s.decide(&image, &[]).unwrap(), Reason::NoFaces);
        s.detected(false);
        assert_eq!(s.decide(&image, &[face()]).unwrap(), Reason::Unstable);
        s.detected(true);
        let reasons: Vec<Reason> = (0..8)
            .map(|_| {
                let r = s.decide(&image, &[face()]).unwrap();
                if r != Reason::Skipped {
                    s.detected(true);
                }
                r
            })
            .collect();
        use Reason::*;
        assert_eq!(
            reasons,
            [
                Skipped, Skipped, Skipped, Interval, Skipped, Skipped, Skipped, Interval
            ]
        );
        assert_eq!(s.counts.runs(), 4);
        assert_eq!(s.counts.frames, 10);
    }

    #[test]
    fn motion_outside_the_tracks_detects_at_once_and_inside_does_not() {
        let mut s = Schedule::new(30, 0.02);
        let still = frame(None);
        s.decide(&still.image(), &[face()]).unwrap();
        s.detected(true);
        assert_eq!(
            s.decide(&still.image(), &[face()]).unwrap(),
            Reason::Skipped
        );
        // Something bright inside the tracked box (grown by half): ignored.
        let inside = frame(Some((12, 12)));
        assert_eq!(
            s.decide(&inside.image(), &[face()]).unwrap(),
            Reason::Skipped
        );
        // The same far from it: a face may have entered.
        let outside = frame(Some((96, 40)));
        assert_eq!(
            s.decide(&outside.image(), &[face()]).unwrap(),
            Reason::Motion
        );
        s.detected(true);
        // Compared with the frame of that detection now: nothing new.
        assert_eq!(
            s.decide(&outside.image(), &[face()]).unwrap(),
            Reason::Skipped
        );
        // Off: the interval alone.
        let mut off = Schedule::new(30, 0.0);
        off.decide(&still.image(), &[face()]).unwrap();
        off.detected(true);
        assert_eq!(
            off.decide(&outside.image(), &[face()]).unwrap(),
            Reason::Skipped
        );
    }

    #[test]
    fn the_luma_thumbnail_is_the_block_means_of_sampled_pixels() {
        // 200x100, value = column / 2 + (row / 10) % 2 * 40: bands of 10 rows.
        let (w, h) = (200usize, 100usize);
        let data: Vec<u8> = (0..w * h)
            .map(|i| ((i % w) / 2 + (i / w / 10) % 2 * 40) as u8)
            .collect();
        let plane = Plane {
            data: &data,
            width: w as u32,
            height: h as u32,
            channels: 1,
        };
        let (mut samples, mut thumb) = (Mat::default(), Mat::default());
        luma_thumbnail(&plane, Size::new(20, 10), &mut samples, &mut thumb).unwrap();
        assert_eq!((thumb.cols(), thumb.rows()), (20, 10));
        // 4 x 4 samples per 10 x 10 block were read.
        assert_eq!((samples.cols(), samples.rows()), (80, 40));
        let px = thumb.data_bytes().unwrap();
        // Block (1, 0): rows 0..10 (+0), columns 10..20 (values 5..9, mean about 7).
        assert!(px[1].abs_diff(7) <= 1, "{}", px[1]);
        // Block row 1 (rows 10..20, +40).
        assert!(px[20 + 1].abs_diff(47) <= 1, "{}", px[21]);
        // Against OpenCV's area resize over every pixel: within a level.
        let area = |size: Size| {
            let mut out = Mat::default();
            let src = plane_mat(&plane).unwrap();
            imgproc::resize(&src, &mut out, size, 0.0, 0.0, imgproc::INTER_AREA).unwrap();
            out
        };
        for (a, b) in px.iter().zip(area(Size::new(20, 10)).data_bytes().unwrap()) {
            assert!(a.abs_diff(*b) <= 1, "{a} vs {b}");
        }
        // A frame with at most 4 x 4 pixels a block is averaged whole.
        let mut small = Mat::default();
        luma_thumbnail(&plane, Size::new(50, 25), &mut samples, &mut small).unwrap();
        assert_eq!(
            small.data_bytes().unwrap(),
            area(Size::new(50, 25)).data_bytes().unwrap()
        );
    }
}
