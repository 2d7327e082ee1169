//! Encoders: ONNX models that turn face crops and speech windows into class probabilities, and
//! the class heads that map probabilities to (valence, arousal) on Russell's circumplex.

pub mod expression;
pub mod runtime;
pub mod speech;

use opencv::core::Mat;
use opencv::prelude::*;

use crate::face::crop::CropColor;
use crate::manifest::{ManifestError, ModelEntry};

/// How an image encoder wants its input: size, colour, layout and normalisation
/// (`(x / 255 - mean) / std` per channel), from the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInputSpec {
    /// Input width (= height: crops are square).
    pub width: u32,
    /// Colour channels: 1 (gray) or 3.
    pub channels: u32,
    /// Channel order for 3 channels: true for BGR, false for RGB.
    pub bgr: bool,
    /// NHWC (channels last) or NCHW.
    pub channels_last: bool,
    /// Per-channel mean after scaling to [0, 1].
    pub mean: Vec<f32>,
    /// Per-channel standard deviation after scaling to [0, 1].
    pub std: Vec<f32>,
}

impl ImageInputSpec {
    /// Reads the spec of a classifier entry; rejects what the crop path cannot produce.
    pub fn from_entry(role: &str, entry: &ModelEntry) -> Result<Self, ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            role: role.to_owned(),
            message,
        };
        let input = &entry.input;
        let [w, h] = input.size;
        if w == 0 || w != h || w > 1024 {
            return Err(invalid(format!(
                "input.size must be square and fixed (got {w}x{h})"
            )));
        }
        let (channels, bgr) = match input.color.as_str() {
            "GRAY" => (1, false),
            "RGB" => (3, false),
            "BGR" => (3, true),
            other => {
                return Err(invalid(format!(
                    "input.color '{other}' is not GRAY, RGB or BGR"
                )));
            }
        };
        let channels_last = match input.layout.as_str() {
            "NHWC" => true,
            "NCHW" => false,
            other => {
                return Err(invalid(format!(
                    "input.layout '{other}' is not NHWC or NCHW"
                )));
            }
        };
        let per_channel = |v: &Vec<f32>, default: f32, name: &str| match v.len() {
            0 => Ok(vec![default; channels as usize]),
            1 => Ok(vec![v[0]; channels as usize]),
            n if n == channels as usize => Ok(v.clone()),
            n => Err(invalid(format!(
                "input.{name} has {n} values for {channels} channels"
            ))),
        };
        let mean = per_channel(&input.mean, 0.0, "mean")?;
        let std = per_channel(&input.std, 1.0, "std")?;
        if std.iter().any(|s| *s <= 0.0) {
            return Err(invalid("input.std must be positive".into()));
        }
        Ok(Self {
            width: w,
            channels,
            bgr,
            channels_last,
            mean,
            std,
        })
    }

    /// Number of floats per image.
    pub fn len(&self) -> usize {
        (self.width * self.width * self.channels) as usize
    }

    /// True for a zero-sized input (never the case for a validated spec).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pixel format crops must be cut in.
    pub fn crop_color(&self) -> CropColor {
        match (self.channels, self.bgr) {
            (1, _) => CropColor::Gray,
            (_, true) => CropColor::Bgr,
            _ => CropColor::Rgb,
        }
    }

    /// Appends `crop` (8-bit, `width` x `width`, in [`Self::crop_color`]) normalised in the
    /// model's layout to `out`.
    pub fn append_normalized(&self, crop: &Mat, out: &mut Vec<f32>) -> opencv::Result<()> {
        let bytes = crop.data_bytes()?;
        let c = self.channels as usize;
        let plane = (self.width * self.width) as usize;
        if bytes.len() != plane * c {
            return Err(opencv::Error::new(
                opencv::core::StsBadSize,
                format!("crop has {} bytes, expected {}", bytes.len(), plane * c),
            ));
        }
        let scale: Vec<f32> = self.std.iter().map(|s| 1.0 / (255.0 * s)).collect();
        let offset: Vec<f32> = self
            .mean
            .iter()
            .zip(&self.std)
            .map(|(m, s)| m / s)
            .collect();
        if self.channels_last || c == 1 {
            out.extend(
                bytes
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| f32::from(b) * scale[i % c] - offset[i % c]),
            );
        } else {
            for ch in 0..c {
                out.extend(
                    bytes
                        .iter()
                        .skip(ch)
                        .step_by(c)
                        .map(|&b| f32::from(b) * scale[ch] - offset[ch]),
                );
            }
        }
        Ok(())
    }
}

/// Checks that a classifier's first output gives one value per label of `head` (dynamic sizes
/// pass), so a model swapped in the manifest fails at load time with a clear message.
pub fn check_class_output(
    session: &ort::session::Session,
    head: &ClassHead,
    path: &std::path::Path,
) -> Result<(), expression::EncodeError> {
    let wrong = |message: String| expression::EncodeError::WrongModel {
        path: path.to_owned(),
        message,
    };
    let output = session
        .outputs()
        .first()
        .ok_or_else(|| wrong("no output".into()))?;
    let dims: Vec<i64> = output
        .dtype()
        .tensor_shape()
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    if dims
        .last()
        .copied()
        .is_some_and(|n| n > 0 && n != head.labels.len() as i64)
    {
        return Err(wrong(format!(
            "output shape {dims:?} does not give one value per label ({} labels)",
            head.labels.len()
        )));
    }
    Ok(())
}

/// A classifier head: class labels and each label's (valence, arousal).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassHead {
    /// Labels in output order.
    pub labels: Vec<String>,
    /// (valence, arousal) per label, in output order.
    pub va: Vec<[f32; 2]>,
    /// Apply softmax to the raw output (logits) first.
    pub softmax: bool,
}

impl ClassHead {
    /// Reads a `classes` head from the manifest (validated there: every label has a VA point).
    pub fn from_entry(role: &str, entry: &ModelEntry) -> Result<Self, ManifestError> {
        let head = &entry.head;
        if head.kind != "classes" {
            return Err(ManifestError::Invalid {
                role: role.to_owned(),
                message: format!("head.kind is '{}', expected 'classes'", head.kind),
            });
        }
        let va = head
            .labels
            .iter()
            .map(|l| head.va.get(l).copied().unwrap_or([0.0, 0.0]))
            .collect();
        Ok(Self {
            labels: head.labels.clone(),
            va,
            softmax: head.activation == "logits",
        })
    }

    /// Probabilities from one row of raw output (softmax when the model gives logits;
    /// otherwise renormalised so rounding never leaves the simplex).
    pub fn probabilities(&self, raw: &[f32]) -> Vec<f32> {
        let mut p: Vec<f32> = if self.softmax {
            let max = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            raw.iter().map(|x| (x - max).exp()).collect()
        } else {
            raw.iter().map(|x| x.max(0.0)).collect()
        };
        let sum: f32 = p.iter().sum();
        if sum > 0.0 && sum.is_finite() {
            p.iter_mut().for_each(|x| *x /= sum);
        } else {
            let n = p.len().max(1) as f32;
            p.iter_mut().for_each(|x| *x = 1.0 / n);
        }
        p
    }

    /// (valence, arousal) as the probability-weighted mean of the labels' circumplex points.
    pub fn valence_arousal(&self, probs: &[f32]) -> (f32, f32) {
        probs
            .iter()
            .zip(&self.va)
            .fold((0.0, 0.0), |(v, a), (p, [lv, la])| (v + p * lv, a + p * la))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> ClassHead {
        ClassHead {
            labels: vec!["happy".into(), "sad".into()],
            va: vec![[0.8, 0.4], [-0.8, -0.4]],
            softmax: false,
        }
    }

    #[test]
    fn valence_arousal_is_the_probability_weighted_mean() {
        let h = head();
        assert_eq!(h.valence_arousal(&[1.0, 0.0]), (0.8, 0.4));
        let (v, a) = h.valence_arousal(&[0.75, 0.25]);
        assert!((v - 0.4).abs() < 1e-6 && (a - 0.2).abs() < 1e-6);
    }

    #[test]
    fn probabilities_are_a_distribution_even_for_bad_rows() {
        let mut h = head();
        let p = h.probabilities(&[0.6, 0.6]);
        assert!((p[0] - 0.5).abs() < 1e-6);
        assert_eq!(h.probabilities(&[f32::NAN, 0.0]), vec![0.5, 0.5]);
        h.softmax = true;
        let p = h.probabilities(&[0.0, 2.0f32.ln()]);
        assert!((p[1] - 2.0 / 3.0).abs() < 1e-6);
    }
}
