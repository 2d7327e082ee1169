//! IoU tracker: gives every face a stable id across frames, so every output is per face.

use std::time::Duration;

use super::detection::{BBox, Detection};

/// A tracked face as the tracker sees it after an update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackInfo {
    /// Stable id, unique within a run.
    pub id: u64,
    /// How long the track has existed (stream time).
    pub age: Duration,
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    bbox: BBox,
    first_seen: Duration,
    last_seen: Duration,
}

/// Greedy IoU matching of detections to live tracks; a track that goes unmatched for longer
/// than `max_gap` (stream time) is forgotten.
#[derive(Debug, Clone)]
pub struct Tracker {
    tracks: Vec<Track>,
    next_id: u64,
    iou_threshold: f32,
    max_gap: Duration,
}

impl Tracker {
    /// A tracker matching at IoU ≥ `iou_threshold`, keeping lost tracks for `max_gap`.
    pub fn new(iou_threshold: f32, max_gap: Duration) -> Self {
        Self {
            tracks: Vec::new(),
            next_id: 1,
            iou_threshold,
            max_gap,
        }
    }

    /// Matches `detections` (of the frame at stream time `pts`) to tracks; returns one
    /// [`TrackInfo`] per detection, in the same order.
    pub fn update(&mut self, pts: Duration, detections: &[Detection]) -> Vec<TrackInfo> {
        self.tracks
            .retain(|t| pts.saturating_sub(t.last_seen) <= self.max_gap && t.last_seen <= pts);
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (di, d) in detections.iter().enumerate() {
            for (ti, t) in self.tracks.iter().enumerate() {
                let iou = d.bbox.iou(&t.bbox);
                if iou >= self.iou_threshold {
                    pairs.push((iou, di, ti));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut det_track: Vec<Option<usize>> = vec![None; detections.len()];
        let mut track_taken = vec![false; self.tracks.len()];
        for (_, di, ti) in pairs {
            if det_track[di].is_none() && !track_taken[ti] {
                det_track[di] = Some(ti);
                track_taken[ti] = true;
            }
        }
        let mut out = Vec::with_capacity(detections.len());
        for (di, d) in detections.iter().enumerate() {
            let ti = match det_track[di] {
                Some(ti) => ti,
                None => {
                    self.tracks.push(Track {
                        id: self.next_id,
                        bbox: d.bbox,
                        first_seen: pts,
                        last_seen: pts,
                    });
                    self.next_id += 1;
                    self.tracks.len() - 1
                }
            };
            let t = &mut self.tracks[ti];
            t.bbox = d.bbox;
            t.last_seen = pts;
            out.push(TrackInfo {
                id: t.id,
                age: pts.saturating_sub(t.first_seen),
            });
        }
        out
    }

    /// Number of live tracks.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    /// True when no track is live.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32) -> Detection {
        Detection {
            bbox: BBox {
                x,
                y: 10.0,
                w: 50.0,
                h: 60.0,
            },
            score: 0.95,
            landmarks: None,
        }
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn ids_stay_with_moving_faces_and_new_faces_get_new_ids() {
        let mut t = Tracker::new(0.3, ms(500));
        let a = t.update(ms(0), &[det(0.0), det(200.0)]);
        assert_eq!((a[0].id, a[1].id), (1, 2));
        // Both move a little, listed in the other order: ids follow the faces.
        let b = t.update(ms(40), &[det(205.0), det(4.0)]);
        assert_eq!((b[0].id, b[1].id), (2, 1));
        assert_eq!(b[1].age, ms(40));
        // A third face appears.
        let c = t.update(ms(80), &[det(8.0), det(400.0)]);
        assert_eq!((c[0].id, c[1].id), (1, 3));
    }

    #[test]
    fn a_face_lost_briefly_keeps_its_id_and_one_lost_long_gets_a_new_one() {
        let mut t = Tracker::new(0.3, ms(500));
        t.update(ms(0), &[det(0.0)]);
        t.update(ms(40), &[]);
        assert_eq!(t.update(ms(400), &[det(2.0)])[0].id, 1);
        t.update(ms(440), &[]);
        assert_eq!(t.update(ms(1000), &[det(2.0)])[0].id, 2);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn one_track_never_takes_two_detections() {
        let mut t = Tracker::new(0.1, ms(500));
        t.update(ms(0), &[det(0.0)]);
        let r = t.update(ms(40), &[det(1.0), det(10.0)]);
        assert_ne!(r[0].id, r[1].id);
    }
}
