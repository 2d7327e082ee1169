//! When a supervisor tries again: exponential backoff with full jitter (the delay before
//! retry n is uniform in [0, min(max, initial × 2^n)], so cameras that dropped together do
//! not reconnect in lockstep), and the small generator the jitter is drawn from.

use std::time::Duration;

/// The backoff of one stream (its numbers come from `StreamSettings`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Ceiling of the first retry's delay; doubles with each failed attempt.
    pub initial: Duration,
    /// Largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// The ceiling of retry number `attempt` (from 0): min(max, initial × 2^attempt).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max)
    }

    /// The delay before retry number `attempt`: `unit_random` (uniform in [0, 1)) of its
    /// ceiling, i.e. full jitter.
    pub fn delay(&self, attempt: u32, unit_random: f64) -> Duration {
        self.ceiling(attempt).mul_f64(unit_random.clamp(0.0, 1.0))
    }
}

/// A small xorshift generator for backoff jitter (no need for cryptographic quality).
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator seeded from the clock and `salt` (e.g. the stream index).
    pub fn new(salt: u64) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        Self((now ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    /// Uniform in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_ceiling_and_jitter_spans_zero_to_it() {
        let b = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(4),
        };
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(500));
        assert_eq!(b.delay(2, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(b.delay(60, 1.0), Duration::from_secs(4));
        assert_eq!(b.delay(5, 0.0), Duration::ZERO);
        assert_eq!(b.delay(1, 0.25), Duration::from_millis(250));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(4));
        let mut j = Jitter::new(7);
        let draws: Vec<f64> = (0..1000).map(|_| j.next_unit()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.05, "{mean}");
    }

    #[test]
    fn streams_seeded_apart_draw_apart() {
        let (mut a, mut b) = (Jitter::new(0), Jitter::new(1));
        let same = (0..100).filter(|_| a.next_unit() == b.next_unit()).count();
        assert_eq!(same, 0);
    }
}
