//! RTSP-specific setup: the user's transport and latency on `uridecodebin`'s `rtspsrc`, the
//! options that keep a live stream bounded (late packets dropped, a dead TCP connection
//! noticed within seconds), and the host and port of an RTSP URL (what a supervisor probes
//! while it waits to reconnect).

use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

/// Lower transports `rtspsrc` may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RtspTransport {
    /// Interleaved in the RTSP TCP connection: works through NAT and firewalls; the default.
    #[default]
    Tcp,
    /// RTP over UDP unicast: lowest latency on a clean LAN, loses packets otherwise.
    Udp,
    /// UDP first, TCP when UDP gets nothing.
    UdpTcp,
}

impl std::str::FromStr for RtspTransport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "udp-tcp" => Ok(Self::UdpTcp),
            _ => Err(format!(
                "unknown RTSP transport '{s}' (tcp, udp or udp-tcp)"
            )),
        }
    }
}

impl RtspTransport {
    /// The names `FromStr` accepts (as in the config file), for help texts.
    pub const NAMES: &'static [&'static str] = &["tcp", "udp", "udp-tcp"];

    /// The value of rtspsrc's `protocols` flags property.
    fn flags(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::UdpTcp => "udp+tcp",
        }
    }
}

/// `rtspsrc` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RtspSettings {
    /// Lower transport.
    pub transport: RtspTransport,
    /// Jitter buffer size: the latency rtspsrc adds to absorb network jitter.
    pub latency: Duration,
}

impl Default for RtspSettings {
    fn default() -> Self {
        Self {
            transport: RtspTransport::Tcp,
            latency: Duration::from_millis(200),
        }
    }
}

/// How long rtspsrc waits on a silent TCP connection before it errors (GStreamer's default
/// is 20 s).
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets the user's transport and latency on an `rtspsrc` (other sources are left alone).
pub(super) fn configure_rtspsrc(element: &gst::Element, rtsp: RtspSettings) {
    let is_rtsp = element
        .factory()
        .is_some_and(|f| f.name().as_str() == "rtspsrc");
    if !is_rtsp {
        return;
    }
    element.set_property_from_str("protocols", rtsp.transport.flags());
    element.set_property(
        "latency",
        rtsp.latency.as_millis().min(u32::MAX as u128) as u32,
    );
    // Late packets are dropped rather than queued: live means bounded.
    element.set_property("drop-on-latency", true);
    // A dead TCP connection is noticed within seconds, not the default 20 s.
    element.set_property("tcp-timeout", TCP_TIMEOUT.as_micros() as u64);
}

/// The host and TCP port of the RTSP server an `rtsp://` or `rtsps://` URL names (default
/// ports 554 and 322; credentials skipped; an IPv6 literal without its brackets). None for
/// other URLs.
pub fn rtsp_server_address(uri: &str) -> Option<(String, u16)> {
    let (rest, default_port) = if let Some(rest) = uri.strip_prefix("rtsp://") {
        (rest, 554)
    } else if let Some(rest) = uri.strip_prefix("rtsps://") {
        (rest, 322)
    } else {
        return None;
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    // The userinfo ends at the last '@' (a password may contain '@').
    let host_port = authority
        .rfind('@')
        .map_or(authority, |at| &authority[at + 1..]);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let end = v6.find(']')?;
        (&v6[..end], v6[end + 1..].strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p.parse().ok()?,
    };
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(factory: &str) -> gst::Element {
        gst::init().unwrap();
        gst::ElementFactory::make(factory).build().unwrap()
    }

    #[test]
    fn rtspsrc_gets_the_transport_latency_and_the_bounded_live_options() {
        let src = make("rtspsrc");
        configure_rtspsrc(
            &src,
            RtspSettings {
                transport: RtspTransport::UdpTcp,
                latency: Duration::from_millis(120),
            },
        );
        assert_eq!(src.property::<u32>("latency"), 120);
        assert!(src.property::<bool>("drop-on-latency"));
        assert_eq!(src.property::<u64>("tcp-timeout"), 5_000_000);
        let protocols = src.property_value("protocols");
        let flags = gst::glib::FlagsValue::from_value(&protocols)
            .map(|(_, values)| values.iter().map(|v| v.nick()).collect::<Vec<_>>())
            .unwrap();
        assert!(
            flags.contains(&"udp") && flags.contains(&"tcp"),
            "{flags:?}"
        );
        assert!(!flags.contains(&"udp-mcast"), "{flags:?}");

        let tcp_only = make("rtspsrc");
        configure_rtspsrc(&tcp_only, RtspSettings::default());
        assert_eq!(tcp_only.property::<u32>("latency"), 200);
    }

    #[test]
    fn other_sources_are_left_alone() {
        let src = make("filesrc");
        configure_rtspsrc(&src, RtspSettings::default());
        assert_eq!(src.property::<Option<String>>("location"), None);
    }

    #[test]
    fn the_server_address_of_an_rtsp_url() {
        let cases = [
            ("rtsp://127.0.0.1:8554/cam", Some(("127.0.0.1", 8554))),
            ("rtsp://camera/stream", Some(("camera", 554))),
            ("rtsps://camera/stream", Some(("camera", 322))),
            (
                "rtsp://admin:p@ss:w@10.0.0.7:9000/s?x=1",
                Some(("10.0.0.7", 9000)),
            ),
            ("rtsp://user@host:", Some(("host", 554))),
            ("rtsp://[::1]:8554/cam", Some(("::1", 8554))),
            ("rtsp://[fe80::1]/cam", Some(("fe80::1", 554))),
            ("rtsp://host:notaport/cam", None),
            ("rtsp:///cam", None),
            ("rtmp://host:1935/live", None),
            ("file:///tmp/a.mp4", None),
        ];
        for (uri, expected) in cases {
            let got = rtsp_server_address(uri);
            let expected = expected.map(|(h, p)| (h.to_owned(), p));
            assert_eq!(got, expected, "{uri}");
        }
    }
}
