//! Noticing a camera's return between reconnect attempts. After a long outage the backoff
//! ceiling has grown (up to `reconnect_max`), so waiting it out would keep a camera that is
//! back dark for seconds. While it waits, the supervisor connects to the RTSP server's TCP
//! port every `reconnect_probe` (a connect and close, nothing sent): once the port that was
//! refusing or unreachable accepts again, it retries at once. A server that accepts TCP but
//! refuses the stream (wrong password, missing mount) is never "returning", so it gets the
//! plain backoff. The probes start when the wait does, and waits start at jittered times, so
//! cameras that return together are still spread over a probe interval.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::capture::rtsp_server_address;

/// Longest a probe waits for a TCP handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a failed name lookup is trusted before the name is looked up again.
const RESOLVE_RETRY: Duration = Duration::from_secs(10);

/// What one probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The port refused, timed out or the name did not resolve.
    Down,
    /// The port accepts, and did before (no return to report).
    Up,
    /// The port accepts after a probe saw it down: the server is back.
    Returned,
}

/// Probes one RTSP server's TCP port and remembers whether it was seen down.
#[derive(Debug)]
pub struct ReturnProbe {
    host: String,
    port: u16,
    /// Time between probes.
    pub interval: Duration,
    addrs: Vec<SocketAddr>,
    resolve_failed_at: Option<Instant>,
    seen_down: bool,
}

impl ReturnProbe {
    /// A probe of the server `uri` names, every `interval`; None when the URI is not
    /// `rtsp://`/`rtsps://` or the interval is zero (probing off).
    pub fn new(uri: &str, interval: Duration) -> Option<Self> {
        if interval.is_zero() {
            return None;
        }
        let (host, port) = rtsp_server_address(uri)?;
        Some(Self {
            host,
            port,
            interval,
            addrs: Vec::new(),
            resolve_failed_at: None,
            seen_down: false,
        })
    }

    /// The server as `host:port` (no credentials: safe to log).
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Connects once (and closes) and says what it saw.
    pub fn check(&mut self) -> Seen {
        if self.connects() {
            if std::mem::take(&mut self.seen_down) {
                // Look the name up afresh next outage: the camera may have moved.
                self.addrs.clear();
                Seen::Returned
            } else {
                Seen::Up
            }
        } else {
            self.seen_down = true;
            Seen::Down
        }
    }

    fn connects(&mut self) -> bool {
        if self.addrs.is_empty() {
            if self
                .resolve_failed_at
                .is_some_and(|t| t.elapsed() < RESOLVE_RETRY)
            {
                return false;
            }
            match (self.host.as_str(), self.port).to_socket_addrs() {
                Ok(addrs) => {
                    self.addrs = addrs.collect();
                    self.resolve_failed_at = None;
                }
                Err(_) => {
                    self.resolve_failed_at = Some(Instant::now());
                    return false;
                }
            }
        }
        let timeout = CONNECT_TIMEOUT.min(self.interval);
        self.addrs
            .iter()
            .any(|addr| TcpStream::connect_timeout(addr, timeout).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn only_rtsp_urls_with_probing_on_get_a_probe() {
        let probe = ReturnProbe::new(
            "rtsp://a:secret@cam.local:8554/x",
            Duration::from_millis(500),
        );
        let probe = probe.unwrap();
        assert_eq!(probe.server(), "cam.local:8554");
        assert_eq!(
            ReturnProbe::new("rtsp://[::1]/x", Duration::from_secs(1))
                .unwrap()
                .server(),
            "[::1]:554"
        );
        assert!(ReturnProbe::new("rtsp://cam/x", Duration::ZERO).is_none());
        assert!(ReturnProbe::new("srt://cam:9000", Duration::from_secs(1)).is_none());
    }

    #[test]
    fn a_port_that_refused_and_accepts_again_is_a_return_once() {
        // A port that was just free: nothing listens on it now.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let uri = format!("rtsp://127.0.0.1:{port}/cam");
        let mut probe = ReturnProbe::new(&uri, Duration::from_millis(500)).unwrap();
        assert_eq!(probe.check(), Seen::Down);
        assert_eq!(probe.check(), Seen::Down);
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert_eq!(probe.check(), Seen::Returned);
        assert_eq!(probe.check(), Seen::Up);
        drop(listener);
        assert_eq!(probe.check(), Seen::Down);
    }

    #[test]
    fn a_server_that_is_up_from_the_start_never_returns() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let uri = format!(
            "rtsp://127.0.0.1:{}/cam",
            listener.local_addr().unwrap().port()
        );
        let mut probe = ReturnProbe::new(&uri, Duration::from_millis(500)).unwrap();
        for _ in 0..3 {
            assert_eq!(probe.check(), Seen::Up);
        }
    }

    #[test]
    fn a_name_that_does_not_resolve_is_down() {
        let mut probe = ReturnProbe::new(
            "rtsp://no-such-host.invalid/cam",
            Duration::from_millis(500),
        )
        .unwrap();
        assert_eq!(probe.check(), Seen::Down);
        // Not looked up again right away.
        let started = Instant::now();
        assert_eq!(probe.check(), Seen::Down);
        assert!(started.elapsed() < Duration::from_millis(50));
    }
}
