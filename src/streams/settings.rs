//! Per-stream settings and the `[streams]` / `[[stream]]` sections of the configuration file:
//! RTSP transport and latency, reconnect backoff, return probe and budget, stall timeout. The
//! numbers live here; what the supervisor does with them is in `backoff` and `probe`.
//!
//! ```toml
//! [streams]                 # defaults for every stream
//! protocols = "tcp"         # tcp | udp | udp-tcp
//! latency_ms = 200          # rtspsrc jitter buffer
//! reconnect_initial_s = 0.5 # first backoff ceiling; doubles per failed attempt
//! reconnect_max_s = 10      # backoff ceiling
//! reconnect_probe_s = 0.5   # while waiting, TCP-probe the RTSP port this often; 0: off
//! retry_budget_s = 300      # give up (state failed) after an outage this long
//! stall_timeout_s = 5       # no data this long: restart the connection
//!
//! [[stream]]
//! name = "lobby"
//! url = "rtsp://user:password@10.0.0.7/stream1"
//! latency_ms = 100          # any default above can be overridden per stream
//! ```
//!
//! A lost stream is retried after a delay uniform in [0, min(max, initial × 2^attempt)]. While
//! it waits, the RTSP server's TCP port is probed every `reconnect_probe_s`; a port that was
//! refusing (or unreachable) and accepts again ends the wait at once and restarts the backoff
//! from `reconnect_initial_s`, so a camera that comes back after an outage of any length is
//! retried within about one probe interval of its return instead of after the grown backoff
//! (with the defaults, records flowed again 0.15–0.6 s after a loopback server came back from a
//! 5 s or a 60 s outage; without the probe, up to the backoff ceiling, 10 s).

use std::time::Duration;

use serde::Deserialize;

use super::backoff::Backoff;
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
    /// While waiting to retry an RTSP source, probe its server's TCP port this often and
    /// retry at once when a port that refused accepts again; zero turns probing off.
    pub reconnect_probe: Duration,
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
            reconnect_probe: Duration::from_millis(500),
            retry_budget: Duration::from_secs(300),
            stall_timeout: Duration::from_secs(5),
        }
    }
}

impl StreamSettings {
    /// The reconnect backoff these settings give (exponential, full jitter).
    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.reconnect_initial,
            max: self.reconnect_max,
        }
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
    /// Seconds between TCP probes of a lost RTSP server (0: off, else 0.05..60).
    pub reconnect_probe_s: Option<f64>,
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
        if self.reconnect_probe_s != Some(0.0) {
            seconds(
                "reconnect_probe_s",
                self.reconnect_probe_s,
                0.05,
                60.0,
                &mut s.reconnect_probe,
            )?;
        } else {
            s.reconnect_probe = Duration::ZERO;
        }
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
    /// Seconds between TCP probes of a lost RTSP server (0: off).
    pub reconnect_probe_s: Option<f64>,
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
            reconnect_probe_s: self.reconnect_probe_s,
            retry_budget_s: self.retry_budget_s,
            stall_timeout_s: self.stall_timeout_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_return_probe_defaults_to_half_a_second_and_zero_turns_it_off() {
        let base = StreamSettings::default();
        assert_eq!(base.reconnect_probe, Duration::from_millis(500));
        assert_eq!(base.backoff().initial, Duration::from_millis(500));
        assert_eq!(base.backoff().max, Duration::from_secs(10));
        let off = SettingsOverrides {
            reconnect_probe_s: Some(0.0),
            ..SettingsOverrides::default()
        };
        assert_eq!(off.apply(base).unwrap().reconnect_probe, Duration::ZERO);
        let fast = SettingsOverrides {
            reconnect_probe_s: Some(0.2),
            ..SettingsOverrides::default()
        };
        assert_eq!(
            fast.apply(base).unwrap().reconnect_probe,
            Duration::from_millis(200)
        );
        let too_fast = SettingsOverrides {
            reconnect_probe_s: Some(0.01),
            ..SettingsOverrides::default()
        };
        assert!(
            too_fast
                .apply(base)
                .unwrap_err()
                .contains("reconnect_probe_s")
        );
    }
}
