//! The live endpoint of a run: one TCP port serving a WebSocket that pushes every record and
//! status change (`ws://HOST:PORT/records`) and the Prometheus counters
//! (`http://HOST:PORT/metrics`). Binds 127.0.0.1 unless told otherwise; bound anywhere else it
//! requires a bearer token (`Authorization: Bearer TOKEN`) on every request.
//!
//! Each WebSocket client has a bounded queue and its own writer thread with a write timeout:
//! a client that stops reading fills its queue and is disconnected (counted); nobody else
//! waits for it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use super::SinkError;
use crate::sink::prometheus::Registry;

/// Messages a WebSocket client may be behind before it is disconnected.
pub const CLIENT_QUEUE: usize = 256;
/// How long a write to a client may block before the client is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Kernel send buffer of a WebSocket connection, bytes.
#[cfg(feature = "websocket")]
const SEND_BUFFER: usize = 64 * 1024;
/// How long a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how the endpoint listens.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Bearer token required on every request; mandatory when `listen` is not loopback.
    pub token: Option<String>,
}

impl ServerConfig {
    /// Checks that a non-loopback bind has a token.
    pub fn validate(&self) -> Result<(), SinkError> {
        if !self.listen.ip().is_loopback() && self.token.as_deref().is_none_or(str::is_empty) {
            return Err(SinkError::Serve(format!(
                "listening on {} exposes the records beyond this machine: set a bearer token \
                 with --token or AFFECTSTREAM_TOKEN",
                self.listen
            )));
        }
        Ok(())
    }
}

/// The connected WebSocket clients.
#[derive(Default)]
pub struct Clients {
    list: Mutex<Vec<(u64, Sender<Arc<str>>)>>,
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    next_id: AtomicU64,
    registry: Arc<Registry>,
}

impl Clients {
    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    fn add(&self) -> (u64, crossbeam_channel::Receiver<Arc<str>>) {
        let (tx, rx) = crossbeam_channel::bounded(CLIENT_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut list) = self.list.lock() {
            list.push((id, tx));
        }
        let ws = &self.registry.websocket;
        ws.clients.fetch_add(1, Ordering::Relaxed);
        ws.accepted.fetch_add(1, Ordering::Relaxed);
        (id, rx)
    }

    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
    fn remove(&self, id: u64) {
        if let Ok(mut list) = self.list.lock() {
            let before = list.len();
            list.retain(|(i, _)| *i != id);
            if list.len() < before {
                self.registry
                    .websocket
                    .clients
                    .fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues `json` for every client without waiting; a client whose queue is full is
    /// disconnected (its writer thread sees the queue close and hangs up).
    pub fn broadcast(&self, json: &str) {
        let Ok(mut list) = self.list.lock() else {
            return;
        };
        if list.is_empty() {
            return;
        }
        let message: Arc<str> = Arc::from(json);
        let ws = &self.registry.websocket;
        list.retain(|(id, tx)| match tx.try_send(message.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    client = id,
                    "WebSocket client is not keeping up; disconnected"
                );
                ws.dropped_slow.fetch_add(1, Ordering::Relaxed);
                ws.clients.fetch_sub(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                ws.clients.fetch_sub(1, Ordering::Relaxed);
                false
            }
        });
    }

    /// Disconnects every client (end of run).
    pub fn close_all(&self) {
        if let Ok(mut list) = self.list.lock() {
            let n = list.len() as u64;
            list.clear();
            self.registry
                .websocket
                .clients
                .fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// The running endpoint. Dropping it stops accepting and disconnects every client.
pub struct Server {
    /// The address actually bound.
    pub addr: SocketAddr,
    /// The WebSocket clients, for the sink hub to broadcast to.
    pub clients: Arc<Clients>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Binds and starts accepting.
    pub fn start(config: ServerConfig, registry: Arc<Registry>) -> Result<Self, SinkError> {
        config.validate()?;
        let listener = TcpListener::bind(config.listen)
            .map_err(|e| SinkError::Serve(format!("cannot listen on {}: {e}", config.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| SinkError::Serve(format!("cannot listen on {}: {e}", config.listen)))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| SinkError::Serve(e.to_string()))?;
        let clients = Arc::new(Clients {
            registry: registry.clone(),
            ..Clients::default()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            token: config.token,
            registry,
            clients: clients.clone(),
        });
        let stopping = stop.clone();
        thread::Builder::new()
            .name("affectstream-listen".into())
            .spawn(move || accept_loop(listener, shared, stopping))
            .map_err(|e| SinkError::Serve(e.to_string()))?;
        Ok(Self {
            addr,
            clients,
            stop,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.clients.close_all();
    }
}

struct Shared {
    token: Option<String>,
    registry: Arc<Registry>,
    clients: Arc<Clients>,
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                let spawned = thread::Builder::new()
                    .name("affectstream-client".into())
                    .spawn(move || {
                        if let Err(e) = serve(stream, &shared) {
                            tracing::debug!(%peer, "connection ended: {e}");
                        }
                    });
                if spawned.is_err() {
                    tracing::warn!(%peer, "cannot start a thread for a connection");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The request line and the headers we look at.
struct RequestHead {
    path: String,
    authorization: Option<String>,
    upgrade: bool,
}

/// Reads the request head without consuming it (the WebSocket handshake reads it again).
fn peek_head(stream: &TcpStream) -> std::io::Result<Option<RequestHead>> {
    let mut buf = [0u8; 8192];
    let mut seen = 0;
    for _ in 0..50 {
        seen = stream.peek(&mut buf)?;
        if seen == 0 || buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let text = String::from_utf8_lossy(&buf[..seen]);
    let mut lines = text.split("\r\n");
    let Some(request_line) = lines.next() else {
        return Ok(None);
    };
    let mut parts = request_line.split(' ');
    let (Some("GET"), Some(path)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let mut head = RequestHead {
        path: path.to_owned(),
        authorization: None,
        upgrade: false,
    };
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "authorization" => head.authorization = Some(value.to_owned()),
            "upgrade" => head.upgrade = value.eq_ignore_ascii_case("websocket"),
            _ => {}
        }
    }
    Ok(Some(head))
}

fn respond(
    mut stream: TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    // Consume the request so closing the socket does not reset the connection.
    let mut scratch = [0u8; 8192];
    stream.set_nonblocking(true)?;
    let _ = stream.read(&mut scratch);
    stream.set_nonblocking(false)?;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// Constant-time comparison of the presented token.
fn token_matches(expected: &str, presented: Option<&str>) -> bool {
    let Some(presented) = presented.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (expected.as_bytes(), presented.trim().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn serve(stream: TcpStream, shared: &Shared) -> Result<(), String> {
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let refused = || {
        shared
            .registry
            .websocket
            .refused
            .fetch_add(1, Ordering::Relaxed)
    };
    let Some(head) = peek_head(&stream).map_err(|e| e.to_string())? else {
        refused();
        return respond(stream, "400 Bad Request", "text/plain", "bad request\n")
            .map_err(|e| e.to_string());
    };
    if let Some(token) = &shared.token
        && !token_matches(token, head.authorization.as_deref())
    {
        refused();
        return respond(
            stream,
            "401 Unauthorized",
            "text/plain",
            "a bearer token is required\n",
        )
        .map_err(|e| e.to_string());
    }
    let path = head.path.split('?').next().unwrap_or_default();
    match (path, head.upgrade) {
        ("/metrics", _) => respond(
            stream,
            "200 OK",
            "text/plain; version=0.0.4",
            &shared.registry.render(),
        )
        .map_err(|e| e.to_string()),
        ("/records" | "/", true) => push_records(stream, &shared.clients),
        _ => {
            refused();
            respond(
                stream,
                "404 Not Found",
                "text/plain",
                "try ws://HOST:PORT/records or /metrics\n",
            )
            .map_err(|e| e.to_string())
        }
    }
}

/// Without the `websocket` feature the endpoint serves `/metrics` only.
#[cfg(not(feature = "websocket"))]
fn push_records(stream: TcpStream, _clients: &Clients) -> Result<(), String> {
    respond(
        stream,
        "501 Not Implemented",
        "text/plain",
        "this build has no WebSocket feed (cargo feature `websocket`); /metrics is served\n",
    )
    .map_err(|e| e.to_string())
}

#[cfg(feature = "websocket")]
fn push_records(stream: TcpStream, clients: &Clients) -> Result<(), String> {
    // A small kernel buffer keeps what a stalled client can hold back small, so it is found
    // out (and dropped) after a bounded amount of data, not after megabytes.
    socket2::SockRef::from(&stream)
        .set_send_buffer_size(SEND_BUFFER)
        .map_err(|e| e.to_string())?;
    let mut socket = tungstenite::accept(stream).map_err(|e| e.to_string())?;
    let (id, rx) = clients.add();
    tracing::info!(client = id, "WebSocket client connected");
    let mut result = Ok(());
    for message in rx.iter() {
        if let Err(e) = socket.send(tungstenite::Message::text(message.as_ref())) {
            // A write that timed out means the client stopped reading: slow, dropped.
            if let tungstenite::Error::Io(io) = &e
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            {
                tracing::warn!(
                    client = id,
                    "WebSocket client stopped reading; disconnected"
                );
                clients
                    .registry
                    .websocket
                    .dropped_slow
                    .fetch_add(1, Ordering::Relaxed);
            }
            result = Err(e.to_string());
            break;
        }
    }
    clients.remove(id);
    // Best effort: say goodbye to a client that is still there.
    let _ = socket.close(None);
    let _ = socket.flush();
    tracing::info!(client = id, "WebSocket client disconnected");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_loopback_bind_needs_a_token() {
        let open = ServerConfig {
            listen: "0.0.0.0:0".parse().unwrap(),
            token: None,
        };
        assert!(open.validate().unwrap_err().to_string().contains("token"));
        let local = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: None,
        };
        local.validate().unwrap();
    }

    #[test]
    fn tokens_are_compared_whole() {
        assert!(token_matches("abc", Some("Bearer abc")));
        assert!(!token_matches("abc", Some("Bearer abd")));
        assert!(!token_matches("abc", Some("Bearer ab")));
        assert!(!token_matches("abc", Some("abc")));
        assert!(!token_matches("abc", None));
    }

    #[test]
    fn metrics_are_served_over_http_and_a_missing_token_is_refused() {
        let registry = Arc::new(Registry::default());
        let server = Server::start(
            ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                token: Some("sesame".into()),
            },
            registry,
        )
        .unwrap();
        let get = |auth: &str| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}\r\n").unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            body
        };
        let ok = get("Authorization: Bearer sesame\r\n");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("affectstream_websocket_clients 0"), "{ok}");
        let refused = get("");
        assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    }
}
