//! Per-stream settings and the `[streams]` / `[[stream]]` sections of the configuration file:
//! RTSP transport and latency, reconnect backoff and budget, stall timeout.
//!
//! ```toml
//! [streams]                 # defaults for every stream
//! protocols = "tcp"         # tcp | udp | udp-tcp
//! latency_ms = 200          # rtspsrc jitter buffer
//! reconnect_initial_s = 0.5 # first backoff ceiling; doubles per failed attempt
//! reconnect_max_s = 10      # backoff ceiling
//! retry_budget_s = 300      # give up (state failed) after an outage this long
//! stall_timeout_s = 5       # no data this long: restart the connection
//!
//! [[stream]]
//! name = "lobby"
//! url = "rtsp://user:password@10.0.0.7/stream1"
//! latency_ms = 100          # any default above can be overridden per stream
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::capture::{RtspSettings, RtspTransport};

/// How one stream connects and recovers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamSettings {
    /// rtspsrc transport and latency.
    pub rtsp: RtspSettings,
    /// Backoff ceiling of the first retry; doubles with each failed attempt.
    pub reconnect_initial: Duration,
    /// Largest backoff ceiling.
    pub reconnect_max: Duration,
    /// An outage longer than this makes the stream failed.
    pub retry_budget: Duration,
    /// A live stream that delivers nothing for this long is restarted.
    pub stall_timeout: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            rtsp: RtspSettings::default(),
            reconnect_initial: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(10),
            retry_budget: Duration::from_secs(300),
            stall_timeout: Duration::from_secs(5),
        }
    }
}

impl StreamSettings {
    /// The delay before retry number `attempt` (from 0): exponential backoff with full
    /// jitter, uniform in [0, min(max, initial × 2^attempt)], so many cameras that dropped
    /// together do not reconnect in lockstep.
    pub fn backoff(&self, attempt: u32, unit_random: f64) -> Duration {
        let ceiling = self
            .reconnect_initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.reconnect_max);
        ceiling.mul_f64(unit_random.clamp(0.0, 1.0))
    }
}

/// Optional values of the `[streams]` table and of each `[[stream]]` (overrides).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SettingsOverrides {
    /// Lower transport: tcp, udp or udp-tcp.
    pub protocols: Option<RtspTransport>,
    /// rtspsrc latency in milliseconds (0..10000).
    pub latency_ms: Option<u64>,
    /// First backoff ceiling in seconds (0.01..60).
    pub reconnect_initial_s: Option<f64>,
    /// Largest backoff ceiling in seconds (at least the initial one, at most 600).
    pub reconnect_max_s: Option<f64>,
    /// Longest outage before the stream is failed, seconds (0.1..a week).
    pub retry_budget_s: Option<f64>,
    /// Silence that counts as a stall, seconds (0.5..600).
    pub stall_timeout_s: Option<f64>,
}

impl SettingsOverrides {
    /// `base` with these values applied, checked.
    pub fn apply(&self, base: StreamSettings) -> Result<StreamSettings, String> {
        let mut s = base;
        if let Some(p) = self.protocols {
            s.rtsp.transport = p;
        }
        if let Some(ms) = self.latency_ms {
            check("latency_ms", ms as f64, 0.0, 10_000.0)?;
            s.rtsp.latency = Duration::from_millis(ms);
        }
        let seconds = |key, v: Option<f64>, lo, hi, slot: &mut Duration| -> Result<(), String> {
            if let Some(v) = v {
                check(key, v, lo, hi)?;
                *slot = Duration::from_secs_f64(v);
            }
            Ok(())
        };
        seconds(
            "reconnect_initial_s",
            self.reconnect_initial_s,
            0.01,
            60.0,
            &mut s.reconnect_initial,
        )?;
        seconds(
            "reconnect_max_s",
            self.reconnect_max_s,
            0.01,
            600.0,
            &mut s.reconnect_max,
        )?;
        seconds(
            "retry_budget_s",
            self.retry_budget_s,
            0.1,
            7.0 * 24.0 * 3600.0,
            &mut s.retry_budget,
        )?;
        seconds(
            "stall_timeout_s",
            self.stall_timeout_s,
            0.5,
            600.0,
            &mut s.stall_timeout,
        )?;
        if s.reconnect_max < s.reconnect_initial {
            return Err(format!(
                "reconnect_max_s ({:.2}) is below reconnect_initial_s ({:.2})",
                s.reconnect_max.as_secs_f64(),
                s.reconnect_initial.as_secs_f64()
            ));
        }
        Ok(s)
    }
}

fn check(key: &str, v: f64, lo: f64, hi: f64) -> Result<(), String> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!("{key} = {v} is outside {lo}..{hi}"))
    }
}

/// One `[[stream]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamEntry {
    /// Name carried by every record of the stream and used in logs and metrics.
    pub name: String,
    /// URL or path of the source.
    pub url: String,
    /// Lower transport: tcp, udp or udp-tcp.
    pub protocols: Option<RtspTransport>,
    /// rtspsrc latency in milliseconds.
    pub latency_ms: Option<u64>,
    /// First backoff ceiling in seconds.
    pub reconnect_initial_s: Option<f64>,
    /// Largest backoff ceiling in seconds.
    pub reconnect_max_s: Option<f64>,
    /// Longest outage before the stream is failed, seconds.
    pub retry_budget_s: Option<f64>,
    /// Silence that counts as a stall, seconds.
    pub stall_timeout_s: Option<f64>,
}

impl StreamEntry {
    /// This entry's own values as overrides of the defaults.
    pub fn overrides(&self) -> SettingsOverrides {
        SettingsOverrides {
            protocols: self.protocols,
            latency_ms: self.latency_ms,
            reconnect_initial_s: self.reconnect_initial_s,
            reconnect_max_s: self.reconnect_max_s,
            retry_budget_s: self.retry_budget_s,
            stall_timeout_s: self.stall_timeout_s,
        }
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
        let s = StreamSettings {
            reconnect_initial: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(4),
            ..StreamSettings::default()
        };
        assert_eq!(s.backoff(0, 1.0), Duration::from_millis(500));
        assert_eq!(s.backoff(2, 1.0), Duration::from_secs(2));
        assert_eq!(s.backoff(3, 1.0), Duration::from_secs(4));
        assert_eq!(s.backoff(60, 1.0), Duration::from_secs(4));
        assert_eq!(s.backoff(5, 0.0), Duration::ZERO);
        let mut j = Jitter::new(7);
        let draws: Vec<f64> = (0..1000).map(|_| j.next_unit()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.05, "{mean}");
    }

    #[test]
    fn overrides_are_checked_and_name_the_key() {
        let base = StreamSettings::default();
        let o = SettingsOverrides {
            latency_ms: Some(50),
            protocols: Some(RtspTransport::Udp),
            ..SettingsOverrides::default()
        };
        let s = o.apply(base).unwrap();
        assert_eq!(s.rtsp.latency, Duration::from_millis(50));
        assert_eq!(s.rtsp.transport, RtspTransport::Udp);
        let bad = SettingsOverrides {
            stall_timeout_s: Some(0.0),
            ..SettingsOverrides::default()
        };
        assert!(bad.apply(base).unwrap_err().contains("stall_timeout_s"));
        let inverted = SettingsOverrides {
            reconnect_initial_s: Some(5.0),
            reconnect_max_s: Some(1.0),
            ..SettingsOverrides::default()
        };
        assert!(
            inverted
                .apply(base)
                .unwrap_err()
                .contains("reconnect_max_s")
        );
    }
}
