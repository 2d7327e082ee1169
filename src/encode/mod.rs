//! Encoders: ONNX models that turn face crops and speech windows into class probabilities (or
//! regressed valence and arousal), and the heads that read their outputs: class heads map
//! probabilities to (valence, arousal) on Russell's circumplex, member heads put each face
//! model's output into the ensemble's common label space.

pub mod expression;

/// The speech encoder, now with the audio stage ([`crate::audio::speech`]); re-exported at its old path.
pub use crate::audio::speech;
/// The ONNX Runtime setup, now its own module ([`crate::runtime`]); re-exported at its old path.
pub use crate::runtime;

use opencv::core::Mat;
use opencv::prelude::*;

use crate::face::crop::{CropColor, CropShape};
use crate::manifest::{ManifestError, ModelEntry};
pub use crate::runtime::head::{ClassHead, check_class_output};
use crate::runtime::head::{normalize, probabilities};

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
    /// Per-channel standard deviation after scaling to [0, 1] (1/255 feeds raw 0..255).
    pub std: Vec<f32>,
    /// How the face is cut out of the frame.
    pub crop: CropShape,
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
        let crop = match input.crop.as_str() {
            "" | "aligned" => CropShape::Aligned,
            "box_pad" => CropShape::BoxPadded,
            other => {
                return Err(invalid(format!(
                    "input.crop '{other}' is not 'aligned' or 'box_pad'"
                )));
            }
        };
        Ok(Self {
            width: w,
            channels,
            bgr,
            channels_last,
            mean,
            std,
            crop,
        })
    }

    /// Shape of one input without the batch dimension: [w, w, c] (NHWC) or [c, w, w].
    pub fn dims(&self) -> Vec<usize> {
        let (w, c) = (self.width as usize, self.channels as usize);
        if self.channels_last {
            vec![w, w, c]
        } else {
            vec![c, w, w]
        }
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

/// Where a regressor's valence and arousal sit in its output row, and their range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VaOutputs {
    /// Output index of the valence.
    pub valence_index: usize,
    /// Output index of the arousal.
    pub arousal_index: usize,
    /// [low, high] of the raw values, rescaled to [-1, 1].
    pub range: [f32; 2],
}

impl VaOutputs {
    /// (valence, arousal) of one output row, rescaled to [-1, 1] and clamped there; `None` when
    /// the row is too short or a value is not finite.
    pub fn read(&self, row: &[f32]) -> Option<(f32, f32)> {
        let [lo, hi] = self.range;
        let rescale = |x: f32| (2.0 * (x - lo) / (hi - lo) - 1.0).clamp(-1.0, 1.0);
        let v = *row.get(self.valence_index)?;
        let a = *row.get(self.arousal_index)?;
        (v.is_finite() && a.is_finite()).then(|| (rescale(v), rescale(a)))
    }
}

/// The head of one face-ensemble member: its class outputs mapped onto the common labels
/// and/or its regressed valence and arousal (`classes`, `va`, `classes_va` in the manifest).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberHead {
    /// Number of class outputs (the first ones of the row); 0 for a pure regressor.
    pub classes: usize,
    /// Apply softmax to the class outputs first (they are logits).
    pub softmax: bool,
    /// Common label index of each class output; `None` drops the class.
    pub to_common: Vec<Option<usize>>,
    /// Regressed valence and arousal, when the model gives them.
    pub va: Option<VaOutputs>,
    /// Size of the common label space.
    pub common: usize,
}

/// One member's reading of one face.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberOutput {
    /// Probabilities in the common label order, when the member has classes.
    pub probs: Option<Vec<f32>>,
    /// Regressed (valence, arousal) in [-1, 1], when the member regresses them.
    pub va: Option<(f32, f32)>,
}

impl MemberHead {
    /// Reads the head of an ensemble member `role` onto `common_labels` (validated by the
    /// manifest: every class lands on a common label or is dropped with `""`).
    pub fn from_entry(
        role: &str,
        entry: &ModelEntry,
        common_labels: &[String],
    ) -> Result<Self, ManifestError> {
        let head = &entry.head;
        let invalid = |message: String| ManifestError::Invalid {
            role: role.to_owned(),
            message: format!("file {}: {message}", entry.file),
        };
        let (has_classes, has_va) = match head.kind.as_str() {
            "classes" => (true, false),
            "va" => (false, true),
            "classes_va" => (true, true),
            other => {
                return Err(invalid(format!(
                    "head.kind '{other}' is not classes, va or classes_va"
                )));
            }
        };
        let mut to_common = Vec::new();
        if has_classes {
            for label in &head.labels {
                let target = head.map.get(label).unwrap_or(label);
                if target.is_empty() {
                    to_common.push(None);
                    continue;
                }
                let index = common_labels
                    .iter()
                    .position(|c| c == target)
                    .ok_or_else(|| invalid(format!("label '{label}' lands on no common label")))?;
                to_common.push(Some(index));
            }
        }
        let va = if has_va {
            let (Some(valence_index), Some(arousal_index)) =
                (head.valence_index, head.arousal_index)
            else {
                return Err(invalid(
                    "a regressor head needs head.valence_index and head.arousal_index".into(),
                ));
            };
            Some(VaOutputs {
                valence_index,
                arousal_index,
                range: head.range.unwrap_or([-1.0, 1.0]),
            })
        } else {
            None
        };
        Ok(Self {
            classes: to_common.len(),
            softmax: head.activation == "logits",
            to_common,
            va,
            common: common_labels.len(),
        })
    }

    /// The shortest output row this head can read.
    pub fn min_outputs(&self) -> usize {
        let va = self
            .va
            .map_or(0, |v| v.valence_index.max(v.arousal_index) + 1);
        self.classes.max(va)
    }

    /// The output row length this head needs exactly, when it is fixed (a pure classifier:
    /// one value per label).
    pub fn exact_outputs(&self) -> Option<usize> {
        self.va.is_none().then_some(self.classes)
    }

    /// Checks a row length against [`Self::min_outputs`] / [`Self::exact_outputs`]; the
    /// message says what was expected.
    pub fn check_outputs(&self, k: usize) -> Result<(), String> {
        match self.exact_outputs() {
            Some(n) if k != n => Err(format!(
                "gives {k} values per face, the manifest's head has {n} labels"
            )),
            _ if k < self.min_outputs() => Err(format!(
                "gives {k} values per face, too few for the manifest's head (needs {}: {} classes{})",
                self.min_outputs(),
                self.classes,
                self.va.map_or(String::new(), |v| format!(
                    ", valence at {}, arousal at {}",
                    v.valence_index, v.arousal_index
                ))
            )),
            _ => Ok(()),
        }
    }

    /// Reads one output row (checked with [`Self::check_outputs`]): the class probabilities
    /// moved into the common label order (softmax or renormalised over the kept classes) and
    /// the regressed values.
    pub fn read(&self, row: &[f32]) -> MemberOutput {
        let probs = (self.classes > 0).then(|| {
            let raw = &row[..self.classes.min(row.len())];
            let p = probabilities(raw, self.softmax);
            let mut common = vec![0.0; self.common];
            for (p, target) in p.iter().zip(&self.to_common) {
                if let Some(i) = target {
                    common[*i] += p;
                }
            }
            normalize(&mut common);
            common
        });
        MemberOutput {
            probs,
            va: self.va.and_then(|v| v.read(row)),
        }
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

    fn member(kind: &str, extra: &str) -> MemberHead {
        let common: Vec<String> = ["angry", "happy", "neutral"].map(String::from).to_vec();
        let text = format!(
            "[models.m]\nfile='m.onnx'\nsha256='{}'\n[models.m.head]\nkind='{kind}'\n{extra}",
            "0".repeat(64)
        );
        let m = crate::manifest::Manifest::parse(&text).unwrap();
        MemberHead::from_entry("m", m.entry("m").unwrap(), &common).unwrap()
    }

    #[test]
    fn member_classes_land_in_the_common_order() {
        // Member order happy, anger, contempt (dropped), neutral.
        let h = member(
            "classes",
            "labels=['happy','anger','contempt','neutral']\n[models.m.head.map]\nanger='angry'\ncontempt=''\n",
        );
        assert_eq!(h.to_common, vec![Some(1), Some(0), None, Some(2)]);
        assert_eq!(h.exact_outputs(), Some(4));
        let out = h.read(&[0.4, 0.2, 0.2, 0.2]);
        let p = out.probs.unwrap();
        assert!(
            (p[0] - 0.25).abs() < 1e-6 && (p[1] - 0.5).abs() < 1e-6,
            "{p:?}"
        );
        assert!((p[2] - 0.25).abs() < 1e-6);
        assert_eq!(out.va, None);
        assert!(h.check_outputs(5).is_err());
    }

    #[test]
    fn regressor_heads_rescale_and_check_their_indices() {
        let h = member("va", "valence_index=1\narousal_index=0\nrange=[0.0, 1.0]\n");
        assert_eq!(
            (h.classes, h.min_outputs(), h.exact_outputs()),
            (0, 2, None)
        );
        assert_eq!(h.read(&[0.25, 1.0]).va, Some((1.0, -0.5)));
        assert_eq!(h.read(&[0.25, 7.0]).va, Some((1.0, -0.5)), "clamped");
        assert_eq!(h.read(&[f32::NAN, 0.0]).va, None);
        let err = h.check_outputs(1).unwrap_err();
        assert!(err.contains("too few"), "{err}");
        let h = member(
            "classes_va",
            "labels=['angry','happy']\nactivation='logits'\nvalence_index=2\narousal_index=3\n",
        );
        assert_eq!(h.min_outputs(), 4);
        let out = h.read(&[0.0, 0.0, 0.5, -0.5]);
        assert_eq!(out.probs.unwrap(), vec![0.5, 0.5, 0.0]);
        assert_eq!(out.va, Some((0.5, -0.5)));
    }
}
