//! Face detections and the pure geometry on them: YuNet output decoding, IoU, NMS.

use serde::Serialize;

/// An axis-aligned box in frame pixels: top-left corner, width, height.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BBox {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
}

impl BBox {
    /// Area in square pixels (0 for degenerate boxes).
    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    /// Centre point.
    pub fn center(&self) -> (f32, f32) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }

    /// Intersection over union with `other`, in [0, 1].
    pub fn iou(&self, other: &BBox) -> f32 {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = (self.x + self.w).min(other.x + other.w);
        let y1 = (self.y + self.h).min(other.y + other.h);
        let inter = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    /// The box scaled by `1/scale` (detector input pixels → frame pixels).
    pub fn unscaled(&self, scale: f32) -> BBox {
        BBox {
            x: self.x / scale,
            y: self.y / scale,
            w: self.w / scale,
            h: self.h / scale,
        }
    }
}

/// Five facial landmarks, OpenCV/YuNet order: right eye, left eye, nose tip, right mouth
/// corner, left mouth corner ("right" = the person's right, on the image's left).
pub type Landmarks = [[f32; 2]; 5];

/// One detected face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Face box in frame pixels.
    pub bbox: BBox,
    /// Detector confidence in [0, 1].
    pub score: f32,
    /// Landmarks in frame pixels (YuNet has them, the Haar fallback does not).
    pub landmarks: Option<Landmarks>,
}

/// YuNet's outputs for one stride: per-anchor class score, objectness, box and landmarks.
pub struct StrideOutputs<'a> {
    /// Stride in input pixels (8, 16 or 32).
    pub stride: u32,
    /// `cls_s`, one value per anchor (already sigmoid).
    pub cls: &'a [f32],
    /// `obj_s`, one value per anchor (already sigmoid).
    pub obj: &'a [f32],
    /// `bbox_s`, four values per anchor.
    pub bbox: &'a [f32],
    /// `kps_s`, ten values per anchor.
    pub kps: &'a [f32],
}

/// Decodes YuNet outputs for an input tensor of `input_w` x `input_h` into detections (in
/// input pixels) scoring at least `threshold`, before NMS. Anchors are row-major per stride;
/// `score = sqrt(cls * obj)`, box centre `(col + dx) * s`, size `exp(dw) * s`, landmark
/// `(col + kx) * s` (MODELS.md, verified against OpenCV's FaceDetectorYN).
pub fn decode_yunet(
    strides: &[StrideOutputs<'_>],
    input_w: u32,
    input_h: u32,
    threshold: f32,
) -> Vec<Detection> {
    let mut out = Vec::new();
    for so in strides {
        let s = so.stride as f32;
        let cols = (input_w / so.stride) as usize;
        let rows = (input_h / so.stride) as usize;
        let anchors = (cols * rows)
            .min(so.cls.len())
            .min(so.obj.len())
            .min(so.bbox.len() / 4)
            .min(so.kps.len() / 10);
        for i in 0..anchors {
            let score = (so.cls[i].clamp(0.0, 1.0) * so.obj[i].clamp(0.0, 1.0)).sqrt();
            if score < threshold {
                continue;
            }
            let (row, col) = ((i / cols) as f32, (i % cols) as f32);
            let b = &so.bbox[i * 4..i * 4 + 4];
            let cx = (col + b[0]) * s;
            let cy = (row + b[1]) * s;
            let w = b[2].exp() * s;
            let h = b[3].exp() * s;
            let k = &so.kps[i * 10..i * 10 + 10];
            let mut landmarks = [[0.0f32; 2]; 5];
            for (j, lm) in landmarks.iter_mut().enumerate() {
                *lm = [(k[2 * j] + col) * s, (k[2 * j + 1] + row) * s];
            }
            out.push(Detection {
                bbox: BBox {
                    x: cx - w / 2.0,
                    y: cy - h / 2.0,
                    w,
                    h,
                },
                score,
                landmarks: Some(landmarks),
            });
        }
    }
    out
}

/// Greedy non-maximum suppression: keeps the best-scoring box of every cluster whose IoU
/// exceeds `iou_threshold`; the result is sorted by score, best first.
pub fn nms(mut dets: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::with_capacity(dets.len());
    for d in dets {
        if kept.iter().all(|k| k.bbox.iou(&d.bbox) <= iou_threshold) {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bbox(x: f32, y: f32, w: f32, h: f32) -> BBox {
        BBox { x, y, w, h }
    }

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = bbox(0.0, 0.0, 10.0, 10.0);
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
        assert_eq!(a.iou(&bbox(20.0, 20.0, 5.0, 5.0)), 0.0);
        let half = a.iou(&bbox(5.0, 0.0, 10.0, 10.0));
        assert!((half - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(bbox(0.0, 0.0, 0.0, 0.0).iou(&bbox(0.0, 0.0, 0.0, 0.0)), 0.0);
    }

    #[test]
    fn decode_places_boxes_and_landmarks_on_the_anchor_grid() {
        // 64x32 input, stride 32 → 2 columns x 1 row. Anchor 1 (col 1, row 0) is a face.
        let cls = [0.1, 0.81];
        let obj = [0.1, 1.0];
        let bbox_raw = [0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0, (2.0f32).ln()];
        let mut kps = [0.0f32; 20];
        for j in 0..5 {
            kps[10 + 2 * j] = 0.25;
            kps[10 + 2 * j + 1] = 0.75;
        }
        let outs = [StrideOutputs {
            stride: 32,
            cls: &cls,
            obj: &obj,
            bbox: &bbox_raw,
            kps: &kps,
        }];
        let dets = decode_yunet(&outs, 64, 32, 0.5);
        assert_eq!(dets.len(), 1);
        let d = dets[0];
        assert!((d.score - 0.9).abs() < 1e-6);
        // centre (1.5*32, 0.5*32) = (48, 16); w = 32, h = 64.
        assert!((d.bbox.x - 32.0).abs() < 1e-4 && (d.bbox.w - 32.0).abs() < 1e-4);
        assert!((d.bbox.y - (16.0 - 32.0)).abs() < 1e-4 && (d.bbox.h - 64.0).abs() < 1e-4);
        let lm = d.landmarks.unwrap();
        assert!((lm[0][0] - 1.25 * 32.0).abs() < 1e-4 && (lm[4][1] - 0.75 * 32.0).abs() < 1e-4);
    }

    #[test]
    fn decode_tolerates_short_outputs() {
        let outs = [StrideOutputs {
            stride: 8,
            cls: &[1.0],
            obj: &[1.0],
            bbox: &[0.0; 3],
            kps: &[],
        }];
        assert!(decode_yunet(&outs, 64, 64, 0.1).is_empty());
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let d = |x: f32, score: f32| Detection {
            bbox: bbox(x, 0.0, 10.0, 10.0),
            score,
            landmarks: None,
        };
        let kept = nms(vec![d(0.0, 0.8), d(1.0, 0.95), d(50.0, 0.7)], 0.3);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.95);
        assert_eq!(kept[1].bbox.x, 50.0);
    }
}
