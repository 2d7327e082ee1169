//! Reliability: how much to trust each modality now. Observable quality signals of a face
//! ([`FaceQuality`]: detector score, size, blur, head pose, track age) and of a voice
//! ([`VoiceQuality`]: speech probability, SNR, clipping) go through the curves of
//! [`FusionParams`] into per-signal factors, whose product is the modality's reliability in
//! [0, 1] ([`face_reliability`], [`voice_reliability`]); an absent or stale estimate gets 0.
//!
//! Pure and allocation-free; non-finite signals count as the bad end of their curve.

use super::params::FusionParams;

/// The five facial landmarks, OpenCV/YuNet order: right eye, left eye, nose tip, right mouth
/// corner, left mouth corner ("right" = the person's right, on the image's left), in pixels.
pub use crate::face::detection::Landmarks;

/// Observable quality of one face estimate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaceQuality {
    /// Whether there is a face estimate at all; `false` gives reliability 0.
    pub present: bool,
    /// Seconds from the estimate's time to now; above [`FusionParams::stale_after_s`] (or NaN)
    /// the estimate is stale and gets reliability 0. Negative counts as fresh.
    pub since_update_s: f64,
    /// Detector score in [0, 1].
    pub score: f32,
    /// Face size: box side in pixels (for a non-square box, `sqrt(w·h)`).
    pub size_px: f32,
    /// Variance of the Laplacian of the grey face crop (0..255 intensities); `None` when not
    /// measured (not penalized).
    pub blur: Option<f32>,
    /// Landmarks for the frontalness term; `None` when the detector has none (e.g. a Haar
    /// fallback, which only finds near-frontal faces anyway; not penalized).
    pub landmarks: Option<Landmarks>,
    /// Seconds since the track started.
    pub track_age_s: f32,
}

/// Observable quality of one voice estimate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VoiceQuality {
    /// Whether there is a voice estimate at all; `false` gives reliability 0.
    pub present: bool,
    /// Seconds from the estimate's time to now; above [`FusionParams::stale_after_s`] (or NaN)
    /// the estimate is stale and gets reliability 0. Negative counts as fresh.
    pub since_update_s: f64,
    /// VAD speech probability in [0, 1], possibly averaged over the estimate's window.
    pub speech_prob: f32,
    /// Signal-to-noise ratio estimate in dB; `None` when not measured (not penalized).
    pub snr_db: Option<f32>,
    /// Fraction of clipped samples in the window, in [0, 1].
    pub clipping: f32,
}

/// Head pose proxies from five landmarks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadPose {
    /// Nose-tip offset from the eye midpoint along the eye line, over the inter-ocular
    /// distance; 0 when frontal, about `0.5·tan(yaw)`. Positive towards the person's left eye.
    pub yaw_ratio: f32,
    /// Angle of the eye line (right eye → left eye) against the image x axis, degrees in
    /// (−180, 180]; 0 for an upright face, ±180 for one upside down.
    pub roll_deg: f32,
}

/// Yaw and roll proxies from landmarks; `None` when a coordinate is not finite or the eyes are
/// less than 0.001 px apart.
pub fn head_pose(landmarks: &Landmarks) -> Option<HeadPose> {
    if landmarks.iter().flatten().any(|c| !c.is_finite()) {
        return None;
    }
    let [right_eye, left_eye, nose, _, _] = *landmarks;
    let ex = left_eye[0] - right_eye[0];
    let ey = left_eye[1] - right_eye[1];
    let iod = ex.hypot(ey);
    if iod.is_nan() || iod < 1e-3 {
        return None;
    }
    let mid_x = 0.5 * (left_eye[0] + right_eye[0]);
    let mid_y = 0.5 * (left_eye[1] + right_eye[1]);
    let along = (nose[0] - mid_x) * ex / iod + (nose[1] - mid_y) * ey / iod;
    Some(HeadPose {
        yaw_ratio: along / iod,
        roll_deg: ey.atan2(ex).to_degrees(),
    })
}

/// The per-signal factors of a face reliability, each in [0, 1] (1 = no penalty).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceFactors {
    /// From the detector score.
    pub score: f32,
    /// From the face size.
    pub size: f32,
    /// From the sharpness (1 when not measured).
    pub blur: f32,
    /// Yaw × roll factor (1 without landmarks; both floors with degenerate landmarks).
    pub frontal: f32,
    /// From the track age.
    pub track_age: f32,
}

impl FaceFactors {
    /// The product of all factors, in [0, 1].
    pub fn product(&self) -> f32 {
        (self.score * self.size * self.blur * self.frontal * self.track_age).clamp(0.0, 1.0)
    }
}

/// The face factors of `q`, ignoring presence and staleness.
pub fn face_factors(q: &FaceQuality, p: &FusionParams) -> FaceFactors {
    let c = &p.face;
    let frontal = match q.landmarks {
        None => 1.0,
        Some(lm) => match head_pose(&lm) {
            Some(pose) => {
                c.yaw.falling(pose.yaw_ratio.abs()) * c.roll_deg.falling(pose.roll_deg.abs())
            }
            None => c.yaw.floor * c.roll_deg.floor,
        },
    };
    FaceFactors {
        score: c.score.rising(q.score),
        size: c.size_px.rising_log(q.size_px),
        blur: q.blur.map_or(1.0, |b| c.blur.rising_log(b)),
        frontal: frontal.clamp(0.0, 1.0),
        track_age: c.track_age_s.rising(q.track_age_s),
    }
}

fn fresh(since_update_s: f64, limit: f64) -> bool {
    // NaN compares false: a NaN age is stale.
    since_update_s <= limit
}

/// Face reliability in [0, 1]: the product of [`face_factors`], or 0 when the face is absent or
/// stale.
pub fn face_reliability(q: &FaceQuality, p: &FusionParams) -> f32 {
    if !q.present || !fresh(q.since_update_s, p.stale_after_s) {
        return 0.0;
    }
    face_factors(q, p).product()
}

/// The per-signal factors of a voice reliability, each in [0, 1] (1 = no penalty).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoiceFactors {
    /// From the VAD speech probability.
    pub speech: f32,
    /// From the SNR (1 when not measured).
    pub snr: f32,
    /// From the clipping fraction.
    pub clipping: f32,
}

impl VoiceFactors {
    /// The product of all factors, in [0, 1].
    pub fn product(&self) -> f32 {
        (self.speech * self.snr * self.clipping).clamp(0.0, 1.0)
    }
}

/// The voice factors of `q`, ignoring presence and staleness.
pub fn voice_factors(q: &VoiceQuality, p: &FusionParams) -> VoiceFactors {
    let c = &p.voice;
    VoiceFactors {
        speech: c.speech_prob.rising(q.speech_prob),
        snr: q.snr_db.map_or(1.0, |s| c.snr_db.rising(s)),
        clipping: c.clipping.falling(q.clipping),
    }
}

/// Voice reliability in [0, 1]: the product of [`voice_factors`], or 0 when the voice is absent
/// or stale.
pub fn voice_reliability(q: &VoiceQuality, p: &FusionParams) -> f32 {
    if !q.present || !fresh(q.since_update_s, p.stale_after_s) {
        return 0.0;
    }
    voice_factors(q, p).product()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::test_support::EPS;
    use proptest::prelude::*;

    fn frontal_landmarks() -> Landmarks {
        [
            [40.0, 50.0],
            [80.0, 50.0],
            [60.0, 70.0],
            [45.0, 90.0],
            [75.0, 90.0],
        ]
    }

    #[test]
    fn head_pose_frontal_rotated_and_turned() {
        let pose = head_pose(&frontal_landmarks()).unwrap();
        assert!(pose.yaw_ratio.abs() < EPS && pose.roll_deg.abs() < 1e-4);

        // Rotate the whole face by 30° about (60, 70): roll 30°, yaw still 0.
        let (s, c) = 30f32.to_radians().sin_cos();
        let rotated = frontal_landmarks().map(|[x, y]| {
            let (dx, dy) = (x - 60.0, y - 70.0);
            [60.0 + c * dx - s * dy, 70.0 + s * dx + c * dy]
        });
        let pose = head_pose(&rotated).unwrap();
        assert!((pose.roll_deg - 30.0).abs() < 1e-3, "{pose:?}");
        assert!(pose.yaw_ratio.abs() < 1e-5, "{pose:?}");

        // Nose moved 10 px toward the left eye (inter-ocular 40 px): yaw ratio 0.25.
        let mut turned = frontal_landmarks();
        turned[2][0] += 10.0;
        let pose = head_pose(&turned).unwrap();
        assert!((pose.yaw_ratio - 0.25).abs() < EPS);
    }

    #[test]
    fn head_pose_degenerate() {
        let mut same_eyes = frontal_landmarks();
        same_eyes[1] = same_eyes[0];
        assert_eq!(head_pose(&same_eyes), None);
        let mut nan = frontal_landmarks();
        nan[3][1] = f32::NAN;
        assert_eq!(head_pose(&nan), None);
        // Degenerate landmarks give the floors, not a veto.
        let p = FusionParams::default();
        let q = FaceQuality {
            landmarks: Some(same_eyes),
            ..good_face()
        };
        let expected = p.face.yaw.floor * p.face.roll_deg.floor;
        assert!((face_factors(&q, &p).frontal - expected).abs() < EPS);
    }

    fn good_face() -> FaceQuality {
        FaceQuality {
            present: true,
            since_update_s: 0.0,
            score: 0.95,
            size_px: 120.0,
            blur: Some(300.0),
            landmarks: Some(frontal_landmarks()),
            track_age_s: 2.0,
        }
    }

    fn good_voice() -> VoiceQuality {
        VoiceQuality {
            present: true,
            since_update_s: 0.1,
            speech_prob: 0.9,
            snr_db: Some(30.0),
            clipping: 0.0,
        }
    }

    #[test]
    fn face_reliability_cases() {
        let p = FusionParams::default();
        assert_eq!(face_reliability(&good_face(), &p), 1.0);
        let absent = FaceQuality {
            present: false,
            ..good_face()
        };
        assert_eq!(face_reliability(&absent, &p), 0.0);
        let stale = FaceQuality {
            since_update_s: 0.6,
            ..good_face()
        };
        assert_eq!(face_reliability(&stale, &p), 0.0);
        let nan_age = FaceQuality {
            since_update_s: f64::NAN,
            ..good_face()
        };
        assert_eq!(face_reliability(&nan_age, &p), 0.0);
        let tiny = FaceQuality {
            size_px: 20.0,
            ..good_face()
        };
        assert_eq!(face_reliability(&tiny, &p), 0.0);
        // 48 px is half way on the log scale from 24 to 96: factor 0.5.
        let small = FaceQuality {
            size_px: 48.0,
            ..good_face()
        };
        assert!((face_reliability(&small, &p) - 0.5).abs() < 1e-5);
        // Very blurred, new track: floors multiply, 0.25 · 0.5.
        let blurred_new = FaceQuality {
            blur: Some(1.0),
            track_age_s: 0.0,
            ..good_face()
        };
        assert!((face_reliability(&blurred_new, &p) - 0.125).abs() < 1e-6);
        // Without blur or landmarks measured: not penalized.
        let unmeasured = FaceQuality {
            blur: None,
            landmarks: None,
            ..good_face()
        };
        assert_eq!(face_reliability(&unmeasured, &p), 1.0);
    }

    #[test]
    fn voice_reliability_cases() {
        let p = FusionParams::default();
        assert_eq!(voice_reliability(&good_voice(), &p), 1.0);
        let silent = VoiceQuality {
            speech_prob: 0.1,
            ..good_voice()
        };
        assert_eq!(voice_reliability(&silent, &p), 0.0);
        let absent = VoiceQuality {
            present: false,
            ..good_voice()
        };
        assert_eq!(voice_reliability(&absent, &p), 0.0);
        let stale = VoiceQuality {
            since_update_s: 0.51,
            ..good_voice()
        };
        assert_eq!(voice_reliability(&stale, &p), 0.0);
        let noisy_clipped = VoiceQuality {
            snr_db: Some(-5.0),
            clipping: 0.5,
            ..good_voice()
        };
        assert!((voice_reliability(&noisy_clipped, &p) - 0.1 * 0.2).abs() < 1e-6);
        let half = VoiceQuality {
            snr_db: Some(10.0),
            ..good_voice()
        };
        assert!((voice_reliability(&half, &p) - 0.55).abs() < 1e-6);
    }

    fn any_f32() -> impl Strategy<Value = f32> {
        prop_oneof![
            8 => -10.0f32..400.0,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
        ]
    }

    fn any_landmarks() -> impl Strategy<Value = Option<Landmarks>> {
        prop_oneof![
            Just(None),
            proptest::array::uniform5(proptest::array::uniform2(-50.0f32..200.0)).prop_map(Some),
        ]
    }

    prop_compose! {
        fn any_face()(
            present in any::<bool>(),
            since_update_s in -1.0f64..1.0,
            score in any_f32(),
            size_px in any_f32(),
            blur in proptest::option::of(any_f32()),
            landmarks in any_landmarks(),
            track_age_s in any_f32(),
        ) -> FaceQuality {
            FaceQuality { present, since_update_s, score, size_px, blur, landmarks, track_age_s }
        }
    }

    prop_compose! {
        fn any_voice()(
            present in any::<bool>(),
            since_update_s in -1.0f64..1.0,
            speech_prob in any_f32(),
            snr_db in proptest::option::of(any_f32()),
            clipping in any_f32(),
        ) -> VoiceQuality {
            VoiceQuality { present, since_update_s, speech_prob, snr_db, clipping }
        }
    }

    proptest! {
        #[test]
        fn reliabilities_in_unit_interval(face in any_face(), voice in any_voice()) {
            let p = FusionParams::default();
            let rf = face_reliability(&face, &p);
            let rv = voice_reliability(&voice, &p);
            prop_assert!((0.0..=1.0).contains(&rf), "{rf}");
            prop_assert!((0.0..=1.0).contains(&rv), "{rv}");
            if !face.present || face.since_update_s > p.stale_after_s {
                prop_assert_eq!(rf, 0.0);
            }
            if !voice.present || voice.since_update_s > p.stale_after_s {
                prop_assert_eq!(rv, 0.0);
            }
        }

        #[test]
        fn reliabilities_monotone_in_each_signal(
            face in any_face(), voice in any_voice(), up in 0.0f32..100.0,
        ) {
            let p = FusionParams::default();
            let r = face_reliability(&face, &p);
            let better = [
                FaceQuality { score: face.score + up / 100.0, ..face },
                FaceQuality { size_px: face.size_px + up, ..face },
                FaceQuality { blur: face.blur.map(|b| b + up), ..face },
                FaceQuality { track_age_s: face.track_age_s + up / 100.0, ..face },
            ];
            for q in better {
                prop_assert!(face_reliability(&q, &p) >= r - EPS);
            }
            let r = voice_reliability(&voice, &p);
            let better = [
                VoiceQuality { speech_prob: voice.speech_prob + up / 100.0, ..voice },
                VoiceQuality { snr_db: voice.snr_db.map(|s| s + up), ..voice },
                VoiceQuality { clipping: voice.clipping - up / 100.0, ..voice },
            ];
            for q in better {
                prop_assert!(voice_reliability(&q, &p) >= r - EPS);
            }
        }

        #[test]
        fn frontal_factor_falls_with_yaw(shift in 0.0f32..40.0, more in 0.0f32..40.0) {
            let p = FusionParams::default();
            let with_nose_at = |dx: f32| {
                let mut lm = frontal_landmarks();
                lm[2][0] += dx;
                face_factors(&FaceQuality { landmarks: Some(lm), ..good_face() }, &p).frontal
            };
            prop_assert!(with_nose_at(shift + more) <= with_nose_at(shift) + EPS);
            prop_assert!((with_nose_at(shift) - with_nose_at(-shift)).abs() < EPS);
        }
    }
}
