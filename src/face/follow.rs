//! Carrying faces between detections: how far each face moved since the frame it was
//! detected on. The detector runs only every few frames (`face::schedule`); without this the
//! carried box stays where the face was while the head moves on. Each detection leaves a small
//! luma template of every face (the box's centre, shrunk to [`TEMPLATE_SIDE`]); on a carried
//! frame the template is matched (normalised cross-correlation) in a window around the box,
//! shrunk alike, and the box and landmarks move by the best match, refined below a template
//! pixel. A face whose best match is weak (turned away, covered, left) is reported as lost,
//! so the stage detects at once instead of carrying a box that no longer holds the face.
//!
//! The shift is measured from the detection frame, not from the previous frame, so errors do
//! not add up over the carried frames. Shifts under a template pixel, and any shift on the
//! first carried frame, are not applied: there the match mostly measures its own noise and
//! the detector's jitter (see [`DEAD_ZONE`], [`FOLLOW_AFTER`]).

use opencv::core::{Mat, Point, Rect, Size};
use opencv::imgproc;
use opencv::prelude::*;

use super::crop::plane_mat;
use super::detection::{BBox, Detection};
use crate::capture::{FrameImage, PixelFormat};

/// Long side of a face's template, in pixels: big enough to hold eyes, nose and mouth apart,
/// small enough to cost tens of microseconds per face.
pub const TEMPLATE_SIDE: f32 = 48.0;
/// Share of the box's long side each side of it that is searched: more than a head moves in
/// a few frames of talking-head video.
pub const SEARCH_MARGIN: f32 = 0.25;
/// Share of the box kept at each edge out of the template (background and hair at the box's
/// border move differently from the face).
pub const TEMPLATE_INSET: f32 = 0.1;
/// A shift shorter than this many template pixels on both axes is not applied.
pub const DEAD_ZONE: f64 = 1.0;
/// Boxes move from this many frames after their detection on: one frame after it a talking
/// head has moved less than the detector's own frame-to-frame jitter (on the test streams,
/// shifting there too changed nothing in the boxes' fit but moved some eval figures by noise).
/// The match is checked on every carried frame all the same, so a lost face is detected at
/// once. The face stage follows only at a detection interval above this: at 2 the one carried
/// frame would never move and the next frame is detected anyway, so the follower's work
/// (about 6 % of the CPU on the 256x256 test stream) would buy at most one frame.
pub const FOLLOW_AFTER: u32 = 2;
/// Normalised correlation below which a face counts as lost where it was carried.
pub const MIN_MATCH: f32 = 0.6;

/// One face from its detection frame: the detection, and its template unless the face was
/// too small (then it is carried where it was).
#[derive(Debug)]
struct Anchor {
    detection: Detection,
    template: Option<Template>,
}

/// A face's luma template.
#[derive(Debug)]
struct Template {
    /// The template's region in frame pixels.
    region: Rect,
    /// Template pixels per frame pixel, per axis.
    scale: (f64, f64),
    image: Mat,
}

/// The templates of the last detection, and scratch images.
#[derive(Debug, Default)]
pub struct Follower {
    anchors: Vec<Anchor>,
    /// Frames followed since the anchors were taken.
    carried: u32,
    gray: Mat,
    search: Mat,
    result: Mat,
}

/// Where a carried face went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Followed {
    /// Every face found near its box: the detections moved there.
    Moved,
    /// Some face no longer matched: the caller should detect.
    Lost,
}

impl Follower {
    /// Forgets every face.
    pub fn clear(&mut self) {
        self.anchors.clear();
        self.carried = 0;
    }

    /// Takes templates of `detections` from `frame`, the frame they were detected on.
    pub fn anchor(
        &mut self,
        frame: &FrameImage<'_>,
        detections: &[Detection],
    ) -> opencv::Result<()> {
        self.clear();
        for d in detections {
            let inset = (d.bbox.w * TEMPLATE_INSET, d.bbox.h * TEMPLATE_INSET);
            let inner = BBox {
                x: d.bbox.x + inset.0,
                y: d.bbox.y + inset.1,
                w: d.bbox.w - 2.0 * inset.0,
                h: d.bbox.h - 2.0 * inset.1,
            };
            let Some(region) = pixel_rect(&inner, frame.width, frame.height) else {
                self.anchors.push(Anchor {
                    detection: *d,
                    template: None,
                });
                continue;
            };
            let side = region.width.max(region.height) as f32;
            let s = (TEMPLATE_SIDE / side).min(1.0);
            let size = Size::new(
                ((region.width as f32 * s).round() as i32).max(4),
                ((region.height as f32 * s).round() as i32).max(4),
            );
            let mut image = Mat::default();
            shrink(frame, region, size, &mut self.gray, &mut image)?;
            self.anchors.push(Anchor {
                detection: *d,
                template: Some(Template {
                    region,
                    scale: (
                        f64::from(size.width) / f64::from(region.width),
                        f64::from(size.height) / f64::from(region.height),
                    ),
                    image,
                }),
            });
        }
        Ok(())
    }

    /// Finds every anchored face in `frame` and writes the moved detections into `out` (one
    /// per anchor, in order). `Lost` when a face matched weakly or fell off the picture; `out`
    /// is then left as it was.
    pub fn follow(
        &mut self,
        frame: &FrameImage<'_>,
        out: &mut Vec<Detection>,
    ) -> opencv::Result<Followed> {
        self.carried += 1;
        let mut moved = Vec::with_capacity(self.anchors.len());
        for anchor in &self.anchors {
            let Some(a) = &anchor.template else {
                moved.push(anchor.detection);
                continue;
            };
            let margin = (a.region.width.max(a.region.height) as f32 * SEARCH_MARGIN).ceil();
            let window = BBox {
                x: a.region.x as f32 - margin,
                y: a.region.y as f32 - margin,
                w: a.region.width as f32 + 2.0 * margin,
                h: a.region.height as f32 + 2.0 * margin,
            };
            let Some(window) = pixel_rect(&window, frame.width, frame.height) else {
                return Ok(Followed::Lost);
            };
            let size = Size::new(
                (f64::from(window.width) * a.scale.0).round() as i32,
                (f64::from(window.height) * a.scale.1).round() as i32,
            );
            let t = a.image.size()?;
            if size.width < t.width || size.height < t.height {
                return Ok(Followed::Lost);
            }
            shrink(frame, window, size, &mut self.gray, &mut self.search)?;
            imgproc::match_template_def(
                &self.search,
                &a.image,
                &mut self.result,
                imgproc::TM_CCOEFF_NORMED,
            )?;
            let (best, at) = best_match(&self.result)?;
            if best.is_nan() || best < MIN_MATCH {
                return Ok(Followed::Lost);
            }
            // Where the template sits in the window when the face has not moved.
            let origin = (
                f64::from(a.region.x - window.x) * a.scale.0,
                f64::from(a.region.y - window.y) * a.scale.1,
            );
            // Below a template pixel the match mostly measures its own noise and the
            // detector's jitter: the box stays.
            let (tx, ty) = (at.0 - origin.0, at.1 - origin.1);
            if self.carried < FOLLOW_AFTER || (tx.abs() < DEAD_ZONE && ty.abs() < DEAD_ZONE) {
                moved.push(anchor.detection);
                continue;
            }
            let dx = (tx / a.scale.0) as f32;
            let dy = (ty / a.scale.1) as f32;
            moved.push(shifted(&anchor.detection, dx, dy));
        }
        *out = moved;
        Ok(Followed::Moved)
    }
}

/// `d` moved by (`dx`, `dy`) frame pixels, landmarks with it.
fn shifted(d: &Detection, dx: f32, dy: f32) -> Detection {
    let mut d = *d;
    d.bbox.x += dx;
    d.bbox.y += dy;
    if let Some(lm) = &mut d.landmarks {
        for p in lm.iter_mut() {
            p[0] += dx;
            p[1] += dy;
        }
    }
    d
}

/// `b` as whole pixels inside a `w` x `h` frame; `None` when less than 4 pixels a side remain.
fn pixel_rect(b: &BBox, w: u32, h: u32) -> Option<Rect> {
    let x0 = b.x.floor().max(0.0) as i32;
    let y0 = b.y.floor().max(0.0) as i32;
    let x1 = ((b.x + b.w).ceil() as i32).min(w as i32);
    let y1 = ((b.y + b.h).ceil() as i32).min(h as i32);
    (x1 - x0 >= 4 && y1 - y0 >= 4).then(|| Rect::new(x0, y0, x1 - x0, y1 - y0))
}

/// The luma of `region` of `frame`, resized to `size` (area averaging) into `out`.
fn shrink(
    frame: &FrameImage<'_>,
    region: Rect,
    size: Size,
    gray: &mut Mat,
    out: &mut Mat,
) -> opencv::Result<()> {
    let main = plane_mat(&frame.main)?;
    let roi = main.roi(region)?;
    if frame.format == PixelFormat::Rgb {
        imgproc::cvt_color_def(&roi, gray, imgproc::COLOR_RGB2GRAY)?;
        imgproc::resize(gray, out, size, 0.0, 0.0, imgproc::INTER_AREA)
    } else {
        imgproc::resize(&roi, out, size, 0.0, 0.0, imgproc::INTER_AREA)
    }
}

/// The best score of a correlation map and its position, refined below a pixel by a parabola
/// through the neighbours on each axis.
fn best_match(result: &Mat) -> opencv::Result<(f32, (f64, f64))> {
    let (rows, cols) = (result.rows(), result.cols());
    // matchTemplate's map is one continuous CV_32F plane: read it as a slice, not pixel by
    // pixel through the bindings.
    let values = result.data_typed::<f32>()?;
    let mut best = (f32::NEG_INFINITY, Point::new(0, 0));
    for (i, &v) in values.iter().enumerate() {
        if v > best.0 {
            let i = i as i32;
            best = (v, Point::new(i % cols, i / cols));
        }
    }
    let (v, p) = best;
    let at = |x: i32, y: i32| values[(y * cols + x) as usize];
    let refine = |lo: f32, hi: f32| -> f64 {
        let curve = f64::from(lo) - 2.0 * f64::from(v) + f64::from(hi);
        if curve < 0.0 {
            (0.5 * (f64::from(lo) - f64::from(hi)) / curve).clamp(-0.5, 0.5)
        } else {
            0.0
        }
    };
    let fx = if p.x > 0 && p.x + 1 < cols {
        refine(at(p.x - 1, p.y), at(p.x + 1, p.y))
    } else {
        0.0
    };
    let fy = if p.y > 0 && p.y + 1 < rows {
        refine(at(p.x, p.y - 1), at(p.x, p.y + 1))
    } else {
        0.0
    };
    Ok((v, (f64::from(p.x) + fx, f64::from(p.y) + fy)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::VideoFrame;
    use std::time::Duration;

    /// A 160x120 RGB frame of a smooth textured background with a "face" (a bright disc with
    /// two dark eyes and a mouth) whose box's top-left corner is at (`x`, `y`).
    fn frame(x: f32, y: f32) -> VideoFrame {
        let (w, h) = (160usize, 120usize);
        let mut rgb = vec![0u8; w * h * 3];
        for py in 0..h {
            for px in 0..w {
                let (fx, fy) = (px as f32 - x, py as f32 - y);
                let bg = 70.0 + 20.0 * ((px as f32 * 0.11).sin() + (py as f32 * 0.07).cos());
                let (cx, cy) = (fx - 20.0, fy - 24.0);
                let mut v = bg;
                if (cx / 20.0).powi(2) + (cy / 24.0).powi(2) < 1.0 {
                    v = 200.0;
                    let eye = |ex: f32, ey: f32| (cx - ex).powi(2) + (cy - ey).powi(2) < 9.0;
                    if eye(-8.0, -6.0)
                        || eye(8.0, -6.0)
                        || (cy > 9.0 && cy < 12.0 && cx.abs() < 8.0)
                    {
                        v = 40.0;
                    }
                }
                rgb[(py * w + px) * 3..(py * w + px) * 3 + 3].fill(v as u8);
            }
        }
        VideoFrame::from_rgb(0, Duration::ZERO, w as u32, h as u32, rgb)
    }

    fn face(x: f32, y: f32) -> Detection {
        Detection {
            bbox: BBox {
                x,
                y,
                w: 40.0,
                h: 48.0,
            },
            score: 0.95,
            landmarks: Some([[x + 12.0, y + 18.0]; 5]),
        }
    }

    #[test]
    fn a_moved_face_is_followed_with_its_landmarks() {
        let mut f = Follower::default();
        f.anchor(&frame(40.0, 30.0).image(), &[face(40.0, 30.0)])
            .unwrap();
        let mut out = vec![face(40.0, 30.0)];
        let now = frame(47.0, 26.0);
        // The first frame after the detection keeps the box; the next ones follow the face.
        assert_eq!(f.follow(&now.image(), &mut out).unwrap(), Followed::Moved);
        assert_eq!(out[0].bbox.x, 40.0);
        assert_eq!(f.follow(&now.image(), &mut out).unwrap(), Followed::Moved);
        let b = out[0].bbox;
        assert!(
            (b.x - 47.0).abs() < 1.0 && (b.y - 26.0).abs() < 1.0,
            "{b:?}"
        );
        let lm = out[0].landmarks.unwrap()[0];
        assert!(
            (lm[0] - 59.0).abs() < 1.0 && (lm[1] - 44.0).abs() < 1.0,
            "{lm:?}"
        );
        // Still where it was: no shift.
        f.follow(&frame(40.0, 30.0).image(), &mut out).unwrap();
        assert!((out[0].bbox.x - 40.0).abs() < 0.5 && (out[0].bbox.y - 30.0).abs() < 0.5);
    }

    #[test]
    fn a_face_that_left_is_lost_and_the_boxes_stay() {
        let mut f = Follower::default();
        f.anchor(&frame(40.0, 30.0).image(), &[face(40.0, 30.0)])
            .unwrap();
        let mut out = vec![face(40.0, 30.0)];
        // The face moved far out of the search window: only background is left there.
        let gone = frame(115.0, 70.0);
        assert_eq!(f.follow(&gone.image(), &mut out).unwrap(), Followed::Lost);
        assert_eq!(out[0].bbox.x, 40.0);
    }

    #[test]
    fn no_faces_follow_trivially() {
        let mut f = Follower::default();
        let mut out = Vec::new();
        assert_eq!(
            f.follow(&frame(0.0, 0.0).image(), &mut out).unwrap(),
            Followed::Moved
        );
        assert!(out.is_empty());
    }
}
