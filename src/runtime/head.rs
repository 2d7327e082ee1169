//! Heads shared by the encoders of every stage: a classifier's labels and their (valence,
//! arousal) points, and the load-time check that a classifier's output fits its head.

use crate::manifest::{ManifestError, ModelEntry};

/// Checks that a classifier's first output gives one value per label of `head` (dynamic sizes
/// pass), so a model swapped in the manifest fails at load time with a clear message.
pub fn check_class_output(
    session: &ort::session::Session,
    head: &ClassHead,
    path: &std::path::Path,
) -> Result<(), super::ModelError> {
    let wrong = |message: String| super::ModelError::WrongModel {
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

/// A distribution from raw outputs: softmax of logits, else the clipped values renormalised.
pub(crate) fn probabilities(raw: &[f32], softmax: bool) -> Vec<f32> {
    let mut p: Vec<f32> = if softmax {
        let max = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        raw.iter().map(|x| (x - max).exp()).collect()
    } else {
        raw.iter().map(|x| x.max(0.0)).collect()
    };
    normalize(&mut p);
    p
}

/// Scales `p` to sum to 1; uniform when its sum is 0 or not finite.
pub(crate) fn normalize(p: &mut [f32]) {
    let sum: f32 = p.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        p.iter_mut().for_each(|x| *x /= sum);
    } else {
        let n = p.len().max(1) as f32;
        p.iter_mut().for_each(|x| *x = 1.0 / n);
    }
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
        probabilities(raw, self.softmax)
    }

    /// (valence, arousal) as the probability-weighted mean of the labels' circumplex points.
    pub fn valence_arousal(&self, probs: &[f32]) -> (f32, f32) {
        probs
            .iter()
            .zip(&self.va)
            .fold((0.0, 0.0), |(v, a), (p, [lv, la])| (v + p * lv, a + p * la))
    }
}
