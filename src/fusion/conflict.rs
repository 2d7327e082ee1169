//! Audio-visual conflict: how far face and voice disagree in units of their combined
//! uncertainty ([`raw_conflict`], per dimension and overall, in [0, 1]), and how a track's raw
//! conflict becomes a smoothed value and [`ConflictEvent`]s with hysteresis and a minimum
//! duration ([`ConflictTracker`]).
//!
//! Pure and allocation-free per step; non-finite inputs count as absent (or as no conflict),
//! never as a NaN.

use serde::Serialize;

pub use crate::record::{ConflictDimension, ConflictEvent};

use super::gates::Estimate;
use super::params::{ConflictParams, FusionParams};
use super::smoothing::step_toward;

/// Audio-visual conflict in [0, 1]: overall and per dimension.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Conflict {
    /// From the distance in the valence–arousal plane.
    pub total: f32,
    /// From the valence difference alone.
    pub valence: f32,
    /// From the arousal difference alone.
    pub arousal: f32,
}

impl Conflict {
    /// No conflict.
    pub const ZERO: Conflict = Conflict {
        total: 0.0,
        valence: 0.0,
        arousal: 0.0,
    };

    /// Which dimension disagrees more (see [`ConflictDimension::classify`]).
    pub fn dimension(&self, both_ratio: f32) -> ConflictDimension {
        ConflictDimension::classify(self.valence.into(), self.arousal.into(), both_ratio)
    }
}

/// `x²/(1+x²)` of `δ/scale`: 0 at 0, 0.5 at `scale`, → 1; flat near 0 so model noise counts
/// little.
fn disagreement(delta: f64, scale: f32) -> f64 {
    let x = delta / f64::from(scale);
    let x2 = x * x;
    let h = x2 / (1.0 + x2);
    if h.is_nan() { 1.0 } else { h }
}

/// Raw conflict between two estimates, in units of their uncertainty. Per dimension d the
/// disagreement is `z_d = |x_face − x_voice| / σ_d` with
/// `σ_d² = (face_sigma_d² + spread_face_d²) / r_face + (voice_sigma_d² + spread_voice_d²) / r_voice`:
/// each modality's variance is its base uncertainty plus its own spread, inflated by how
/// unreliable it is now (r = 1: as is; r = 0.25: twice the standard deviation). The conflict is
/// `h(z)` ([`ConflictParams::scale`], in σ units) with z the per-dimension `z_d` or, for the
/// total, `hypot(z_valence, z_arousal)`. 0 when either estimate is absent.
pub fn raw_conflict(face: Option<Estimate>, voice: Option<Estimate>, p: &FusionParams) -> Conflict {
    let (Some(f), Some(v)) = (
        face.and_then(Estimate::sanitized),
        voice.and_then(Estimate::sanitized),
    ) else {
        return Conflict::ZERO;
    };
    let c = &p.conflict;
    let variance = |base: f32, spread: f32, r: f32| {
        (f64::from(base).powi(2) + f64::from(spread).powi(2)) / f64::from(r)
    };
    let sigma = |d: usize| {
        (variance(c.face_sigma[d], f.spread[d], f.reliability)
            + variance(c.voice_sigma[d], v.spread[d], v.reliability))
        .sqrt()
        .max(1e-6)
    };
    let zv = (f64::from(f.valence) - f64::from(v.valence)).abs() / sigma(0);
    let za = (f64::from(f.arousal) - f64::from(v.arousal)).abs() / sigma(1);
    let amount = |z: f64| disagreement(z, c.scale).clamp(0.0, 1.0) as f32;
    Conflict {
        total: amount(zv.hypot(za)),
        valence: amount(zv),
        arousal: amount(za),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Episode {
    start_t: f64,
    peak: f32,
    peak_t: f64,
    /// ∫ smoothed valence conflict dt, ∫ smoothed arousal conflict dt.
    area: [f64; 2],
    confirmed: bool,
}

/// Smooths a track's raw conflict over time and turns it into [`ConflictEvent`]s with
/// hysteresis and a minimum duration.
///
/// Smoothing: `s ← s + (1 − e^(−dt/τ))·(raw − s)` per component, the first sample passing
/// through. Events: idle → pending when `s.total > on`; pending → dropped when `s.total < off`
/// before `min_duration_s` has passed, → started ([`ConflictEvent::Start`]) when it has; started
/// → ended ([`ConflictEvent::End`]) when `s.total < off`. Samples at repeated, backwards or
/// non-finite times are ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictTracker {
    params: ConflictParams,
    last_t: Option<f64>,
    smoothed: Conflict,
    episode: Option<Episode>,
}

impl ConflictTracker {
    /// A tracker with no history.
    pub fn new(params: ConflictParams) -> Self {
        Self {
            params,
            last_t: None,
            smoothed: Conflict::ZERO,
            episode: None,
        }
    }

    /// The current smoothed conflict.
    pub fn smoothed(&self) -> Conflict {
        self.smoothed
    }

    /// Whether an event has started and not yet ended.
    pub fn active(&self) -> bool {
        self.episode.is_some_and(|e| e.confirmed)
    }

    /// Feeds the raw conflict at time `t` (s); returns the event this sample causes, if any.
    /// Non-finite raw components count as 0.
    pub fn update(&mut self, t: f64, raw: Conflict) -> Option<ConflictEvent> {
        if !t.is_finite() {
            return None;
        }
        let clean = |x: f32| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
        let raw = Conflict {
            total: clean(raw.total),
            valence: clean(raw.valence),
            arousal: clean(raw.arousal),
        };
        let dt = match self.last_t {
            None => {
                self.smoothed = raw;
                0.0
            }
            Some(last) => {
                let dt = t - last;
                if dt.is_nan() || dt <= 0.0 {
                    return None;
                }
                let a = if self.params.smoothing_s > 0.0 {
                    1.0 - (-dt / self.params.smoothing_s).exp()
                } else {
                    1.0
                };
                let s = &mut self.smoothed;
                let mv = |from: f32, to: f32| step_toward(from.into(), to.into(), a) as f32;
                s.total = mv(s.total, raw.total);
                s.valence = mv(s.valence, raw.valence);
                s.arousal = mv(s.arousal, raw.arousal);
                dt
            }
        };
        self.last_t = Some(t);
        self.advance(t, dt)
    }

    fn advance(&mut self, t: f64, dt: f64) -> Option<ConflictEvent> {
        let s = self.smoothed;
        let p = self.params;
        let Some(mut ep) = self.episode else {
            if s.total > p.on {
                self.episode = Some(Episode {
                    start_t: t,
                    peak: s.total,
                    peak_t: t,
                    area: [0.0, 0.0],
                    confirmed: false,
                });
                return self.confirm_if_due(t);
            }
            return None;
        };
        ep.area[0] += dt * f64::from(s.valence);
        ep.area[1] += dt * f64::from(s.arousal);
        if s.total > ep.peak {
            ep.peak = s.total;
            ep.peak_t = t;
        }
        if s.total < p.off {
            self.episode = None;
            if !ep.confirmed {
                return None;
            }
            return Some(ConflictEvent::End {
                t,
                peak: ep.peak,
                peak_t: ep.peak_t,
                duration: t - ep.start_t,
                dimension: self.attribute(&ep),
            });
        }
        self.episode = Some(ep);
        self.confirm_if_due(t)
    }

    fn confirm_if_due(&mut self, t: f64) -> Option<ConflictEvent> {
        let mut ep = self.episode?;
        if ep.confirmed || t - ep.start_t < self.params.min_duration_s {
            return None;
        }
        ep.confirmed = true;
        self.episode = Some(ep);
        Some(ConflictEvent::Start {
            t: ep.start_t,
            dimension: self.attribute(&ep),
        })
    }

    /// Time-integrated attribution; the current smoothed values when no time has passed yet.
    fn attribute(&self, ep: &Episode) -> ConflictDimension {
        let ratio = self.params.both_ratio;
        if ep.area[0] + ep.area[1] > 0.0 {
            ConflictDimension::classify(ep.area[0], ep.area[1], ratio)
        } else {
            self.smoothed.dimension(ratio)
        }
    }

    /// Ends the track at `t`: an event in progress ends (dated no earlier than the last
    /// sample), a pending one is dropped, and the history is cleared.
    pub fn close(&mut self, t: f64) -> Option<ConflictEvent> {
        let ep = self.episode.take();
        let last_t = self.last_t;
        let event = ep.filter(|e| e.confirmed).map(|e| {
            let end = match last_t {
                Some(last) if t.is_finite() => t.max(last),
                Some(last) => last,
                None => e.start_t,
            };
            ConflictEvent::End {
                t: end,
                peak: e.peak,
                peak_t: e.peak_t,
                duration: end - e.start_t,
                dimension: self.attribute(&e),
            }
        });
        self.reset();
        event
    }

    /// Forgets everything without reporting.
    pub fn reset(&mut self) {
        self.last_t = None;
        self.smoothed = Conflict::ZERO;
        self.episode = None;
    }
}

#[cfg(test)]
mod tests {
    use std::f64::consts::PI;

    use super::*;
    use crate::fusion::test_support::{EPS, any_estimate, est, irregular_times, noise};
    use proptest::prelude::*;

    /// Parameters whose combined base uncertainty is 0.5 in both dimensions.
    fn half_sigma() -> FusionParams {
        let mut p = FusionParams::default();
        p.conflict.face_sigma = [0.3, 0.3];
        p.conflict.voice_sigma = [0.4, 0.4];
        p
    }

    /// Both modalities with base uncertainty 0.4 in both dimensions.
    fn half_sigma_equal() -> FusionParams {
        let mut p = FusionParams::default();
        p.conflict.face_sigma = [0.4, 0.4];
        p.conflict.voice_sigma = [0.4, 0.4];
        p
    }

    #[test]
    fn conflict_reports_the_disagreeing_dimension() {
        let p = half_sigma();
        // Opposite valence, same arousal, both fully reliable: z = 1.2 / 0.5 = 2.4.
        let c = raw_conflict(est(0.6, 0.3, 1.0), est(-0.6, 0.3, 1.0), &p);
        assert_eq!(c.arousal, 0.0);
        assert!((c.valence - 1.44 / 2.44).abs() < EPS, "{c:?}"); // (z/2)² / (1 + (z/2)²)
        assert_eq!(c.total, c.valence);
        assert_eq!(
            c.dimension(p.conflict.both_ratio),
            ConflictDimension::Valence
        );
        // Disagreement at the scale (z = 2) when both are fully reliable: 0.5.
        let c = raw_conflict(est(0.0, 1.0, 1.0), est(0.0, 0.0, 1.0), &p);
        assert!((c.arousal - 0.5).abs() < EPS, "{c:?}");
        // A face of reliability 0.25 counts with four times its variance:
        // σ² = 0.09 / 0.25 + 0.16 = 0.52, z = 1 / sqrt(0.52).
        let c = raw_conflict(est(0.0, 1.0, 0.25), est(0.0, 0.0, 1.0), &p);
        let x = 0.5 / 0.52f64.sqrt();
        assert!(
            (f64::from(c.arousal) - x * x / (1.0 + x * x)).abs() < 1e-5,
            "{c:?}"
        );
        assert_eq!(c.dimension(0.7), ConflictDimension::Arousal);
        let c = raw_conflict(est(0.5, 0.5, 1.0), est(-0.5, -0.5, 1.0), &p);
        assert_eq!(c.dimension(0.7), ConflictDimension::Both);
        assert!(c.total > c.valence);
        // Agreement: none.
        assert_eq!(
            raw_conflict(est(0.2, 0.1, 1.0), est(0.2, 0.1, 1.0), &p),
            Conflict::ZERO
        );
    }

    #[test]
    fn an_unsure_modality_needs_a_larger_disagreement() {
        let p = half_sigma();
        let sure = raw_conflict(est(0.6, 0.0, 1.0), est(-0.4, 0.0, 1.0), &p);
        let jittery = Estimate {
            spread: [0.5, 0.0],
            ..Estimate::default()
        };
        let unsure = raw_conflict(
            Some(Estimate {
                valence: 0.6,
                reliability: 1.0,
                ..jittery
            }),
            est(-0.4, 0.0, 1.0),
            &p,
        );
        // σ grows from 0.5 to sqrt(0.5) ≈ 0.71: z from 2 to 1.41, conflict from 0.5 to 1/3.
        assert!((sure.valence - 0.5).abs() < EPS, "{sure:?}");
        assert!((unsure.valence - 1.0 / 3.0).abs() < 1e-4, "{unsure:?}");
        // The default uncertainties trust the voice's valence least: the same valence gap
        // counts less than the same arousal gap.
        let d = FusionParams::default();
        let on_valence = raw_conflict(est(0.5, 0.0, 1.0), est(-0.5, 0.0, 1.0), &d);
        let on_arousal = raw_conflict(est(0.0, 0.5, 1.0), est(0.0, -0.5, 1.0), &d);
        assert!(on_valence.total < on_arousal.total);
    }

    proptest! {
        #[test]
        fn conflict_symmetric_and_bounded(f in any_estimate(), v in any_estimate()) {
            // Symmetric when both modalities have the same base uncertainty.
            let same = half_sigma_equal();
            prop_assert_eq!(raw_conflict(f, v, &same), raw_conflict(v, f, &same));
            let p = FusionParams::default();
            let c = raw_conflict(f, v, &p);
            for x in [c.total, c.valence, c.arousal] {
                prop_assert!((0.0..=1.0).contains(&x), "{c:?}");
            }
            prop_assert!(c.total >= c.valence.max(c.arousal));
            let present = |e: Option<Estimate>| e.and_then(Estimate::sanitized).is_some();
            if !present(f) || !present(v) {
                prop_assert_eq!(c, Conflict::ZERO);
            }
        }
    }

    fn uniform(c: f32) -> Conflict {
        Conflict {
            total: c,
            valence: c,
            arousal: c,
        }
    }

    fn valence_only(c: f32) -> Conflict {
        Conflict {
            total: c,
            valence: c,
            arousal: 0.1 * c,
        }
    }

    #[test]
    fn noisy_conflict_around_threshold_gives_one_event() {
        // The shape of the response is checked at a 0.5 s time constant.
        let p = ConflictParams {
            smoothing_s: 0.5,
            ..ConflictParams::default()
        };
        let times = irregular_times(400, 5);
        let mut tracker = ConflictTracker::new(p);
        let mut events = Vec::new();
        let (mut raw_crossings, mut smoothed_crossings) = (0, 0);
        let (mut raw_above, mut smoothed_above) = (false, false);
        let mut last_t = 0.0;
        for (i, &t) in times.iter().enumerate() {
            // 1 s calm, then a raw conflict hovering around the on-threshold (slow wobble plus
            // frame noise), then calm again.
            let raw = if (1.0..12.0).contains(&t) {
                let wobble = (2.0 * PI * t / 1.5).sin() as f32;
                p.on + 0.02 + 0.15 * wobble + 0.1 * noise(i)
            } else {
                0.0
            };
            events.extend(tracker.update(t, uniform(raw)));
            let smoothed = tracker.smoothed().total;
            raw_crossings += usize::from(raw > p.on && !raw_above);
            smoothed_crossings += usize::from(smoothed > p.on && !smoothed_above);
            raw_above = raw > p.on;
            smoothed_above = smoothed > p.on;
            last_t = t;
        }
        assert!(last_t > 14.0);
        // Even the smoothed signal crosses the on-threshold again and again: only the
        // hysteresis (and the minimum duration) keep this one event.
        assert!(raw_crossings > 20, "{raw_crossings}");
        assert!(smoothed_crossings > 3, "{smoothed_crossings}");
        assert_eq!(events.len(), 2, "{events:?}");
        let (
            ConflictEvent::Start { t: start, .. },
            ConflictEvent::End {
                t: end, duration, ..
            },
        ) = (events[0], events[1])
        else {
            panic!("{events:?}");
        };
        assert!(start > 1.0 && start < 3.0 && end > 12.0, "{events:?}");
        assert!((duration - (end - start)).abs() < 1e-9);
    }

    #[test]
    fn clear_pulse_gives_one_start_and_one_end_with_its_peak() {
        // The shape of the response is checked at a 0.5 s time constant.
        let p = ConflictParams {
            smoothing_s: 0.5,
            ..ConflictParams::default()
        };
        let times = irregular_times(300, 9);
        let mut tracker = ConflictTracker::new(p);
        let mut events = Vec::new();
        // Reference smoothing, computed independently.
        let (mut s, mut prev, mut peak, mut peak_t) = (0.0f64, None::<f64>, 0.0f64, 0.0);
        let mut crossed_on = None;
        for &t in &times {
            let raw = if (2.0..4.0).contains(&t) { 0.9 } else { 0.0 };
            if let Some(prev) = prev {
                s += (1.0 - (-(t - prev) / p.smoothing_s).exp()) * (raw - s);
            }
            prev = Some(t);
            if s > peak {
                (peak, peak_t) = (s, t);
            }
            if crossed_on.is_none() && s > f64::from(p.on) {
                crossed_on = Some(t);
            }
            let ev = tracker.update(t, valence_only(raw as f32));
            if ev.is_some() {
                assert!(tracker.active() == matches!(ev, Some(ConflictEvent::Start { .. })));
            }
            events.extend(ev);
        }
        assert_eq!(events.len(), 2, "{events:?}");
        let ConflictEvent::Start {
            t: start,
            dimension,
        } = events[0]
        else {
            panic!("{events:?}");
        };
        assert_eq!(Some(start), crossed_on);
        assert_eq!(dimension, ConflictDimension::Valence);
        let ConflictEvent::End {
            t: end,
            peak: got_peak,
            peak_t: got_peak_t,
            duration,
            dimension,
        } = events[1]
        else {
            panic!("{events:?}");
        };
        assert!(
            (f64::from(got_peak) - peak).abs() < 1e-5,
            "{got_peak} vs {peak}"
        );
        assert!(got_peak > 0.85);
        assert_eq!(got_peak_t, peak_t);
        assert!((3.9..4.1).contains(&got_peak_t));
        assert!(end > 4.0 && (duration - (end - start)).abs() < 1e-12);
        assert_eq!(dimension, ConflictDimension::Valence);
        assert!(!tracker.active());
    }

    #[test]
    fn blip_shorter_than_min_duration_is_dropped() {
        let p = ConflictParams {
            smoothing_s: 0.0,
            ..ConflictParams::default()
        };
        let mut tracker = ConflictTracker::new(p);
        let mut events = Vec::new();
        for i in 0..100 {
            let t = f64::from(i) * 0.033;
            let raw = if (1.0..1.3).contains(&t) { 0.9 } else { 0.0 };
            events.extend(tracker.update(t, uniform(raw)));
        }
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn conflict_attribution_over_the_event() {
        let p = ConflictParams {
            smoothing_s: 0.0,
            min_duration_s: 0.0,
            ..ConflictParams::default()
        };
        let mut tracker = ConflictTracker::new(p);
        let arousal = Conflict {
            total: 0.8,
            valence: 0.1,
            arousal: 0.8,
        };
        assert!(matches!(
            tracker.update(0.0, arousal),
            Some(ConflictEvent::Start {
                t: 0.0,
                dimension: ConflictDimension::Arousal
            })
        ));
        // Then valence for a shorter while: arousal still dominates the event's integral.
        assert_eq!(tracker.update(1.0, arousal), None);
        let valence = Conflict {
            total: 0.8,
            valence: 0.8,
            arousal: 0.1,
        };
        assert_eq!(tracker.update(1.5, valence), None);
        assert!(matches!(
            tracker.update(1.6, Conflict::ZERO),
            Some(ConflictEvent::End {
                dimension: ConflictDimension::Arousal,
                ..
            })
        ));
        // Equal disagreement on both.
        assert!(matches!(
            tracker.update(2.0, uniform(0.9)),
            Some(ConflictEvent::Start {
                dimension: ConflictDimension::Both,
                ..
            })
        ));
    }

    #[test]
    fn conflict_tracker_ignores_bad_times_and_close_ends_event() {
        let p = ConflictParams {
            smoothing_s: 0.0,
            min_duration_s: 0.0,
            ..ConflictParams::default()
        };
        let mut tracker = ConflictTracker::new(p);
        assert!(tracker.update(1.0, uniform(0.9)).is_some());
        assert_eq!(tracker.update(0.5, Conflict::ZERO), None);
        assert_eq!(tracker.update(1.0, Conflict::ZERO), None);
        assert_eq!(tracker.update(f64::NAN, Conflict::ZERO), None);
        assert!(tracker.active());
        assert_eq!(tracker.smoothed(), uniform(0.9));
        let end = tracker.close(3.0);
        assert!(matches!(
            end,
            Some(ConflictEvent::End {
                t: 3.0,
                duration: 2.0,
                peak: 0.9,
                ..
            })
        ));
        assert!(!tracker.active());
        assert_eq!(tracker.smoothed(), Conflict::ZERO);
        assert_eq!(tracker.close(4.0), None);
    }
}
