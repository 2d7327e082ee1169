//! Per-track fusion: one step fuses a face and a voice [`Estimate`] with the [`gates`] into one
//! value and a raw conflict ([`fuse_step`]); [`FaceTrackFusion`] holds a face track's state
//! across steps (one-euro smoothers for the fused valence and arousal, a [`ConflictTracker`])
//! and gives a [`FusedOutput`] per step.
//!
//! Everything here is pure and allocation-free per step (except the event list); no function
//! panics, and non-finite inputs are treated as missing rather than propagated.

use serde::Serialize;

use super::conflict::{Conflict, ConflictTracker, raw_conflict};
use super::gates::{Estimate, FACE, Gates, VOICE, gates};
use super::params::{FusionParamError, FusionParams};
use super::smoothing::OneEuro;
use crate::record::ConflictEvent;

/// One unsmoothed fusion step.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct FusedStep {
    /// Fused valence in [-1, 1]; `None` when neither modality is present.
    pub valence: Option<f32>,
    /// Fused arousal in [-1, 1]; `None` when neither modality is present.
    pub arousal: Option<f32>,
    /// The gates used.
    pub gates: Gates,
    /// Raw (unsmoothed) conflict; zero unless both modalities are present.
    pub conflict_raw: Conflict,
}

/// Fuses one face estimate and one voice estimate (either may be `None` or have reliability
/// 0): `x = g_face·x_face + g_voice·x_voice` per dimension with [`gates`], plus
/// [`raw_conflict`].
pub fn fuse_step(face: Option<Estimate>, voice: Option<Estimate>, p: &FusionParams) -> FusedStep {
    let f = face.and_then(Estimate::sanitized);
    let v = voice.and_then(Estimate::sanitized);
    let g = gates(
        f.map_or(0.0, |e| e.reliability),
        v.map_or(0.0, |e| e.reliability),
        p,
    );
    if f.is_none() && v.is_none() {
        return FusedStep {
            valence: None,
            arousal: None,
            gates: g,
            conflict_raw: Conflict::ZERO,
        };
    }
    let mix = |w: [f32; 2], xf: f32, xv: f32| (w[FACE] * xf + w[VOICE] * xv).clamp(-1.0, 1.0);
    let (fv, fa) = f.map_or((0.0, 0.0), |e| (e.valence, e.arousal));
    let (vv, va) = v.map_or((0.0, 0.0), |e| (e.valence, e.arousal));
    FusedStep {
        valence: Some(mix(g.valence, fv, vv)),
        arousal: Some(mix(g.arousal, fa, va)),
        gates: g,
        conflict_raw: raw_conflict(f, v, p),
    }
}

/// The fused, smoothed output for one face track at one time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FusedOutput {
    /// Smoothed fused valence in [-1, 1]; `None` when neither modality is present.
    pub valence: Option<f32>,
    /// Smoothed fused arousal in [-1, 1]; `None` when neither modality is present.
    pub arousal: Option<f32>,
    /// Smoothed conflict in [0, 1] (overall and per dimension).
    pub conflict: Conflict,
    /// This step's raw conflict.
    pub conflict_raw: Conflict,
    /// Whether a conflict event is in progress.
    pub conflict_active: bool,
    /// This step's gates.
    pub gates: Gates,
    /// Conflict events caused by this step (at most one).
    pub events: Vec<ConflictEvent>,
}

/// Per-face-track fusion state: one-euro smoothers for valence and arousal and a
/// [`ConflictTracker`].
#[derive(Debug, Clone, PartialEq)]
pub struct FaceTrackFusion {
    params: FusionParams,
    valence: OneEuro,
    arousal: OneEuro,
    conflict: ConflictTracker,
    last_value_t: Option<f64>,
}

impl FaceTrackFusion {
    /// A fresh track.
    ///
    /// # Errors
    ///
    /// The [`FusionParams::validate`] error when `params` are out of range.
    pub fn new(params: FusionParams) -> Result<Self, FusionParamError> {
        params.validate()?;
        Ok(Self {
            params,
            valence: OneEuro::new(params.smoother),
            arousal: OneEuro::new(params.smoother),
            conflict: ConflictTracker::new(params.conflict),
            last_value_t: None,
        })
    }

    /// The parameters in use.
    pub fn params(&self) -> &FusionParams {
        &self.params
    }

    /// Fuses the estimates at time `t` (s; stream time, non-decreasing) and smooths the result.
    /// After a gap with no fused value longer than [`FusionParams::stale_after_s`] the
    /// smoothers restart, so old values do not bleed into a new situation.
    pub fn update(
        &mut self,
        t: f64,
        face: Option<Estimate>,
        voice: Option<Estimate>,
    ) -> FusedOutput {
        let step = fuse_step(face, voice, &self.params);
        let events: Vec<ConflictEvent> = self
            .conflict
            .update(t, step.conflict_raw)
            .into_iter()
            .collect();
        let (valence, arousal) = match (step.valence, step.arousal) {
            (Some(v), Some(a)) => {
                if self
                    .last_value_t
                    .is_some_and(|last| t - last > self.params.stale_after_s)
                {
                    self.valence.reset();
                    self.arousal.reset();
                }
                if t.is_finite() && self.last_value_t.is_none_or(|last| t > last) {
                    self.last_value_t = Some(t);
                }
                (
                    Some(self.valence.filter(t, v)),
                    Some(self.arousal.filter(t, a)),
                )
            }
            _ => (None, None),
        };
        FusedOutput {
            valence,
            arousal,
            conflict: self.conflict.smoothed(),
            conflict_raw: step.conflict_raw,
            conflict_active: self.conflict.active(),
            gates: step.gates,
            events,
        }
    }

    /// Ends the track at `t`: closes a conflict event in progress and clears all state.
    pub fn close(&mut self, t: f64) -> Vec<ConflictEvent> {
        let event = self.conflict.close(t);
        self.valence.reset();
        self.arousal.reset();
        self.last_value_t = None;
        event.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::test_support::{EPS, any_estimate, est, irregular_times};
    use crate::record::ConflictDimension;
    use proptest::prelude::*;

    #[test]
    fn fuse_both_absent_gives_no_value() {
        let p = FusionParams::default();
        let s = fuse_step(None, est(0.5, 0.5, 0.0), &p);
        assert_eq!(s.valence, None);
        assert_eq!(s.arousal, None);
        assert_eq!(s.gates, Gates::NONE);
        assert_eq!(s.conflict_raw, Conflict::ZERO);
        let s = fuse_step(est(f32::NAN, 0.0, 1.0), None, &p);
        assert_eq!(s.valence, None);
    }

    #[test]
    fn fuse_one_present_passes_it_through() {
        let p = FusionParams::default();
        let s = fuse_step(est(0.4, -0.2, 0.3), None, &p);
        assert_eq!(s.valence, Some(0.4));
        assert_eq!(s.arousal, Some(-0.2));
        assert_eq!(s.conflict_raw, Conflict::ZERO);
        let s = fuse_step(est(0.9, 0.9, 0.0), est(-0.5, 0.7, 0.8), &p);
        assert_eq!(s.valence, Some(-0.5));
        assert_eq!(s.arousal, Some(0.7));
        assert_eq!(s.gates.valence, [0.0, 1.0]);
    }

    #[test]
    fn fuse_weights_by_gates() {
        let p = FusionParams::default();
        let s = fuse_step(est(1.0, 1.0, 1.0), est(-1.0, -1.0, 1.0), &p);
        assert!((s.valence.unwrap() - 0.4).abs() < EPS); // 0.7 − 0.3
        assert!((s.arousal.unwrap() + 0.2).abs() < EPS); // 0.4 − 0.6
    }

    proptest! {
        #[test]
        fn fused_value_between_inputs(f in any_estimate(), v in any_estimate()) {
            let p = FusionParams::default();
            let s = fuse_step(f, v, &p);
            let sf = f.and_then(Estimate::sanitized);
            let sv = v.and_then(Estimate::sanitized);
            prop_assert_eq!(s.valence.is_some(), sf.is_some() || sv.is_some());
            prop_assert_eq!(s.conflict_raw, raw_conflict(f, v, &p));
            let present: Vec<Estimate> = sf.into_iter().chain(sv).collect();
            let bounds = |get: fn(&Estimate) -> f32| {
                let lo = present.iter().map(get).fold(f32::INFINITY, f32::min);
                let hi = present.iter().map(get).fold(f32::NEG_INFINITY, f32::max);
                (lo, hi)
            };
            if let (Some(val), Some(aro)) = (s.valence, s.arousal) {
                let (lo, hi) = bounds(|e| e.valence);
                prop_assert!(val >= lo - EPS && val <= hi + EPS);
                let (lo, hi) = bounds(|e| e.arousal);
                prop_assert!(aro >= lo - EPS && aro <= hi + EPS);
            }
        }
    }

    #[test]
    fn track_rejects_invalid_params() {
        let p = FusionParams {
            stale_after_s: -1.0,
            ..FusionParams::default()
        };
        assert_eq!(FaceTrackFusion::new(p).unwrap_err().field, "stale_after_s");
    }

    #[test]
    fn track_smooths_fused_output() {
        let mut track = FaceTrackFusion::new(FusionParams::default()).unwrap();
        let times = irregular_times(100, 3);
        let mut out = Vec::new();
        for (i, &t) in times.iter().enumerate() {
            let v = if i < 20 { 0.0 } else { 0.8 };
            out.push(track.update(t, est(v, 0.5, 1.0), None));
        }
        assert_eq!(out[0].valence, Some(0.0));
        assert_eq!(out[0].arousal, Some(0.5));
        let after = out[20].valence.unwrap();
        assert!(after > 0.0 && after < 0.6, "smoothed: {after}");
        assert!((out[99].valence.unwrap() - 0.8).abs() < 1e-3);
        assert!(
            out.iter()
                .all(|o| o.events.is_empty() && o.gates.valence == [1.0, 0.0])
        );
    }

    #[test]
    fn track_without_modalities_has_no_value_and_restarts_after_gap() {
        let mut track = FaceTrackFusion::new(FusionParams::default()).unwrap();
        track.update(0.0, est(0.0, 0.0, 1.0), None);
        track.update(0.1, est(0.0, 0.0, 1.0), None);
        let none = track.update(0.2, None, est(0.9, 0.9, 0.0));
        assert_eq!((none.valence, none.arousal), (None, None));
        assert_eq!(none.gates, Gates::NONE);
        // Back after more than stale_after_s: no lag from the old value.
        let back = track.update(1.0, None, est(0.9, -0.4, 0.7));
        assert_eq!(back.valence, Some(0.9));
        assert_eq!(back.arousal, Some(-0.4));
        assert_eq!(back.gates.arousal, [0.0, 1.0]);
    }

    #[test]
    fn track_reports_conflict_events() {
        let mut track = FaceTrackFusion::new(FusionParams::default()).unwrap();
        let times = irregular_times(200, 13);
        let mut events = Vec::new();
        let mut active_seen = false;
        for &t in &times {
            // Smiling face, angry-sounding voice from 1 s to 3 s; agreeing otherwise.
            let voice = if (1.0..3.0).contains(&t) {
                est(-0.7, 0.6, 0.9)
            } else {
                est(0.6, 0.5, 0.9)
            };
            let out = track.update(t, est(0.7, 0.5, 0.95), voice);
            assert!((0.0..=1.0).contains(&out.conflict.total));
            active_seen |= out.conflict_active;
            events.extend(out.events);
        }
        assert!(active_seen);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(
            events[0],
            ConflictEvent::Start {
                dimension: ConflictDimension::Valence,
                ..
            }
        ));
        assert!(matches!(
            events[1],
            ConflictEvent::End {
                dimension: ConflictDimension::Valence,
                ..
            }
        ));
        assert!(track.close(times[199]).is_empty());
    }

    #[test]
    fn track_close_ends_open_event() {
        let mut track = FaceTrackFusion::new(FusionParams::default()).unwrap();
        for i in 0..60 {
            let t = f64::from(i) / 30.0;
            track.update(t, est(0.8, 0.0, 1.0), est(-0.8, 0.0, 1.0));
        }
        let events = track.close(2.0);
        assert!(
            matches!(events[..], [ConflictEvent::End { t: 2.0, .. }]),
            "{events:?}"
        );
    }
}
