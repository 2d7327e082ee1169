//! Cameras spread over worker processes through NATS JetStream (feature `broker`).
//!
//! ```text
//!  operator ── cameras add/remove ──▶ KV affect_cameras (name → URL, options)
//!  worker i ── claim / renew (CAS) ──▶ KV affect_leases  (camera → worker, state; bucket TTL)
//!           ── heartbeat ───────────▶ KV affect_workers (worker → load; bucket TTL)
//!           ── records ─────────────▶ stream AFFECT_RECORDS (affect.rec.<camera>)
//!           ── events, states ──────▶ stream AFFECT_EVENTS  (affect.evt.<camera>)
//!  consumer ◀── tail [--durable] ───── either stream
//! ```
//!
//! The client is the official `async-nats`, driven by one small tokio runtime on its own
//! thread; the pipeline's threads hand it messages through a bounded backlog ([`publish`])
//! and never wait on the network. [`lease`] holds the claim, renew and fair-share rules,
//! [`registry`] the camera registry, [`tail`] the consumer side.

pub mod lease;
pub mod names;
pub mod publish;
pub mod registry;
pub mod tail;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_nats::jetstream;

/// Stream of the per-frame records, subjects `affect.rec.<camera>`.
pub const RECORDS_STREAM: &str = "AFFECT_RECORDS";
/// Stream of the conflict events and camera state changes, subjects `affect.evt.<camera>`.
pub const EVENTS_STREAM: &str = "AFFECT_EVENTS";
/// KV bucket of the camera registry (no TTL).
pub const CAMERAS_BUCKET: &str = "affect_cameras";
/// KV bucket of the camera leases (bucket-wide TTL = the lease TTL).
pub const LEASES_BUCKET: &str = "affect_leases";
/// KV bucket of the worker heartbeats (same TTL).
pub const WORKERS_BUCKET: &str = "affect_workers";
/// Lease TTL of a bucket created by this version (the bucket's `max_age`).
pub const LEASE_TTL: Duration = Duration::from_secs(8);
/// How long the records stream keeps a record.
pub const RECORDS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How long the events stream keeps an event.
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Window in which the server drops a message whose id it has seen (re-sends after a
/// reconnect).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a JetStream request (publish ack, KV write) may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors talking to the broker. Messages never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot reach the NATS server at {url} (waited {waited_s:.0} s): {reason}")]
    Unreachable {
        url: String,
        waited_s: f64,
        reason: String,
    },
    #[error("invalid NATS options: {0}")]
    Options(String),
    #[error("NATS server at {url}: {message}")]
    Server { url: String, message: String },
    #[error("{0}")]
    Registry(String),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// How to reach and authenticate to the NATS server. `Debug` shows no secret.
#[derive(Clone, Default)]
pub struct BrokerOptions {
    /// `nats://host:port` (or `tls://`, or several, comma-separated); user and password in
    /// the URL are accepted too.
    pub url: String,
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password (with `user`).
    pub password: Option<String>,
    /// Authentication token.
    pub token: Option<String>,
    /// A `.creds` file (JWT + NKey seed).
    pub creds: Option<PathBuf>,
    /// CA certificate(s) to trust for the server's TLS certificate (PEM).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (PEM, with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS (PEM).
    pub tls_key: Option<PathBuf>,
    /// Refuse to talk to the server without TLS.
    pub tls_required: bool,
    /// Bounded wait for the first connection.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for BrokerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerOptions")
            .field("url", &self.display_url())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("creds", &self.creds)
            .field("tls_required", &self.tls_required)
            .finish_non_exhaustive()
    }
}

/// `url` with any user information replaced by `***` (`nats://***@host:4222`).
pub fn redact_nats_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let one = one.trim();
            let (scheme, rest) = match one.find("://") {
                Some(i) => (&one[..i + 3], &one[i + 3..]),
                None => ("", one),
            };
            let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => format!("{scheme}***{}", &rest[at..]),
                None => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl BrokerOptions {
    /// The server URL as it may be shown (credentials replaced by `***`).
    pub fn display_url(&self) -> String {
        redact_nats_url(&self.url)
    }

    /// Every secret these options hold, to scrub from any text that reaches a log or an error.
    fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = [&self.password, &self.token]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        for one in self.url.split(',') {
            if let Some(rest) = one.split("://").nth(1) {
                let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                if let Some(at) = rest[..host_end].rfind('@') {
                    let info = &rest[..at];
                    secrets.push(info.split_once(':').map_or(info, |(_, p)| p).to_owned());
                }
            }
        }
        secrets.retain(|s| !s.is_empty());
        secrets
    }

    /// `text` with every secret of these options replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        scrub(text, &self.secrets())
    }

    /// Checks the combination of options before anything connects.
    pub fn validate(&self) -> Result<(), BrokerError> {
        if self.url.trim().is_empty() {
            return Err(BrokerError::Options("--nats needs a server URL".into()));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(BrokerError::Options(
                "--nats-user and --nats-password go together".into(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(BrokerError::Options(
                "--nats-tls-cert and --nats-tls-key go together".into(),
            ));
        }
        let methods = [
            self.user.is_some(),
            self.token.is_some(),
            self.creds.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(BrokerError::Options(
                "give one of --nats-user/--nats-password, --nats-token, --nats-creds".into(),
            ));
        }
        for path in [&self.creds, &self.tls_ca, &self.tls_cert, &self.tls_key]
            .into_iter()
            .flatten()
        {
            if !path.is_file() {
                return Err(BrokerError::Options(format!(
                    "{}: no such file",
                    path.display()
                )));
            }
        }
        Ok(())
    }
}

/// A connection's state as the metrics and logs show it.
#[derive(Debug, Default)]
pub struct ConnectionState(AtomicU8);

impl ConnectionState {
    /// Not connected yet.
    pub const PENDING: u8 = 0;
    /// Connected.
    pub const CONNECTED: u8 = 1;
    /// Lost; the client reconnects by itself.
    pub const DISCONNECTED: u8 = 2;

    /// The state's number (one of the constants).
    pub fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, v: u8) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The state's name.
    pub fn name(v: u8) -> &'static str {
        match v {
            Self::CONNECTED => "connected",
            Self::DISCONNECTED => "disconnected",
            _ => "pending",
        }
    }
}

/// One connection to the server, with the options it was made from.
#[derive(Clone)]
pub struct Connection {
    /// The client (reconnects by itself after a loss).
    pub client: async_nats::Client,
    /// JetStream on it, with [`REQUEST_TIMEOUT`].
    pub js: jetstream::Context,
    /// Its state, updated from the client's events.
    pub state: Arc<ConnectionState>,
}

/// Connects once, waiting at most `opts.connect_timeout`. `purpose` names the connection in
/// logs (`control`, `data`, ...); state changes after the first connection are logged once each.
pub async fn connect(
    opts: &BrokerOptions,
    client_name: &str,
    purpose: &'static str,
) -> Result<Connection, BrokerError> {
    opts.validate()?;
    let url = opts.display_url();
    let state = Arc::new(ConnectionState::default());
    let events = state.clone();
    let event_url = url.clone();
    let scrubber = opts.clone();
    let mut options = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(opts.connect_timeout)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .max_reconnects(None)
        // Quick first retries: a broker restart is back within a second or two.
        .reconnect_delay_callback(|attempt| {
            Duration::from_millis(100u64.saturating_mul(1 << attempt.min(5) as u64))
                .min(Duration::from_secs(2))
        })
        .event_callback(move |event| {
            let state = events.clone();
            let url = event_url.clone();
            let scrubber = scrubber.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        if state.get() == ConnectionState::DISCONNECTED {
                            tracing::info!(
                                connection = purpose,
                                "reconnected to the NATS server at {url}"
                            );
                        }
                        state.set(ConnectionState::CONNECTED);
                    }
                    async_nats::Event::Disconnected => {
                        state.set(ConnectionState::DISCONNECTED);
                        tracing::warn!(
                            connection = purpose,
                            "lost the NATS server at {url}; reconnecting"
                        );
                    }
                    async_nats::Event::Closed => state.set(ConnectionState::DISCONNECTED),
                    other => {
                        tracing::debug!(
                            connection = purpose,
                            "{}",
                            scrubber.scrub(&other.to_string())
                        )
                    }
                }
            }
        });
    if let (Some(user), Some(password)) = (&opts.user, &opts.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &opts.token {
        options = options.token(token.clone());
    }
    if let Some(creds) = &opts.creds {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|e| BrokerError::Options(format!("cannot read {}: {e}", creds.display())))?;
    }
    if let Some(ca) = &opts.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&opts.tls_cert, &opts.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if opts.tls_required {
        options = options.require_tls(true);
    }
    let wait = opts.connect_timeout + Duration::from_millis(500);
    let unreachable = |reason: String| BrokerError::Unreachable {
        url: url.clone(),
        waited_s: wait.as_secs_f64(),
        reason: opts.scrub(&reason),
    };
    let client = match tokio::time::timeout(wait, options.connect(opts.url.as_str())).await {
        Err(_) => return Err(unreachable("no answer".into())),
        Ok(Err(e)) => return Err(unreachable(connect_reason(&e))),
        Ok(Ok(client)) => client,
    };
    state.set(ConnectionState::CONNECTED);
    let js = jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .build(client.clone());
    Ok(Connection { client, js, state })
}

/// The reason of a failed connection in words (the error with its source).
fn connect_reason(e: &async_nats::ConnectError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// A server error in words, scrubbed of the options' secrets.
pub fn server_error(opts: &BrokerOptions, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Server {
        url: opts.display_url(),
        message: opts.scrub(&e.to_string()),
    }
}

/// The streams and buckets, created when missing (idempotent: every command may call it).
pub struct Layout {
    /// Camera registry.
    pub cameras: jetstream::kv::Store,
    /// Camera leases.
    pub leases: jetstream::kv::Store,
    /// Worker heartbeats.
    pub workers: jetstream::kv::Store,
    /// The lease TTL in force (the leases bucket's `max_age`).
    pub lease_ttl: Duration,
}

async fn bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    max_age: Duration,
) -> Result<jetstream::kv::Store, String> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    // The bucket's stream, as async-nats' `create_key_value` would make it. That call is not
    // used: it first asks for the account info, whose reply from nats-server 2.9 lacks fields
    // async-nats 0.51 requires (`reserved_memory`, `reserved_storage`), so it fails there.
    let config = jetstream::stream::Config {
        name: format!("KV_{name}"),
        description: Some(description.to_owned()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: 1,
        duplicate_window: if max_age.is_zero() {
            DUPLICATE_WINDOW
        } else {
            max_age.min(DUPLICATE_WINDOW)
        },
        ..Default::default()
    };
    if let Err(e) = js.get_or_create_stream(config).await {
        // Another process may have created it meanwhile.
        return js
            .get_key_value(name)
            .await
            .map_err(|_| format!("cannot create the KV bucket {name}: {e}"));
    }
    js.get_key_value(name)
        .await
        .map_err(|e| format!("cannot open the KV bucket {name}: {e}"))
}

/// Creates the records and events streams when missing.
pub async fn ensure_streams(js: &jetstream::Context) -> Result<(), String> {
    for (name, subjects, max_age) in [
        (RECORDS_STREAM, "affect.rec.>", RECORDS_MAX_AGE),
        (EVENTS_STREAM, "affect.evt.>", EVENTS_MAX_AGE),
    ] {
        let config = jetstream::stream::Config {
            name: name.to_owned(),
            subjects: vec![subjects.to_owned()],
            storage: jetstream::stream::StorageType::File,
            retention: jetstream::stream::RetentionPolicy::Limits,
            discard: jetstream::stream::DiscardPolicy::Old,
            max_age,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .map_err(|e| format!("cannot create the stream {name}: {e}"))?;
    }
    Ok(())
}

/// Creates what is missing of the layout and opens the buckets.
pub async fn ensure_layout(js: &jetstream::Context) -> Result<Layout, String> {
    ensure_streams(js).await?;
    let cameras = bucket(
        js,
        CAMERAS_BUCKET,
        "affectstream cameras: name -> URL and options",
        Duration::ZERO,
    )
    .await?;
    let leases = bucket(
        js,
        LEASES_BUCKET,
        "affectstream leases: camera -> worker",
        LEASE_TTL,
    )
    .await?;
    let workers = bucket(
        js,
        WORKERS_BUCKET,
        "affectstream worker heartbeats",
        LEASE_TTL,
    )
    .await?;
    let lease_ttl = leases
        .status()
        .await
        .map(|s| s.info.config.max_age)
        .unwrap_or(LEASE_TTL);
    let lease_ttl = if lease_ttl.is_zero() {
        LEASE_TTL
    } else {
        lease_ttl
    };
    Ok(Layout {
        cameras,
        leases,
        workers,
        lease_ttl,
    })
}

/// Runs `fut` to completion on a small single-threaded runtime on this thread (the commands
/// `cameras` and `tail`, which do nothing else).
pub fn block_on<T>(fut: impl std::future::Future<Output = T>) -> Result<T, BrokerError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BrokerError::Options(format!("cannot start the async runtime: {e}")))?;
    Ok(runtime.block_on(fut))
}

/// `text` with every secret replaced by `***` (longest first, so a secret containing another
/// goes whole).
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for secret in sorted {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_urls_lose_their_user_information() {
        assert_eq!(
            redact_nats_url("nats://u:secret@host:4222"),
            "nats://***@host:4222"
        );
        assert_eq!(
            redact_nats_url("nats://tok@a:1, tls://b:2"),
            "nats://***@a:1,tls://b:2"
        );
        assert_eq!(redact_nats_url("127.0.0.1:4222"), "127.0.0.1:4222");
        let opts = BrokerOptions {
            url: "nats://u:pa55@h:1".into(),
            token: Some("tok3n".into()),
            ..BrokerOptions::default()
        };
        assert_eq!(opts.scrub("x pa55 tok3n y"), "x *** *** y");
        let debug = format!("{opts:?}");
        assert!(
            !debug.contains("pa55") && !debug.contains("tok3n"),
            "{debug}"
        );
    }

    #[test]
    fn option_combinations_are_checked() {
        let base = BrokerOptions {
            url: "nats://h:1".into(),
            ..BrokerOptions::default()
        };
        assert!(base.validate().is_ok());
        let half = BrokerOptions {
            user: Some("u".into()),
            ..base.clone()
        };
        assert!(
            half.validate()
                .unwrap_err()
                .to_string()
                .contains("go together")
        );
        let two = BrokerOptions {
            user: Some("u".into()),
            password: Some("p".into()),
            token: Some("t".into()),
            ..base.clone()
        };
        assert!(two.validate().unwrap_err().to_string().contains("one of"));
    }
}
