//! The commands that spread cameras over workers through NATS JetStream: `cameras`, `worker`,
//! `tail` and `bench-publish` (feature `broker`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use affectstream::broker::{self, BrokerOptions, registry, tail};

use crate::options::{ModelArgs, ScheduleArgs};

/// The cluster subcommands, flattened into the top-level command.
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The camera registry on the broker: add, remove, list.
    Cameras(CamerasArgs),
    /// Claim cameras from the registry, run them and publish their records to JetStream.
    Worker(WorkerArgs),
    /// Print the published records (or events) as JSON lines as they arrive.
    Tail(TailArgs),
    /// Publish synthetic records through a worker's publish path and measure the throughput.
    BenchPublish(BenchPublishArgs),
}

/// How to reach the NATS server (every cluster command takes these).
#[derive(Args, Clone)]
pub struct NatsArgs {
    /// NATS server URL, e.g. nats://broker:4222 (several: comma-separated; tls:// for TLS).
    #[arg(long = "nats", env = "AFFECTSTREAM_NATS", hide_env_values = true)]
    nats: String,
    /// User name (with --nats-password).
    #[arg(long, env = "NATS_USER")]
    nats_user: Option<String>,
    /// Password (prefer the NATS_PASSWORD environment variable: arguments are visible to
    /// other users of the machine).
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    /// Authentication token (or NATS_TOKEN).
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    nats_token: Option<String>,
    /// Credentials file (JWT and NKey seed, .creds).
    #[arg(long, env = "NATS_CREDS")]
    nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) to verify the server's TLS certificate; implies TLS.
    #[arg(long)]
    nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --nats-tls-key).
    #[arg(long)]
    nats_tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long)]
    nats_tls_key: Option<PathBuf>,
    /// Refuse a connection without TLS.
    #[arg(long)]
    nats_tls: bool,
    /// Seconds to wait for the server before giving up (cameras, tail) or retrying (worker).
    #[arg(long, default_value_t = 5.0, value_parser = positive_seconds)]
    nats_timeout: f64,
}

impl NatsArgs {
    fn options(&self) -> BrokerOptions {
        BrokerOptions {
            url: self.nats.clone(),
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            token: self.nats_token.clone(),
            creds: self.nats_creds.clone(),
            tls_ca: self.nats_tls_ca.clone(),
            tls_cert: self.nats_tls_cert.clone(),
            tls_key: self.nats_tls_key.clone(),
            tls_required: self.nats_tls,
            connect_timeout: Duration::from_secs_f64(self.nats_timeout),
        }
    }
}

/// Options of `affectstream cameras`.
#[derive(Args)]
pub struct CamerasArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(subcommand)]
    action: CamerasAction,
}

#[derive(Subcommand)]
enum CamerasAction {
    /// Add a camera (a name already in use is an error).
    Add {
        /// Camera name: 1 to 64 of A-Z a-z 0-9 _ - (its records' `stream`).
        name: String,
        /// rtsp://user:password@host/path (or rtsps, http(s), rtmp, srt, udp, file:///abs/path).
        source_url: String,
        /// Stream setting KEY=VALUE (the keys of a [[stream]] entry: protocols, latency_ms,
        /// reconnect_initial_s, reconnect_max_s, retry_budget_s, stall_timeout_s); repeatable.
        #[arg(long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
    },
    /// Remove a camera (its worker stops it).
    Remove {
        /// Camera name.
        name: String,
    },
    /// One line per camera: name, URL (password as ***), holding worker, state[: reason].
    List {
        /// One JSON object per line instead.
        #[arg(long)]
        json: bool,
    },
}

/// Options of `affectstream worker`.
#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// This worker's name (default: host name and process id); 1 to 64 of A-Z a-z 0-9 _ -.
    #[arg(long)]
    name: Option<String>,
    /// Hold at most this many cameras.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_cameras: u32,
    /// Serve Prometheus metrics (/metrics) here; any address other than loopback needs --token.
    #[arg(long, default_value = "127.0.0.1:9750")]
    listen: std::net::SocketAddr,
    /// Do not serve metrics.
    #[arg(long)]
    no_listen: bool,
    /// Bearer token the metrics endpoint requires (default: $AFFECTSTREAM_TOKEN).
    #[arg(long)]
    token: Option<String>,
    /// Records the backlog holds while the broker is slow or away (the oldest go first).
    #[arg(long, default_value_t = broker::publish::RECORD_BACKLOG)]
    backlog: usize,
    /// Publishes that may wait for their ack at once.
    #[arg(long, default_value_t = broker::publish::MAX_PENDING, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=5000))]
    max_pending: usize,
    #[command(flatten)]
    pipeline: ModelArgs,
    #[command(flatten)]
    schedule: ScheduleArgs,
}

/// Options of `affectstream tail`.
#[derive(Args)]
pub struct TailArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Only this camera.
    #[arg(long)]
    camera: Option<String>,
    /// Conflict events and camera state changes instead of the per-frame records.
    #[arg(long)]
    events: bool,
    /// A durable consumer of this name: resumes where it left off (the first time: from the
    /// oldest message the stream keeps).
    #[arg(long)]
    durable: Option<String>,
    /// Exit once nothing has arrived for this many seconds.
    #[arg(long, value_parser = positive_seconds)]
    idle_exit: Option<f64>,
}

/// Options of `affectstream bench-publish`.
#[derive(Args)]
pub struct BenchPublishArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Records per second to offer (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds to offer records for.
    #[arg(long, default_value_t = 5.0, value_parser = positive_seconds)]
    seconds: f64,
    /// Bench cameras the records are spread over (bench-0, bench-1, ...).
    #[arg(long, default_value_t = 4)]
    cameras: usize,
    /// Records the backlog holds.
    #[arg(long, default_value_t = broker::publish::RECORD_BACKLOG)]
    backlog: usize,
    /// Publishes that may wait for their ack at once.
    #[arg(long, default_value_t = broker::publish::MAX_PENDING)]
    max_pending: usize,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 7.0 * 24.0 * 3600.0 => Ok(v),
        _ => Err(format!(
            "'{s}' is not a duration between 0 and a week, in seconds"
        )),
    }
}

/// Runs a cluster subcommand.
pub fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Cameras(args) => cameras(args),
        ClusterCommand::Worker(args) => worker(args),
        ClusterCommand::Tail(args) => tail_command(args),
        ClusterCommand::BenchPublish(args) => bench_publish(args),
    }
}

fn cameras(args: CamerasArgs) -> anyhow::Result<()> {
    let opts = args.nats.options();
    broker::block_on(async {
        let conn = broker::connect(&opts, "affectstream-cameras", "control").await?;
        let layout = broker::ensure_layout(&conn.js)
            .await
            .map_err(|e| broker::server_error(&opts, e))?;
        match args.action {
            CamerasAction::Add {
                name,
                source_url,
                options,
            } => {
                let mut entry = registry::CameraEntry {
                    url: source_url,
                    options: Default::default(),
                    added_ms: broker::wall_ms(),
                };
                for option in &options {
                    let (k, v) =
                        registry::parse_option(option).map_err(broker::BrokerError::Registry)?;
                    entry.options.insert(k, v);
                }
                registry::add(&layout.cameras, &name, &entry).await?;
                println!("added {name}");
            }
            CamerasAction::Remove { name } => {
                registry::remove(&layout.cameras, &name).await?;
                println!("removed {name}");
            }
            CamerasAction::List { json } => {
                let mut out = std::io::stdout().lock();
                for line in registry::list(&layout.cameras, &layout.leases).await? {
                    if json {
                        writeln!(out, "{}", serde_json::to_string(&line).unwrap_or_default())?;
                    } else {
                        writeln!(out, "{line}")?;
                    }
                }
            }
        }
        // Everything written is acknowledged; let the client go.
        conn.client.flush().await.ok();
        Ok::<(), broker::BrokerError>(())
    })??;
    Ok(())
}

fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let (mut run, _) = args.pipeline.run_options("")?;
    args.schedule.apply(&mut run);
    // The models are checked once before claiming anything: a worker that cannot run any
    // camera should say so, not claim cameras it will fail.
    affectstream::pipeline::Models::load(&run).context("cannot load the models")?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("AFFECTSTREAM_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let opts = affectstream::worker::WorkerOptions {
        broker: args.nats.options(),
        name: args
            .name
            .clone()
            .unwrap_or_else(broker::names::default_worker_name),
        max_cameras: args.max_cameras,
        run,
        server: (!args.no_listen).then_some(affectstream::sink::server::ServerConfig {
            listen: args.listen,
            token,
        }),
        record_backlog: args.backlog,
        event_backlog: broker::publish::EVENT_BACKLOG,
        max_pending: args.max_pending,
        stop,
    };
    let name = opts.name.clone();
    let summary = affectstream::worker::run_worker(opts, |addr| {
        tracing::info!("serving http://{addr}/metrics");
    })?;
    tracing::info!(
        worker = %name,
        claims = summary.claims,
        releases = summary.releases,
        lease_losses = summary.lease_losses,
        acked = summary.acked,
        duplicates = summary.duplicates,
        dropped_records = summary.dropped_records,
        unpublished = summary.unpublished,
        "worker done"
    );
    Ok(())
}

fn tail_command(args: TailArgs) -> anyhow::Result<()> {
    let opts = args.nats.options();
    let tail_opts = tail::TailOptions {
        camera: args.camera,
        events: args.events,
        durable: args.durable,
        idle_exit: args.idle_exit.map(Duration::from_secs_f64),
    };
    broker::block_on(async {
        let conn = broker::connect(&opts, "affectstream-tail", "tail").await?;
        tail::tail(&conn.js, &tail_opts, std::io::stdout().lock()).await
    })??;
    Ok(())
}

fn bench_publish(args: BenchPublishArgs) -> anyhow::Result<()> {
    let opts = args.nats.options();
    let report = broker::block_on(async {
        let conn = broker::connect(&opts, "affectstream-bench", "data").await?;
        broker::ensure_streams(&conn.js)
            .await
            .map_err(|e| broker::server_error(&opts, e))?;
        Ok::<_, broker::BrokerError>(
            broker::publish::bench(
                conn.js.clone(),
                args.rate,
                args.seconds,
                args.cameras,
                args.backlog,
                args.max_pending,
            )
            .await,
        )
    })??;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
