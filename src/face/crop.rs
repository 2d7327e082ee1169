//! Face crops for the expression encoder: a square around the face with a margin, rotated so
//! the eyes are level (when landmarks are known), cut and resized with OpenCV in one affine warp.
//! Crops are cut straight from the decoder's planes ([`extract_crop_from`],
//! [`extract_box_padded_from`]): the luma plane as an RGB frame would be, each chroma plane with
//! the same warp mapped into its own (subsampled) pixels, then one small Y'CbCr → RGB
//! conversion per crop. An RGB frame takes the RGB path ([`extract_crop`],
//! [`extract_box_padded`]).

use opencv::boxed_ref::BoxedRef;
use opencv::core::{self as cv, Mat, Rect, Scalar, Size, Vec2b, Vec3b};
use opencv::imgproc;
use opencv::prelude::*;

use crate::capture::{Chroma, FrameImage, PixelFormat, Plane};

/// An image OpenCV can read from: an owned `Mat` or one borrowing a frame's bytes.
pub trait FrameMat: MatTraitConst + opencv::core::ToInputArray {}
impl<T: MatTraitConst + opencv::core::ToInputArray> FrameMat for T {}

use super::detection::Detection;

/// Where to cut a face: a square of side `side` centred on `center`, rotated by `angle_deg`
/// (counter-clockwise in image coordinates, i.e. the eye line's tilt).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropGeometry {
    /// Centre of the square in frame pixels.
    pub center: (f32, f32),
    /// Side of the square in frame pixels.
    pub side: f32,
    /// Tilt of the eye line in degrees (0 when not aligning or without landmarks).
    pub angle_deg: f32,
}

/// A face whose box spans at least this share of a thumbnail's short side is taken to be in
/// an image that is already a face crop.
pub const ALREADY_CROPPED: f32 = 0.8;
/// Images whose short side is at most this many pixels count as thumbnails.
pub const THUMBNAIL_MAX: f32 = 128.0;

/// The square crop for `det` in a `frame_w` x `frame_h` frame: side `max(w, h) * (1 + margin)`
/// around the box centre, shrunk to the frame's short side and shifted inside the frame when it
/// would stick out; a face spanning most of the image (an image that is already a face crop) is
/// cut as the whole image;
/// with `align`, rotated by the angle of the line from the right eye to the left eye.
pub fn crop_geometry(
    det: &Detection,
    margin: f32,
    align: bool,
    frame_w: u32,
    frame_h: u32,
) -> CropGeometry {
    let (fw, fh) = (frame_w.max(1) as f32, frame_h.max(1) as f32);
    let face = det.bbox.w.max(det.bbox.h);
    let side = if is_already_cropped(det, frame_w, frame_h) {
        fw.min(fh)
    } else {
        (face * (1.0 + margin)).min(fw.min(fh))
    };
    let (cx, cy) = det.bbox.center();
    let half = side / 2.0;
    let center = (cx.clamp(half, fw - half), cy.clamp(half, fh - half));
    let angle_deg = match (align, det.landmarks) {
        (true, Some(lm)) => {
            let (dx, dy) = (lm[1][0] - lm[0][0], lm[1][1] - lm[0][1]);
            if dx > 0.0 {
                dy.atan2(dx).to_degrees()
            } else {
                0.0
            }
        }
        _ => 0.0,
    };
    CropGeometry {
        center,
        side,
        angle_deg,
    }
}

/// True when the frame is a thumbnail that is already a face crop (the face spans most of it,
/// as in FER2013's 48x48 images): it is then used whole, since a detector box on so few pixels
/// is too coarse to improve on the image's own framing.
pub fn is_already_cropped(det: &Detection, frame_w: u32, frame_h: u32) -> bool {
    let short = frame_w.max(1).min(frame_h.max(1)) as f32;
    short <= THUMBNAIL_MAX && det.bbox.w.max(det.bbox.h) >= ALREADY_CROPPED * short
}

/// How a model wants its face cut out of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CropShape {
    /// The pipeline's square ([`crop_geometry`]): around the box centre, inside the frame,
    /// rotated so the eyes are level when aligning.
    #[default]
    Aligned,
    /// The detector box (grown by the crop margin, clamped to the frame), axis-aligned, resized
    /// keeping its aspect and zero-padded to a centred square (face-api's `padToSquare`; the
    /// odd pixel of padding goes after the image). A thumbnail that is already a face crop is
    /// used whole, as for [`CropShape::Aligned`].
    BoxPadded,
}

/// The frame region of a [`CropShape::BoxPadded`] crop: `(x0, y0, x1, y1)`, the box grown by
/// `margin` and clamped to the `fw` x `fh` frame (the whole frame for a thumbnail that already
/// is a face crop).
fn box_region(det: &Detection, margin: f32, fw: i32, fh: i32) -> (i32, i32, i32, i32) {
    let (fw, fh) = (fw.max(1), fh.max(1));
    if is_already_cropped(det, fw as u32, fh as u32) {
        return (0, 0, fw, fh);
    }
    let (cx, cy) = det.bbox.center();
    let (hw, hh) = (
        det.bbox.w * (1.0 + margin) / 2.0,
        det.bbox.h * (1.0 + margin) / 2.0,
    );
    let x0 = ((cx - hw).round() as i32).clamp(0, fw - 1);
    let y0 = ((cy - hh).round() as i32).clamp(0, fh - 1);
    let x1 = ((cx + hw).round() as i32).clamp(x0 + 1, fw);
    let y1 = ((cy + hh).round() as i32).clamp(y0 + 1, fh);
    (x0, y0, x1, y1)
}

/// Size (`nw`, `nh`) a `w` x `h` region is resized to inside an `out` square keeping its
/// aspect, and the interpolation (area averaging when shrinking).
fn box_fit(w: i32, h: i32, out: i32) -> (i32, i32, i32) {
    let scale = out as f32 / w.max(h) as f32;
    let nw = ((w as f32 * scale).round() as i32).clamp(1, out);
    let nh = ((h as f32 * scale).round() as i32).clamp(1, out);
    let interpolation = if scale < 1.0 {
        imgproc::INTER_AREA
    } else {
        imgproc::INTER_LINEAR
    };
    (nw, nh, interpolation)
}

/// `image` centred on a black `out` x `out` square (the odd pixel of padding after it).
fn pad_square(image: &Mat, out: i32) -> opencv::Result<Mat> {
    let (nw, nh) = (image.cols(), image.rows());
    let mut canvas = Mat::new_rows_cols_with_default(out, out, image.typ(), Scalar::all(0.0))?;
    {
        let mut target = Mat::roi_mut(
            &mut canvas,
            Rect::new((out - nw) / 2, (out - nh) / 2, nw, nh),
        )?;
        image.copy_to(&mut target)?;
    }
    Ok(canvas)
}

/// Cuts the [`CropShape::BoxPadded`] crop of `det` out of `frame` (packed RGB) as an `out` x
/// `out` 8-bit image in `color`.
pub fn extract_box_padded(
    frame: &impl FrameMat,
    det: &Detection,
    margin: f32,
    out: u32,
    color: CropColor,
) -> opencv::Result<Mat> {
    let (resized, _) = resized_box(frame, det, margin, out)?;
    convert_color(pad_square(&resized, out.max(1) as i32)?, color)
}

/// The box region of `det` in `frame` (see [`box_region`]), resized to fit an `out` square
/// as [`box_fit`] says; with the region (x0, y0, w, h) it was cut from.
fn resized_box(
    frame: &impl FrameMat,
    det: &Detection,
    margin: f32,
    out: u32,
) -> opencv::Result<(Mat, (i32, i32, i32, i32))> {
    let (x0, y0, x1, y1) = box_region(det, margin, frame.cols(), frame.rows());
    let (w, h) = (x1 - x0, y1 - y0);
    let roi = Mat::roi(frame, Rect::new(x0, y0, w, h))?;
    let (nw, nh, interpolation) = box_fit(w, h, out.max(1) as i32);
    let mut resized = Mat::default();
    imgproc::resize(
        &roi,
        &mut resized,
        Size::new(nw, nh),
        0.0,
        0.0,
        interpolation,
    )?;
    Ok((resized, (x0, y0, w, h)))
}

/// [`extract_box_padded`] from a frame's planes: the luma region resized as an RGB frame's
/// would be, the chroma warped onto the same pixels, converted to RGB, padded.
pub fn extract_box_padded_from(
    image: &FrameImage<'_>,
    det: &Detection,
    margin: f32,
    out: u32,
    color: CropColor,
) -> opencv::Result<Mat> {
    let luma = plane_mat(&image.main)?;
    if image.format == PixelFormat::Rgb {
        return extract_box_padded(&luma, det, margin, out, color);
    }
    let (resized, (x0, y0, w, h)) = resized_box(&luma, det, margin, out)?;
    let (nw, nh) = (resized.cols(), resized.rows());
    let out = out.max(1) as i32;
    // cv::resize maps destination pixel d to source (d + 0.5) / k - 0.5 + x0.
    let (kx, ky) = (f64::from(nw) / f64::from(w), f64::from(nh) / f64::from(h));
    let m = [
        [kx, 0.0, (0.5 - f64::from(x0)) * kx - 0.5],
        [0.0, ky, (0.5 - f64::from(y0)) * ky - 0.5],
    ];
    let rgb = planes_to_rgb(image, &resized, m)?;
    convert_color(pad_square(&rgb, out)?, color)
}

fn convert_color(rgb: Mat, color: CropColor) -> opencv::Result<Mat> {
    let code = match color {
        CropColor::Gray => imgproc::COLOR_RGB2GRAY,
        CropColor::Bgr => imgproc::COLOR_RGB2BGR,
        CropColor::Rgb => return Ok(rgb),
    };
    let mut converted = Mat::default();
    imgproc::cvt_color(&rgb, &mut converted, code, 0)?;
    Ok(converted)
}

/// The 2x3 affine matrix mapping frame pixels to an `out` x `out` crop for `geom`.
pub fn crop_affine(geom: &CropGeometry, out: u32) -> [[f64; 3]; 2] {
    let scale = f64::from(out) / f64::from(geom.side.max(1.0));
    let (s, c) = f64::from(geom.angle_deg).to_radians().sin_cos();
    let (cx, cy) = (f64::from(geom.center.0), f64::from(geom.center.1));
    let half = f64::from(out) / 2.0;
    // Rotate by -angle around the centre (levels the eyes), scale, move the centre to the middle.
    let a = scale * c;
    let b = scale * s;
    [
        [a, b, half - a * cx - b * cy],
        [-b, a, half + b * cx - a * cy],
    ]
}

/// Pixel format a crop is produced in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CropColor {
    /// One channel, BT.601 luma.
    Gray,
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red.
    Bgr,
}

/// Cuts the crop for `geom` out of `frame` (packed RGB Mat) as an `out` x `out` 8-bit image in
/// `color`. Large faces are first shrunk with area averaging so the warp does not alias.
pub fn extract_crop(
    frame: &impl FrameMat,
    geom: &CropGeometry,
    out: u32,
    color: CropColor,
) -> opencv::Result<Mat> {
    convert_color(cut_square(frame, geom, out)?, color)
}

/// [`extract_crop`] from a frame's planes: the luma cut as an RGB frame would be, each chroma
/// plane warped onto the same pixels, one Y'CbCr → RGB conversion of the crop.
pub fn extract_crop_from(
    image: &FrameImage<'_>,
    geom: &CropGeometry,
    out: u32,
    color: CropColor,
) -> opencv::Result<Mat> {
    let luma = plane_mat(&image.main)?;
    if image.format == PixelFormat::Rgb {
        return extract_crop(&luma, geom, out, color);
    }
    let y = cut_square(&luma, geom, out)?;
    let rgb = planes_to_rgb(image, &y, crop_affine(geom, out))?;
    convert_color(rgb, color)
}

/// The crop square of `geom` cut out of `frame` (any number of channels) as `out` x `out`.
fn cut_square(frame: &impl FrameMat, geom: &CropGeometry, out: u32) -> opencv::Result<Mat> {
    let (fw, fh) = (frame.cols(), frame.rows());
    // Bounding box of the rotated square, clamped to the frame.
    let (s, c) = geom.angle_deg.to_radians().sin_cos();
    let reach = geom.side * (s.abs() + c.abs()) / 2.0 + 2.0;
    let x0 = ((geom.center.0 - reach).floor() as i32).clamp(0, fw.max(1) - 1);
    let y0 = ((geom.center.1 - reach).floor() as i32).clamp(0, fh.max(1) - 1);
    let x1 = ((geom.center.0 + reach).ceil() as i32).clamp(x0 + 1, fw.max(1));
    let y1 = ((geom.center.1 + reach).ceil() as i32).clamp(y0 + 1, fh.max(1));
    let roi = Mat::roi(frame, Rect::new(x0, y0, x1 - x0, y1 - y0))?;
    let mut local = CropGeometry {
        center: (geom.center.0 - x0 as f32, geom.center.1 - y0 as f32),
        ..*geom
    };
    let shrink = 2.0 * out as f32 / geom.side;
    let mut shrunk = Mat::default();
    let source: &Mat = if shrink < 1.0 {
        let w = ((x1 - x0) as f32 * shrink).round().max(1.0) as i32;
        let h = ((y1 - y0) as f32 * shrink).round().max(1.0) as i32;
        imgproc::resize(
            &roi,
            &mut shrunk,
            Size::new(w, h),
            0.0,
            0.0,
            imgproc::INTER_AREA,
        )?;
        let (sx, sy) = (w as f32 / (x1 - x0) as f32, h as f32 / (y1 - y0) as f32);
        local.center = (local.center.0 * sx, local.center.1 * sy);
        local.side *= (sx + sy) / 2.0;
        &shrunk
    } else {
        // `roi` borrows `frame`; a shallow copy keeps one type for both branches.
        shrunk = roi.try_clone()?;
        &shrunk
    };
    let m = crop_affine(&local, out);
    let m = Mat::from_slice_2d(&[m[0].to_vec(), m[1].to_vec()])?;
    let mut warped = Mat::default();
    imgproc::warp_affine(
        source,
        &mut warped,
        &m,
        Size::new(out as i32, out as i32),
        imgproc::INTER_LINEAR,
        cv::BORDER_REPLICATE,
        Scalar::default(),
    )?;
    Ok(warped)
}

/// An OpenCV view of one plane (no copy): 8-bit with the plane's 1, 2 or 3 channels.
pub fn plane_mat<'a>(plane: &Plane<'a>) -> opencv::Result<BoxedRef<'a, Mat>> {
    let (rows, cols) = (plane.height as i32, plane.width as i32);
    match plane.channels {
        1 => Mat::new_rows_cols_with_bytes::<u8>(rows, cols, plane.data),
        2 => Mat::new_rows_cols_with_bytes::<Vec2b>(rows, cols, plane.data),
        _ => Mat::new_rows_cols_with_bytes::<Vec3b>(rows, cols, plane.data),
    }
}

/// `m` after `first`: the affine map applying `first`, then `m`.
fn compose(m: [[f64; 3]; 2], first: [[f64; 3]; 2]) -> [[f64; 3]; 2] {
    let row = |r: [f64; 3]| {
        [
            r[0] * first[0][0] + r[1] * first[1][0],
            r[0] * first[0][1] + r[1] * first[1][1],
            r[0] * first[0][2] + r[1] * first[1][2] + r[2],
        ]
    };
    [row(m[0]), row(m[1])]
}

/// Warps `src` (one plane, any channels) into a `size` image by `m` (destination ← source
/// pixels): only the region the output covers is read, first shrunk with area averaging
/// along an axis the map shrinks by more than 2 (as [`extract_crop`] does), so it does not
/// alias. Bilinear, edges replicated.
fn warp_plane(src: &impl FrameMat, m: [[f64; 3]; 2], size: Size) -> opencv::Result<Mat> {
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    if det.abs() < 1e-12 {
        return Err(opencv::Error::new(
            cv::StsBadArg,
            "degenerate crop map".to_string(),
        ));
    }
    // Source pixels of the output's corners: the inverse map.
    let inv = [
        [m[1][1] / det, -m[0][1] / det],
        [-m[1][0] / det, m[0][0] / det],
    ];
    let source_of = |x: f64, y: f64| {
        let (dx, dy) = (x - m[0][2], y - m[1][2]);
        (
            inv[0][0] * dx + inv[0][1] * dy,
            inv[1][0] * dx + inv[1][1] * dy,
        )
    };
    let (ow, oh) = (f64::from(size.width), f64::from(size.height));
    let corners = [
        source_of(-0.5, -0.5),
        source_of(ow, -0.5),
        source_of(-0.5, oh),
        source_of(ow, oh),
    ];
    let (cols, rows) = (src.cols().max(1), src.rows().max(1));
    let lo = |f: fn(&(f64, f64)) -> f64| corners.iter().map(f).fold(f64::INFINITY, f64::min);
    let hi = |f: fn(&(f64, f64)) -> f64| corners.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
    let x0 = ((lo(|c| c.0) - 2.0).floor() as i32).clamp(0, cols - 1);
    let y0 = ((lo(|c| c.1) - 2.0).floor() as i32).clamp(0, rows - 1);
    let x1 = ((hi(|c| c.0) + 2.0).ceil() as i32).clamp(x0 + 1, cols);
    let y1 = ((hi(|c| c.1) + 2.0).ceil() as i32).clamp(y0 + 1, rows);
    let roi = Mat::roi(src, Rect::new(x0, y0, x1 - x0, y1 - y0))?;
    let mut local = compose(m, [[1.0, 0.0, f64::from(x0)], [0.0, 1.0, f64::from(y0)]]);
    // Output pixels per source pixel along each source axis.
    let (sx, sy) = (m[0][0].hypot(m[1][0]), m[0][1].hypot(m[1][1]));
    let mut shrunk = Mat::default();
    let source: &Mat = if 2.0 * sx < 1.0 || 2.0 * sy < 1.0 {
        let (w, h) = (x1 - x0, y1 - y0);
        let nw = ((f64::from(w) * (2.0 * sx).min(1.0)).round() as i32).max(1);
        let nh = ((f64::from(h) * (2.0 * sy).min(1.0)).round() as i32).max(1);
        imgproc::resize(
            &roi,
            &mut shrunk,
            Size::new(nw, nh),
            0.0,
            0.0,
            imgproc::INTER_AREA,
        )?;
        let (fx, fy) = (f64::from(nw) / f64::from(w), f64::from(nh) / f64::from(h));
        // Shrunk pixel r covers region pixel (r + 0.5) / f - 0.5.
        local = compose(
            local,
            [
                [1.0 / fx, 0.0, 0.5 / fx - 0.5],
                [0.0, 1.0 / fy, 0.5 / fy - 0.5],
            ],
        );
        &shrunk
    } else {
        shrunk = roi.try_clone()?;
        &shrunk
    };
    let local = Mat::from_slice_2d(&[local[0].to_vec(), local[1].to_vec()])?;
    let mut warped = Mat::default();
    imgproc::warp_affine(
        source,
        &mut warped,
        &local,
        size,
        imgproc::INTER_LINEAR,
        cv::BORDER_REPLICATE,
        Scalar::default(),
    )?;
    Ok(warped)
}

/// RGB (8-bit, 3 channels) of a crop whose luma is `y`, cut from `image` by `m` (crop ← frame
/// pixels): each chroma plane is warped by `m` mapped into its own subsampled pixels, then the
/// crop is converted with the frame's matrix and range. Gray frames give R = G = B = Y.
fn planes_to_rgb(image: &FrameImage<'_>, y: &Mat, m: [[f64; 3]; 2]) -> opencv::Result<Mat> {
    let size = Size::new(y.cols(), y.rows());
    let sub = image.format.subsampling();
    let (ox, oy) = image.color.chroma_offset(sub);
    // Chroma sample p sits at luma sub * p + offset.
    let to_luma = [[f64::from(sub.0), 0.0, ox], [0.0, f64::from(sub.1), oy]];
    let chroma_map = compose(m, to_luma);
    let convert = image.color.converter();
    let luma = y.data_bytes()?;
    let mut rgb =
        Mat::new_rows_cols_with_default(size.height, size.width, cv::CV_8UC3, Scalar::all(0.0))?;
    let out = rgb.data_bytes_mut()?;
    match image.chroma {
        Chroma::None => {
            for (px, &l) in out.chunks_exact_mut(3).zip(luma) {
                px.copy_from_slice(&[l, l, l]);
            }
        }
        Chroma::Planar(u, v) => {
            let u = warp_plane(&plane_mat(&u)?, chroma_map, size)?;
            let v = warp_plane(&plane_mat(&v)?, chroma_map, size)?;
            convert.rgb_row_u8(luma, u.data_bytes()?, v.data_bytes()?, out);
        }
        Chroma::Interleaved(uv) => {
            let uv = warp_plane(&plane_mat(&uv)?, chroma_map, size)?;
            let uv = uv.data_bytes()?;
            for (i, px) in out.chunks_exact_mut(3).enumerate() {
                px.copy_from_slice(&convert.rgb(luma[i], uv[2 * i], uv[2 * i + 1]));
            }
        }
    }
    Ok(rgb)
}

#[cfg(test)]
mod tests {
    use super::super::detection::BBox;
    use super::*;

    fn det(landmarks: Option<[[f32; 2]; 5]>) -> Detection {
        Detection {
            bbox: BBox {
                x: 100.0,
                y: 50.0,
                w: 80.0,
                h: 100.0,
            },
            score: 0.9,
            landmarks,
        }
    }

    fn apply(m: &[[f64; 3]; 2], x: f64, y: f64) -> (f64, f64) {
        (
            m[0][0] * x + m[0][1] * y + m[0][2],
            m[1][0] * x + m[1][1] * y + m[1][2],
        )
    }

    #[test]
    fn square_crop_with_margin_around_the_box_centre() {
        let g = crop_geometry(&det(None), 0.2, true, 640, 480);
        assert_eq!(g.center, (140.0, 100.0));
        assert!((g.side - 120.0).abs() < 1e-4);
        assert_eq!(g.angle_deg, 0.0);
        let m = crop_affine(&g, 64);
        let (cx, cy) = apply(&m, 140.0, 100.0);
        assert!((cx - 32.0).abs() < 1e-4 && (cy - 32.0).abs() < 1e-4);
        // The square's corners land on the crop's corners.
        let (x, y) = apply(&m, 80.0, 40.0);
        assert!(x.abs() < 1e-4 && y.abs() < 1e-4);
        let (x, y) = apply(&m, 200.0, 160.0);
        assert!((x - 64.0).abs() < 1e-4 && (y - 64.0).abs() < 1e-4);
    }

    #[test]
    fn alignment_levels_the_eyes() {
        // Eyes tilted by 30 degrees.
        let (cx, cy) = (140.0f32, 90.0f32);
        let (dx, dy) = (
            20.0 * 30f32.to_radians().cos(),
            20.0 * 30f32.to_radians().sin(),
        );
        let mut lm = [[0.0f32; 2]; 5];
        lm[0] = [cx - dx, cy - dy];
        lm[1] = [cx + dx, cy + dy];
        let g = crop_geometry(&det(Some(lm)), 0.2, true, 640, 480);
        assert!((g.angle_deg - 30.0).abs() < 1e-3);
        let m = crop_affine(&g, 64);
        let (_, ry) = apply(&m, f64::from(lm[0][0]), f64::from(lm[0][1]));
        let (_, ly) = apply(&m, f64::from(lm[1][0]), f64::from(lm[1][1]));
        assert!((ry - ly).abs() < 1e-6, "eyes at y {ry} and {ly}");
        assert_eq!(
            crop_geometry(&det(Some(lm)), 0.2, false, 640, 480).angle_deg,
            0.0
        );
    }

    #[test]
    fn crops_stay_inside_the_frame() {
        // Box (100, 50, 80, 100) in a 150x120 frame: side 120 fits the height, shifted inside.
        let g = crop_geometry(&det(None), 0.2, false, 150, 120);
        assert!((g.side - 120.0).abs() < 1e-4);
        assert_eq!(g.center, (90.0, 60.0));
        // A face filling a 48x48 image is cut as the whole image.
        let tight = Detection {
            bbox: BBox {
                x: 3.0,
                y: 0.0,
                w: 42.0,
                h: 48.0,
            },
            score: 0.9,
            landmarks: None,
        };
        let g = crop_geometry(&tight, 0.2, false, 48, 48);
        assert_eq!((g.center, g.side), ((24.0, 24.0), 48.0));
    }

    #[test]
    fn crop_of_a_synthetic_frame_has_the_right_size_and_content() {
        // 200x160 RGB frame: left half black, right half white.
        let (w, h) = (200usize, 160usize);
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in w / 2..w {
                rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let frame = Mat::new_rows_cols_with_bytes::<cv::Vec3b>(h as i32, w as i32, &rgb).unwrap();
        let g = CropGeometry {
            center: (100.0, 80.0),
            side: 150.0,
            angle_deg: 0.0,
        };
        let crop = extract_crop(&frame, &g, 64, CropColor::Gray).unwrap();
        assert_eq!((crop.cols(), crop.rows(), crop.channels()), (64, 64, 1));
        let bytes = crop.data_bytes().unwrap();
        assert!(bytes[32 * 64 + 5] < 10, "left is dark");
        assert!(bytes[32 * 64 + 58] > 245, "right is bright");
    }

    #[test]
    fn box_padded_crop_keeps_the_aspect_and_pads_the_sides_with_zeros() {
        // A 400x300 white frame; a 60 wide, 120 high box: its crop is the box scaled to 56x112
        // with 28 black columns each side.
        let (w, h) = (400usize, 300usize);
        let rgb = vec![255u8; w * h * 3];
        let frame = Mat::new_rows_cols_with_bytes::<cv::Vec3b>(h as i32, w as i32, &rgb).unwrap();
        let det = Detection {
            bbox: BBox {
                x: 100.0,
                y: 50.0,
                w: 60.0,
                h: 120.0,
            },
            score: 0.9,
            landmarks: None,
        };
        let crop = extract_box_padded(&frame, &det, 0.0, 112, CropColor::Rgb).unwrap();
        assert_eq!((crop.cols(), crop.rows(), crop.channels()), (112, 112, 3));
        let bytes = crop.data_bytes().unwrap();
        let at = |x: usize, y: usize| bytes[(y * 112 + x) * 3];
        assert_eq!(at(27, 56), 0, "left padding");
        assert_eq!(at(28, 56), 255, "image starts");
        assert_eq!(at(83, 56), 255, "image ends");
        assert_eq!(at(84, 56), 0, "right padding");
        assert_eq!((at(56, 0), at(56, 111)), (255, 255), "full height");
        // An odd remainder: 61 wide at scale 1 leaves 51 columns, 25 before and 26 after.
        let odd = Detection {
            bbox: BBox {
                x: 100.0,
                y: 50.0,
                w: 61.0,
                h: 112.0,
            },
            ..det
        };
        let crop = extract_box_padded(&frame, &odd, 0.0, 112, CropColor::Gray).unwrap();
        let bytes = crop.data_bytes().unwrap();
        let row: Vec<u8> = bytes[56 * 112..57 * 112].to_vec();
        let first = row.iter().position(|&b| b > 0).unwrap();
        let last = row.iter().rposition(|&b| b > 0).unwrap();
        assert_eq!((first, 111 - last), (25, 26));
    }
}
