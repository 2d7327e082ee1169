//! Process CPU time and memory from /proc (Linux), sampled by a background thread.

use std::time::{Duration, Instant};

use super::ResourceSample;

/// Clock ticks per second of /proc/self/stat times (USER_HZ, 100 on Linux x86-64 and arm64).
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU seconds of this process.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Busy CPU seconds of the whole machine, every process (user, nice, system, irq, softirq and
/// steal of the `cpu` line of /proc/stat): with `cpu_seconds`, how much else was running.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| ticks.get(*i))
        .sum();
    Some(busy / TICKS_PER_SECOND)
}

fn status_kb(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Current resident set size, MB.
pub fn rss_mb() -> Option<f64> {
    status_kb("VmRSS:").map(|kb| kb / 1024.0)
}

/// Peak resident set size, MB.
pub fn peak_rss_mb() -> Option<f64> {
    status_kb("VmHWM:").map(|kb| kb / 1024.0)
}

/// Resets the peak resident set size (VmHWM) to the current RSS, so `peak_rss_mb` measures from
/// here on (Linux ≥ 4.0: `5` into /proc/self/clear_refs). False when the kernel refused.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Samples RSS and CPU every interval until finished.
pub struct Monitor {
    stop: crossbeam_channel::Sender<()>,
    handle: Option<std::thread::JoinHandle<Vec<ResourceSample>>>,
}

impl Monitor {
    /// Starts sampling.
    pub fn start(every: Duration) -> Self {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let handle = std::thread::Builder::new()
            .name("affectstream-monitor".into())
            .spawn(move || {
                let start = Instant::now();
                let mut samples = Vec::new();
                let mut last_cpu = cpu_seconds().unwrap_or(0.0);
                let mut last_at = start;
                loop {
                    let finished = !matches!(
                        stopped.recv_timeout(every),
                        Err(crossbeam_channel::RecvTimeoutError::Timeout)
                    );
                    let now = Instant::now();
                    let cpu = cpu_seconds().unwrap_or(last_cpu);
                    let dt = now
                        .saturating_duration_since(last_at)
                        .as_secs_f64()
                        .max(1e-9);
                    samples.push(ResourceSample {
                        at_s: now.saturating_duration_since(start).as_secs_f64(),
                        rss_mb: rss_mb().unwrap_or(0.0),
                        cpu_percent: 100.0 * (cpu - last_cpu) / dt,
                    });
                    last_cpu = cpu;
                    last_at = now;
                    if finished {
                        return samples;
                    }
                }
            })
            .ok();
        Self { stop, handle }
    }

    /// Stops sampling and returns the samples.
    pub fn finish(self) -> Vec<ResourceSample> {
        drop(self.stop);
        self.handle.and_then(|h| h.join().ok()).unwrap_or_default()
    }
}
