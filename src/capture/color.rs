//! Y'CbCr → R'G'B' for the decoder's planes: the matrix, range and chroma siting the caps name
//! (BT.601, BT.709, BT.2020, ...; limited or full range), applied per pixel to small images
//! only (face crops, the detector's input, the display copy), so no full-resolution RGB frame
//! is ever made.

use gstreamer_video as gst_video;

/// How a frame's Y'CbCr values map to R'G'B' and where its chroma samples sit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YuvColor {
    /// Luma weight of red (Kr).
    pub kr: f32,
    /// Luma weight of blue (Kb).
    pub kb: f32,
    /// Values span 0..255 (JPEG) rather than 16..235 (luma) and 16..240 (chroma).
    pub full_range: bool,
    /// Chroma samples sit on the even luma columns (MPEG-2, H.264) rather than between two.
    pub cosited_h: bool,
    /// Chroma samples sit on the even luma rows rather than between two.
    pub cosited_v: bool,
}

impl Default for YuvColor {
    /// BT.601, limited range, MPEG-2 siting: what GStreamer assumes for SD video.
    fn default() -> Self {
        Self {
            kr: 0.299,
            kb: 0.114,
            full_range: false,
            cosited_h: true,
            cosited_v: false,
        }
    }
}

impl YuvColor {
    /// The conversion the caps describe; an unknown matrix is taken as BT.601 (GStreamer's
    /// own default for SD video) and an unknown range as limited.
    pub fn from_info(info: &gst_video::VideoInfo) -> Self {
        let colorimetry = info.colorimetry();
        let (kr, kb) = colorimetry
            .matrix()
            .kr_kb()
            .map_or((0.299, 0.114), |(r, b)| (r as f32, b as f32));
        let site = info.chroma_site();
        Self {
            kr,
            kb,
            full_range: colorimetry.range() == gst_video::VideoColorRange::Range0_255,
            cosited_h: site.contains(gst_video::VideoChromaSite::H_COSITED),
            cosited_v: site.contains(gst_video::VideoChromaSite::V_COSITED),
        }
    }

    /// Where chroma sample `p` of a plane subsampled by `sub` sits in luma pixels, as
    /// `sub * p + offset`: the offset for each axis.
    pub fn chroma_offset(&self, sub: (u32, u32)) -> (f64, f64) {
        let off = |s: u32, cosited: bool| {
            if cosited || s <= 1 {
                0.0
            } else {
                (f64::from(s) - 1.0) / 2.0
            }
        };
        (off(sub.0, self.cosited_h), off(sub.1, self.cosited_v))
    }

    /// The per-pixel converter.
    pub fn converter(&self) -> YuvToRgb {
        let (kr, kb) = (self.kr, self.kb);
        let kg = 1.0 - kr - kb;
        let (y_scale, y_offset, c_scale) = if self.full_range {
            (1.0, 0.0, 1.0)
        } else {
            (255.0 / 219.0, 16.0, 255.0 / 224.0)
        };
        YuvToRgb {
            y_scale,
            y_offset,
            r_v: 2.0 * (1.0 - kr) * c_scale,
            g_u: -2.0 * kb * (1.0 - kb) / kg * c_scale,
            g_v: -2.0 * kr * (1.0 - kr) / kg * c_scale,
            b_u: 2.0 * (1.0 - kb) * c_scale,
        }
    }
}

/// Precomputed coefficients of one [`YuvColor`]: R'G'B' of an 8-bit Y'CbCr triple.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YuvToRgb {
    y_scale: f32,
    y_offset: f32,
    r_v: f32,
    g_u: f32,
    g_v: f32,
    b_u: f32,
}

impl YuvToRgb {
    /// R, G, B in 0..255 (rounded, clamped) of luma `y` and chroma `u` (Cb), `v` (Cr).
    #[inline]
    pub fn rgb(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let l = (f32::from(y) - self.y_offset) * self.y_scale;
        let (u, v) = (f32::from(u) - 128.0, f32::from(v) - 128.0);
        let q = |x: f32| (x + 0.5).clamp(0.0, 255.0) as u8;
        [
            q(l + self.r_v * v),
            q(l + self.g_u * u + self.g_v * v),
            q(l + self.b_u * u),
        ]
    }

    /// [`YuvToRgb::rgb`] as floats, for one row of planes at once: the same levels (rounded
    /// and clamped alike), written without going through bytes so the loop vectorises (the
    /// detector's input is floats). Converts as many pixels as the shortest slice holds.
    pub fn rgb_row_f32(&self, y: &[u8], u: &[u8], v: &[u8], out: [&mut [f32]; 3]) {
        let [r, g, b] = out;
        let n = y
            .len()
            .min(u.len())
            .min(v.len())
            .min(r.len())
            .min(g.len())
            .min(b.len());
        let (y, u, v) = (&y[..n], &u[..n], &v[..n]);
        let (r, g, b) = (&mut r[..n], &mut g[..n], &mut b[..n]);
        let q = |x: f32| floor_small((x + 0.5).clamp(0.0, 255.0));
        for i in 0..n {
            let l = (f32::from(y[i]) - self.y_offset) * self.y_scale;
            let (cu, cv) = (f32::from(u[i]) - 128.0, f32::from(v[i]) - 128.0);
            r[i] = q(l + self.r_v * cv);
            g[i] = q(l + self.g_u * cu + self.g_v * cv);
            b[i] = q(l + self.b_u * cu);
        }
    }

    /// [`YuvToRgb::rgb`] for one row of planes at once, into packed RGB bytes (`out` three
    /// bytes a pixel): the same levels, computed so the loop vectorises.
    pub fn rgb_row_u8(&self, y: &[u8], u: &[u8], v: &[u8], out: &mut [u8]) {
        let n = y.len().min(u.len()).min(v.len()).min(out.len() / 3);
        let (y, u, v) = (&y[..n], &u[..n], &v[..n]);
        // The integer's bits of the float `k + 2^23` are `k` for 0 <= k < 2^23.
        let q = |x: f32| {
            let k = floor_small((x + 0.5).clamp(0.0, 255.0));
            ((k + TWO_POW_23).to_bits() & 0xff) as u8
        };
        for (i, px) in out[..3 * n].chunks_exact_mut(3).enumerate() {
            let l = (f32::from(y[i]) - self.y_offset) * self.y_scale;
            let (cu, cv) = (f32::from(u[i]) - 128.0, f32::from(v[i]) - 128.0);
            px[0] = q(l + self.r_v * cv);
            px[1] = q(l + self.g_u * cu + self.g_v * cv);
            px[2] = q(l + self.b_u * cu);
        }
    }
}

/// 2^23: from there on every f32 is a whole number.
const TWO_POW_23: f32 = 8_388_608.0;

/// `x.floor()` for `x` in [0, 2^23), with float additions only (so it vectorises without
/// SSE4.1): adding and taking away 2^23 rounds to the nearest integer, one too high is taken
/// back. Equals the `as u8` truncation of [`YuvToRgb::rgb`] on its clamped values.
#[inline]
fn floor_small(x: f32) -> f32 {
    let r = (x + TWO_POW_23) - TWO_POW_23;
    if r > x { r - 1.0 } else { r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limited_range_black_white_and_primaries() {
        let c = YuvColor::default().converter();
        assert_eq!(c.rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(c.rgb(235, 128, 128), [255, 255, 255]);
        // BT.601 red: Y 81, Cb 90, Cr 240.
        let [r, g, b] = c.rgb(81, 90, 240);
        assert!(r >= 253 && g <= 2 && b <= 2, "{r} {g} {b}");
        let bt709 = YuvColor {
            kr: 0.2126,
            kb: 0.0722,
            ..YuvColor::default()
        }
        .converter();
        // BT.709 green: Y 173, Cb 42, Cr 26.
        let [r, g, b] = bt709.rgb(173, 42, 26);
        assert!(r <= 2 && g >= 253 && b <= 2, "{r} {g} {b}");
    }

    #[test]
    fn the_row_conversions_give_the_same_levels_as_the_pixel_one() {
        for color in [
            YuvColor::default(),
            YuvColor {
                full_range: true,
                kr: 0.2126,
                kb: 0.0722,
                ..YuvColor::default()
            },
        ] {
            let c = color.converter();
            let values: Vec<u8> = (0..=255).step_by(3).chain([255]).collect();
            for &y in &values {
                let n = values.len() * values.len();
                let ys = vec![y; n];
                let us: Vec<u8> = values.iter().flat_map(|&u| vec![u; values.len()]).collect();
                let vs: Vec<u8> = values.iter().cycle().take(n).copied().collect();
                let (mut r, mut g, mut b) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
                c.rgb_row_f32(&ys, &us, &vs, [&mut r, &mut g, &mut b]);
                let mut packed = vec![0u8; 3 * n];
                c.rgb_row_u8(&ys, &us, &vs, &mut packed);
                for i in 0..n {
                    let [er, eg, eb] = c.rgb(ys[i], us[i], vs[i]);
                    assert_eq!([r[i], g[i], b[i]], [er, eg, eb].map(f32::from));
                    assert_eq!(packed[3 * i..3 * i + 3], [er, eg, eb]);
                }
            }
        }
    }

    #[test]
    fn full_range_keeps_gray_values() {
        let c = YuvColor {
            full_range: true,
            ..YuvColor::default()
        }
        .converter();
        for y in [0u8, 37, 128, 255] {
            assert_eq!(c.rgb(y, 128, 128), [y, y, y]);
        }
    }

    #[test]
    fn chroma_siting_offsets() {
        let mpeg2 = YuvColor::default();
        assert_eq!(mpeg2.chroma_offset((2, 2)), (0.0, 0.5));
        assert_eq!(mpeg2.chroma_offset((1, 1)), (0.0, 0.0));
        let jpeg = YuvColor {
            cosited_h: false,
            ..mpeg2
        };
        assert_eq!(jpeg.chroma_offset((2, 1)), (0.5, 0.0));
    }
}
