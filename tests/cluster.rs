//! Cameras spread over worker processes through NATS JetStream, all real: a `nats-server`
//! (Debian's 2.9.10) started here on a free loopback port with its own store directory, the
//! loopback RTSP server (`affectstream-rtsp-serve`) serving 256x256 talking-head clips, and
//! `affectstream worker` processes. Even split, a joining worker, SIGKILL failover, SIGTERM
//! hand-back, a broker restart with nothing acknowledged lost and nothing duplicated, two
//! workers racing for one camera (and one frozen past its lease), secrets that never leak,
//! token, TLS and `.creds` (an operator-mode broker with JWTs signed here) authentication,
//! and bad input. The tests run one at a time: they measure live behaviour on two cores.
#![cfg(feature = "broker")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::process::Running;
use common::{temp_dir, testdata};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The four 256x256 talking-head clips.
const CLIPS: [&str; 4] = [
    "tedlieu_60s_256.mp4",
    "Obama_clip2_muxed.mp4",
    "andrew_clip_2_muxed.mp4",
    "reagan_clip1_muxed.mp4",
];

fn clip(name: &str) -> String {
    testdata()
        .join("av/streams")
        .join(name)
        .display()
        .to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, limit: Duration) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < limit, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real `nats-server` with JetStream, on a loopback port, with its own store.
struct Nats {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    extra: Vec<String>,
}

impl Nats {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut nats = Self {
            child: None,
            port: free_port(),
            store: dir.join("jetstream"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        nats.spawn();
        nats
    }

    fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (scripts/setup.sh installs it)");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(20));
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, like a crash or a power cut of the broker's process.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The loopback RTSP server with one mount per clip.
struct Rtsp {
    child: Child,
    port: u16,
}

impl Rtsp {
    fn start(mounts: &[(&str, String)], extra: &[&str]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_affectstream-rtsp-serve"));
        cmd.args(["--port", "0"]);
        for (path, file) in mounts {
            cmd.arg("--mount").arg(format!("{path}={file}"));
        }
        let mut child = cmd
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start affectstream-rtsp-serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let port = line
            .split(':')
            .nth(2)
            .and_then(|r| r.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("RTSP server did not start: {line:?}"));
        Self { child, port }
    }

    fn url(&self, mount: &str) -> String {
        format!("rtsp://127.0.0.1:{}{mount}", self.port)
    }
}

impl Drop for Rtsp {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A worker on the test's broker, with the light face encoder and metrics on a free port
/// (and the schedule options `run` and `bench` share, at their defaults but the interval).
fn worker(nats: &Nats, name: &str, extra: &[&str]) -> Running {
    let url = nats.url();
    let mut args = vec![
        "worker",
        "--nats",
        &url,
        "--name",
        name,
        "--listen",
        "127.0.0.1:0",
        "--face-encoders",
        "mini",
        "--device",
        "cpu",
        "--detect-every",
        "3",
        "--detect-motion",
        "0.02",
        "--decode-threads",
        "1",
    ];
    args.extend_from_slice(extra);
    Running::start(&args, &[], "info")
}

fn metrics_addr(p: &Running) -> String {
    let line = p.wait_stderr(Duration::from_secs(30), "/metrics");
    line.split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_owned()
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// Runs a short `affectstream` command (cameras, tail) to its end.
fn cli(args: &[&str]) -> common::Output {
    common::run_binary(args, Duration::from_secs(60))
}

/// `affectstream args` with `env` set and debug logs (the client library's too), where a
/// secret would show if it leaked.
fn cli_debug(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> common::Output {
    common::run_binary_env(args, env, "debug", Duration::from_secs(60))
}

fn add_camera(nats: &Nats, name: &str, url: &str, options: &[&str]) {
    let u = nats.url();
    let mut args = vec!["cameras", "--nats", &u, "add", name, url];
    for o in options {
        args.push("--option");
        args.push(o);
    }
    let out = cli(&args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

/// `cameras list` as name → (holder, state line).
fn list(nats: &Nats) -> BTreeMap<String, (String, String)> {
    let u = nats.url();
    let out = cli(&["cameras", "--nats", &u, "list"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.stdout
        .lines()
        .map(|l| {
            let parts: Vec<&str> = l.splitn(4, "  ").collect();
            (
                parts[0].to_owned(),
                (parts[2].to_owned(), parts[3].to_owned()),
            )
        })
        .collect()
}

/// Waits until `cameras list` satisfies `pred`; returns it.
fn wait_list(
    nats: &Nats,
    limit: Duration,
    pred: impl Fn(&BTreeMap<String, (String, String)>) -> bool,
) -> BTreeMap<String, (String, String)> {
    let started = Instant::now();
    loop {
        let l = list(nats);
        if pred(&l) {
            return l;
        }
        assert!(started.elapsed() < limit, "list never matched: {l:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn loads(l: &BTreeMap<String, (String, String)>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (holder, _) in l.values() {
        *out.entry(holder.clone()).or_default() += 1;
    }
    out
}

/// A published record: (arrival, camera, worker, lease_rev, seq, wall_ms).
#[derive(Debug, Clone)]
struct Published {
    at: Instant,
    camera: String,
    worker: String,
    lease_rev: u64,
    seq: u64,
    wall_ms: u64,
}

fn published(lines: &[(Instant, String)]) -> Vec<Published> {
    lines
        .iter()
        .filter_map(|(at, l)| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some(Published {
                at: *at,
                camera: v["stream"].as_str()?.to_owned(),
                worker: v["worker"].as_str()?.to_owned(),
                lease_rev: v["lease_rev"].as_u64()?,
                seq: v["seq"].as_u64()?,
                wall_ms: v["wall_ms"].as_u64()?,
            })
        })
        .collect()
}

/// Starts `tail` following every camera's records.
fn tail(nats: &Nats) -> Running {
    let u = nats.url();
    Running::start(&["tail", "--nats", &u], &[], "warn")
}

/// Waits until `tail` shows records of every camera in `cameras` from a worker that is not
/// `not_from`, arriving after `after`; returns the first arrival per camera.
fn wait_published(
    tail: &Running,
    cameras: &[String],
    not_from: &str,
    after: Instant,
    limit: Duration,
) -> HashMap<String, Instant> {
    let started = Instant::now();
    loop {
        let records = published(&tail.stdout_lines());
        let mut first = HashMap::new();
        for r in &records {
            if r.at > after && r.worker != not_from && cameras.contains(&r.camera) {
                first.entry(r.camera.clone()).or_insert(r.at);
            }
        }
        if first.len() == cameras.len() {
            return first;
        }
        assert!(
            started.elapsed() < limit,
            "only {first:?} of {cameras:?} published again within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn four_cameras(dir: &str) -> (PathBuf, Nats, Rtsp, Vec<String>) {
    let dir = temp_dir(dir);
    let nats = Nats::start(&dir, &[]);
    let mounts: Vec<(String, String)> = CLIPS
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("/cam{i}"), clip(c)))
        .collect();
    let refs: Vec<(&str, String)> = mounts
        .iter()
        .map(|(m, f)| (m.as_str(), f.clone()))
        .collect();
    let rtsp = Rtsp::start(&refs, &[]);
    let names: Vec<String> = (0..4).map(|i| format!("cam{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        add_camera(
            &nats,
            name,
            &rtsp.url(&format!("/cam{i}")),
            &["latency_ms=100"],
        );
    }
    (dir, nats, rtsp, names)
}

#[test]
fn cameras_split_evenly_a_joining_worker_takes_its_share_and_killed_or_stopped_workers_hand_over() {
    let _serial = serial();
    let (dir, nats, _rtsp, names) = four_cameras("cluster-failover");
    let tail = tail(&nats);
    let w1 = worker(&nats, "w1", &[]);
    let w2 = worker(&nats, "w2", &[]);

    // Even split: 2 and 2, every camera live.
    let l = wait_list(&nats, Duration::from_secs(60), |l| {
        l.len() == 4 && l.values().all(|(_, s)| s == "live") && loads(l).values().all(|n| *n == 2)
    });
    eprintln!("split: {l:?}");
    let since = Instant::now();
    wait_published(&tail, &names, "", since, Duration::from_secs(20));

    // A third worker joins: it takes its share (one camera) without flapping.
    let joined = Instant::now();
    let w3 = worker(&nats, "w3", &[]);
    let l = wait_list(&nats, Duration::from_secs(40), |l| {
        let loads = loads(l);
        l.values().all(|(_, s)| s == "live")
            && loads.get("w3") == Some(&1)
            && loads.values().max() == Some(&2)
            && loads.values().min() == Some(&1)
    });
    eprintln!("after the join: {l:?}");
    // Stable: nothing moves in the next seconds.
    std::thread::sleep(Duration::from_secs(5));
    let later = list(&nats);
    assert_eq!(loads(&later), loads(&l), "{later:?}");
    let records = published(&tail.stdout_lines());
    for camera in &names {
        let mut holders: Vec<&str> = Vec::new();
        for r in records
            .iter()
            .filter(|r| r.at > joined && r.camera == *camera)
        {
            if holders.last() != Some(&r.worker.as_str()) {
                holders.push(&r.worker);
            }
        }
        assert!(holders.len() <= 2, "{camera} flapped: {holders:?}");
    }

    // SIGKILL the worker holding two: its cameras publish again from the others within 15 s.
    let loads_now = loads(&later);
    let (victim_name, victim) = if loads_now.get("w1") == Some(&2) {
        ("w1", &w1)
    } else {
        ("w2", &w2)
    };
    let victims: Vec<String> = later
        .iter()
        .filter(|(_, (h, _))| h == victim_name)
        .map(|(c, _)| c.clone())
        .collect();
    victim.signal("KILL");
    let killed = Instant::now();
    let first = wait_published(
        &tail,
        &victims,
        victim_name,
        killed,
        Duration::from_secs(20),
    );
    let failover: Vec<f64> = first
        .values()
        .map(|at| at.duration_since(killed).as_secs_f64())
        .collect();
    eprintln!("SIGKILL failover (s): {failover:?}");
    assert!(failover.iter().all(|s| *s <= 15.0), "{failover:?}");

    // SIGTERM another: it hands its cameras back; they publish again within 5 s.
    let l = wait_list(&nats, Duration::from_secs(30), |l| {
        l.values().all(|(h, s)| h != victim_name && s == "live")
    });
    let (term_name, term) = if victim_name == "w1" {
        ("w2", w2)
    } else {
        ("w1", w1)
    };
    let handed: Vec<String> = l
        .iter()
        .filter(|(_, (h, _))| h == term_name)
        .map(|(c, _)| c.clone())
        .collect();
    assert!(!handed.is_empty(), "{l:?}");
    let mut term = term;
    term.signal("TERM");
    let stopped = Instant::now();
    let first = wait_published(&tail, &handed, term_name, stopped, Duration::from_secs(15));
    let handback: Vec<f64> = first
        .values()
        .map(|at| at.duration_since(stopped).as_secs_f64())
        .collect();
    eprintln!("SIGTERM hand-back (s): {handback:?}");
    assert_eq!(
        term.wait(Duration::from_secs(15)),
        Some(0),
        "{}",
        term.stderr_text()
    );
    assert!(handback.iter().all(|s| *s <= 5.0), "{handback:?}");
    let done = term.wait_stderr(Duration::from_secs(1), "worker done");
    assert!(done.contains("unpublished=0"), "{done}");

    // The last worker holds all four; its metrics say so.
    wait_list(&nats, Duration::from_secs(20), |l| {
        l.values().all(|(h, s)| h == "w3" && s == "live")
    });
    let m = http_get(&metrics_addr(&w3), "/metrics");
    assert_eq!(metric(&m, "affectstream_worker_cameras_held"), 4.0, "{m}");
    assert!(metric(&m, "affectstream_worker_claims_total") >= 3.0);
    assert!(metric(&m, "affectstream_worker_renewals_total") > 0.0);
    assert!(metric(&m, "affectstream_broker_publishes_acked_total") > 100.0);
    assert_eq!(
        metric(
            &m,
            "affectstream_broker_connection_state{connection=\"data\",state=\"connected\"}"
        ),
        1.0
    );
    assert!(
        m.contains("affectstream_frames_in_total{stream=\"cam0\"}"),
        "{m}"
    );
    // A camera removed from the registry is stopped and given back by its worker.
    let u = nats.url();
    let out = cli(&["cameras", "--nats", &u, "remove", "cam0"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = cli(&["cameras", "--nats", &u, "remove", "cam0"]);
    assert!(
        out.stderr.contains("no camera named 'cam0'"),
        "{}",
        out.stderr
    );
    let addr = metrics_addr(&w3);
    let started = Instant::now();
    loop {
        let m = http_get(&addr, "/metrics");
        if metric(&m, "affectstream_worker_cameras_held") == 3.0 {
            assert!(!m.contains("stream=\"cam0\""), "{m}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(list(&nats).len(), 3);
    drop(w3);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_broker_restart_loses_no_acknowledged_record_and_duplicates_none() {
    let _serial = serial();
    let dir = temp_dir("cluster-restart");
    let mut nats = Nats::start(&dir, &[]);
    let rtsp = Rtsp::start(&[("/a", clip(CLIPS[0])), ("/b", clip(CLIPS[1]))], &[]);
    add_camera(&nats, "a", &rtsp.url("/a"), &[]);
    add_camera(&nats, "b", &rtsp.url("/b"), &[]);
    let mut w1 = worker(&nats, "w1", &[]);
    let mut w2 = worker(&nats, "w2", &[]);
    wait_list(&nats, Duration::from_secs(60), |l| {
        l.len() == 2 && l.values().all(|(_, s)| s == "live") && loads(l).len() == 2
    });
    std::thread::sleep(Duration::from_secs(3));
    // The broker dies (SIGKILL) and comes back on the same port with the same store.
    nats.kill();
    let down = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    nats.spawn();
    eprintln!("broker back after {:.2} s", down.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(6));
    let l = list(&nats);
    assert!(l.values().all(|(_, s)| s == "live"), "{l:?}");
    // Short enough for the leases: none was lost, nothing was dropped.
    for w in [&w1, &w2] {
        let m = http_get(&metrics_addr(w), "/metrics");
        assert_eq!(
            metric(&m, "affectstream_worker_lease_losses_total"),
            0.0,
            "{m}"
        );
        assert_eq!(
            metric(&m, "affectstream_broker_records_dropped_total"),
            0.0,
            "{m}"
        );
        assert!(
            metric(&m, "affectstream_broker_publishes_failed_total") > 0.0,
            "{m}"
        );
    }
    // A longer outage (12 s): the workers fence their cameras 6 s after the last renewal,
    // keep what they produced until then, and take the cameras again when it is back.
    nats.kill();
    std::thread::sleep(Duration::from_secs(12));
    nats.spawn();
    let back = Instant::now();
    wait_list(&nats, Duration::from_secs(30), |l| {
        l.len() == 2 && l.values().all(|(_, s)| s == "live")
    });
    eprintln!(
        "cameras live again {:.2} s after a 12 s outage",
        back.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    for w in [&w1, &w2] {
        w.signal("TERM");
    }
    let mut acked = 0u64;
    for w in [&mut w1, &mut w2] {
        assert_eq!(
            w.wait(Duration::from_secs(15)),
            Some(0),
            "{}",
            w.stderr_text()
        );
        let done = w.wait_stderr(Duration::from_secs(1), "worker done");
        eprintln!("{done}");
        let field = |name: &str| -> u64 {
            done.split(&format!("{name}="))
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        assert_eq!(field("unpublished"), 0, "{done}");
        assert_eq!(field("dropped_records"), 0, "{done}");
        // Each message is acknowledged once: as stored, or as a duplicate of what the
        // server had stored before it died without answering.
        acked += field("acked") + field("duplicates");
        // The long outage fenced each worker's camera once.
        assert_eq!(field("lease_losses"), 1, "{}", w.stderr_text());
        let text = w.stderr_text();
        assert!(text.contains("lost the NATS server"), "{text}");
        assert_eq!(
            text.matches("lost the NATS server").count(),
            4,
            "once per connection and outage:\n{text}"
        );
    }
    // Everything the stream holds, through a durable consumer (records, then events).
    let u = nats.url();
    let records = cli(&[
        "tail",
        "--nats",
        &u,
        "--durable",
        "check",
        "--idle-exit",
        "3",
    ]);
    assert_eq!(records.code, Some(0), "{}", records.stderr);
    let events = cli(&[
        "tail",
        "--nats",
        &u,
        "--events",
        "--durable",
        "check-events",
        "--idle-exit",
        "3",
    ]);
    assert_eq!(events.code, Some(0), "{}", events.stderr);
    let lines: Vec<(Instant, String)> = records
        .stdout
        .lines()
        .map(|l| (Instant::now(), l.to_owned()))
        .collect();
    let recs = published(&lines);
    assert_eq!(recs.len(), lines.len());
    let unique: HashSet<(String, u64, u64)> = recs
        .iter()
        .map(|r| (r.camera.clone(), r.lease_rev, r.seq))
        .collect();
    assert_eq!(
        unique.len(),
        recs.len(),
        "duplicate (stream, lease_rev, seq)"
    );
    // Every acknowledged message is there: records and events add up to the acks.
    let event_count = events.stdout.lines().count() as u64;
    eprintln!(
        "{} records + {event_count} events stored, {acked} acknowledged",
        recs.len()
    );
    assert_eq!(recs.len() as u64 + event_count, acked);
    // And no record is missing: each lease's seqs run 1..=n without a gap.
    let mut by_lease: BTreeMap<(String, u64), Vec<u64>> = BTreeMap::new();
    for r in &recs {
        by_lease
            .entry((r.camera.clone(), r.lease_rev))
            .or_default()
            .push(r.seq);
    }
    for (lease, mut seqs) in by_lease {
        seqs.sort_unstable();
        let n = seqs.len() as u64;
        assert_eq!(seqs.first(), Some(&1), "{lease:?}");
        assert_eq!(seqs.last(), Some(&n), "{lease:?}: gap");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn two_workers_racing_for_one_camera_never_both_publish_it() {
    let _serial = serial();
    let dir = temp_dir("cluster-race");
    let nats = Nats::start(&dir, &[]);
    let rtsp = Rtsp::start(&[("/one", clip(CLIPS[0]))], &[]);
    add_camera(&nats, "one", &rtsp.url("/one"), &[]);
    let tail = tail(&nats);
    std::thread::sleep(Duration::from_millis(500));
    // Both start at once and race for the one camera.
    let a = worker(&nats, "ra", &[]);
    let b = worker(&nats, "rb", &[]);
    let l = wait_list(&nats, Duration::from_secs(60), |l| {
        l.get("one").is_some_and(|(_, s)| s == "live")
    });
    std::thread::sleep(Duration::from_secs(4));
    let records = published(&tail.stdout_lines());
    let workers: HashSet<&str> = records.iter().map(|r| r.worker.as_str()).collect();
    assert_eq!(workers.len(), 1, "both published: {workers:?}");
    let holder = l["one"].0.clone();
    let (frozen, other) = if holder == "ra" {
        (&a, "rb")
    } else {
        (&b, "ra")
    };

    // The holder freezes (SIGSTOP) past its lease: the other takes over; once thawed, the
    // frozen one publishes nothing it produced after the takeover (it fenced itself).
    frozen.signal("STOP");
    let stopped = Instant::now();
    let first = wait_published(
        &tail,
        &["one".to_owned()],
        &holder,
        stopped,
        Duration::from_secs(20),
    );
    eprintln!(
        "frozen holder replaced after {:.2} s",
        first["one"].duration_since(stopped).as_secs_f64()
    );
    frozen.signal("CONT");
    std::thread::sleep(Duration::from_secs(4));
    frozen.wait_stderr(Duration::from_secs(5), "stopping the camera");
    let records = published(&tail.stdout_lines());
    let takeover_ms = records
        .iter()
        .filter(|r| r.worker == other)
        .map(|r| r.wall_ms)
        .min()
        .unwrap();
    let old_last_ms = records
        .iter()
        .filter(|r| r.worker == holder)
        .map(|r| r.wall_ms)
        .max()
        .unwrap();
    eprintln!(
        "old holder's last record {} ms before the new holder's first",
        takeover_ms as i64 - old_last_ms as i64
    );
    // One renew interval (1 s) is the most two holders may overlap; here they do not.
    assert!(
        old_last_ms <= takeover_ms + 1000,
        "{old_last_ms} vs {takeover_ms}"
    );
    let l = list(&nats);
    assert_eq!(l["one"].0, other, "{l:?}");
    drop(tail);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn secrets_never_leak_and_bad_input_is_a_clear_error() {
    let _serial = serial();
    const NATS_PW: &str = "Nq7-brokersecret";
    const CAM_PW: &str = "Zq8-camsecret";
    let dir = temp_dir("cluster-secrets");
    let nats = Nats::start(&dir, &["--user", "op", "--pass", NATS_PW]);
    let rtsp = Rtsp::start(
        &[("/cam", clip(CLIPS[0])), ("/ok", clip(CLIPS[1]))],
        &["--user", "admin", "--password", CAM_PW],
    );
    let u = nats.url();
    let auth = ["--nats-user", "op"];
    let env = [("NATS_PASSWORD", std::ffi::OsStr::new(NATS_PW))];
    let cameras = |args: &[&str]| -> common::Output {
        let mut full = vec!["cameras", "--nats", &u, "--nats-user", "op"];
        full.extend_from_slice(args);
        cli_debug(&full, &[("NATS_PASSWORD", NATS_PW.as_ref())])
    };
    let secret_url = format!("rtsp://admin:{CAM_PW}@127.0.0.1:{}/cam", rtsp.port);
    let ok_url = format!("rtsp://admin:{CAM_PW}@127.0.0.1:{}/ok", rtsp.port);
    let added = cameras(&["add", "cam", &secret_url]);
    assert_eq!(added.code, Some(0), "{}", added.stderr);
    // Debug logs, the client library's too: no password.
    for secret in [NATS_PW, CAM_PW] {
        assert!(!added.stderr.contains(secret), "{}", added.stderr);
    }
    assert_eq!(cameras(&["add", "ok", &ok_url]).code, Some(0));
    // A camera nobody can open: nothing listens on its port.
    let dead = format!("rtsp://127.0.0.1:{}/nothing", free_port());
    let added = cameras(&[
        "add",
        "dead",
        &dead,
        "--option",
        "retry_budget_s=1",
        "--option",
        "reconnect_initial_s=0.1",
        "--option",
        "reconnect_max_s=0.2",
    ]);
    assert_eq!(added.code, Some(0), "{}", added.stderr);

    // Bad input: a duplicate name, an invalid URL, an unknown option, a wrong password.
    let dup = cameras(&["add", "cam", "rtsp://elsewhere/x"]);
    assert_eq!(dup.code, Some(1));
    assert!(dup.stderr.contains("already exists"), "{}", dup.stderr);
    assert!(!dup.stderr.contains(CAM_PW), "{}", dup.stderr);
    let bad = cameras(&["add", "bad", "camera.example/x"]);
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("invalid camera URL"), "{}", bad.stderr);
    let opt = cameras(&["add", "opt", "rtsp://h/x", "--option", "colour=red"]);
    assert!(opt.stderr.contains("colour"), "{}", opt.stderr);
    let wrong = common::run_binary(
        &[
            "cameras",
            "--nats",
            &u,
            "--nats-user",
            "op",
            "--nats-password",
            "wrong",
            "list",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(wrong.code, Some(1));
    assert!(
        wrong.stderr.to_lowercase().contains("authorization"),
        "{}",
        wrong.stderr
    );
    // An unreachable broker: a clear error after a bounded wait.
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = cli(&["cameras", "--nats", &nowhere, "--nats-timeout", "2", "list"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("cannot reach the NATS server"),
        "{}",
        out.stderr
    );
    let out = cli(&["tail", "--nats", &nowhere, "--nats-timeout", "2"]);
    assert!(
        out.stderr.contains("cannot reach the NATS server"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    // A worker with debug logs, its password from the environment.
    let mut w = Running::start(
        &[
            &["worker", "--nats", &u][..],
            &auth[..],
            &[
                "--name",
                "sw",
                "--listen",
                "127.0.0.1:0",
                "--face-encoders",
                "mini",
                "--device",
                "cpu",
            ][..],
        ]
        .concat(),
        &env,
        "info,affectstream=debug",
    );
    let tail = Running::start(&["tail", "--nats", &u, "--nats-user", "op"], &env, "debug");
    let l = wait_list_with(&cameras, Duration::from_secs(60), |out| {
        out.lines()
            .any(|l| l.starts_with("dead ") && l.contains("failed"))
            && out.lines().filter(|l| l.contains("  live")).count() == 2
    });
    eprintln!("{l}");
    assert!(
        l.contains(&format!("rtsp://admin:***@127.0.0.1:{}/cam", rtsp.port)),
        "{l}"
    );
    let dead_line = l.lines().find(|l| l.starts_with("dead ")).unwrap();
    assert!(dead_line.contains("sw  failed: "), "{dead_line}");
    std::thread::sleep(Duration::from_secs(2));
    let metrics = http_get(&metrics_addr(&w), "/metrics");
    let events = cameras(&["list", "--json"]);
    w.signal("TERM");
    w.wait(Duration::from_secs(15));
    let records: String = tail
        .stdout_lines()
        .into_iter()
        .map(|(_, l)| l + "\n")
        .collect();
    assert!(records.contains("\"stream\":\"cam\""), "no records");
    for (what, text) in [
        ("worker log", w.stderr_text()),
        (
            "worker stdout",
            w.stdout_lines()
                .into_iter()
                .map(|(_, l)| l)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        ("list", l.clone()),
        ("list --json", events.stdout.clone()),
        ("records", records.clone()),
        ("metrics", metrics.clone()),
        ("tail log", tail.stderr_text()),
    ] {
        for secret in [NATS_PW, CAM_PW] {
            assert!(!text.contains(secret), "{what} shows a password:\n{text}");
        }
    }
    drop(tail);

    // A worker started before its broker retries, logging once, and connects when it comes.
    let later = Nats {
        child: None,
        port: free_port(),
        store: dir.join("later"),
        extra: Vec::new(),
    };
    let early = Running::start(
        &[
            "worker",
            "--nats",
            &later.url(),
            "--name",
            "early",
            "--no-listen",
            "--face-encoders",
            "mini",
            "--nats-timeout",
            "1",
        ],
        &[],
        "info",
    );
    early.wait_stderr(Duration::from_secs(20), "retrying with backoff");
    std::thread::sleep(Duration::from_secs(4));
    let mut later = later;
    later.spawn();
    early.wait_stderr(Duration::from_secs(20), "worker ready");
    let text = early.stderr_text();
    assert_eq!(text.matches("retrying with backoff").count(), 1, "{text}");
    drop(early);
    std::fs::remove_dir_all(dir).ok();
}

/// Like [`wait_list`] for a `cameras` runner of the caller's (credentials), on the raw text.
fn wait_list_with(
    cameras: &dyn Fn(&[&str]) -> common::Output,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> String {
    let started = Instant::now();
    loop {
        let out = cameras(&["list"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        if pred(&out.stdout) {
            return out.stdout;
        }
        assert!(
            started.elapsed() < limit,
            "list never matched:\n{}",
            out.stdout
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A CA and a server certificate for 127.0.0.1, made with openssl.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
fn the_tls_options_reach_a_broker_that_only_speaks_tls() {
    let _serial = serial();
    let dir = temp_dir("cluster-tls");
    let (ca, cert, key) = certificates(&dir);
    let nats = Nats::start(
        &dir,
        &[
            "--tls",
            "--tlscert",
            cert.to_str().unwrap(),
            "--tlskey",
            key.to_str().unwrap(),
        ],
    );
    let url = format!("tls://127.0.0.1:{}", nats.port);
    let ca = ca.to_str().unwrap();
    let out = cli(&[
        "cameras",
        "--nats",
        &url,
        "--nats-tls-ca",
        ca,
        "add",
        "c",
        "rtsp://cam/x",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = cli(&["cameras", "--nats", &url, "--nats-tls-ca", ca, "list"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.starts_with("c  rtsp://cam/x  -  unassigned"),
        "{}",
        out.stdout
    );
    let out = cli(&[
        "tail",
        "--nats",
        &url,
        "--nats-tls-ca",
        ca,
        "--idle-exit",
        "0.5",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // Without the CA the server's certificate is refused, clearly.
    let out = cli(&["cameras", "--nats", &url, "--nats-timeout", "2", "list"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_token_broker_takes_the_token_and_never_shows_it() {
    let _serial = serial();
    const TOKEN: &str = "Tk9-brokertoken";
    let dir = temp_dir("cluster-token");
    let nats = Nats::start(&dir, &["--auth", TOKEN]);
    let u = nats.url();
    // From the environment, with debug logs of the client library too.
    let out = cli_debug(
        &[
            "cameras",
            "--nats",
            &u,
            "add",
            "tok",
            "rtsp://127.0.0.1:1/x",
        ],
        &[("NATS_TOKEN", TOKEN.as_ref())],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains(TOKEN), "{}", out.stderr);
    // On the command line; the camera is in the registry.
    let listed = cli(&["cameras", "--nats", &u, "--nats-token", TOKEN, "list"]);
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    assert!(listed.stdout.contains("tok"), "{}", listed.stdout);
    assert!(!listed.stdout.contains(TOKEN) && !listed.stderr.contains(TOKEN));
    // A wrong token: refused, clearly, without echoing either token.
    let wrong = cli(&[
        "cameras",
        "--nats",
        &u,
        "--nats-token",
        "wrong-token",
        "list",
    ]);
    assert_eq!(wrong.code, Some(1));
    assert!(
        wrong.stderr.to_lowercase().contains("authorization"),
        "{}",
        wrong.stderr
    );
    assert!(!wrong.stderr.contains(TOKEN) && !wrong.stderr.contains("wrong-token"));
}

/// Base64url without padding, as NATS JWTs are written.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A NATS v2 JWT of `kind` for `subject`, with `nats` fields, signed by `issuer`.
fn nats_jwt(
    issuer: &nkeys::KeyPair,
    subject: &str,
    kind: &str,
    mut nats: serde_json::Value,
) -> String {
    nats["type"] = kind.into();
    nats["version"] = 2.into();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("{kind}-{subject}-{now}"),
        "iat": now,
        "iss": issuer.public_key(),
        "name": kind,
        "sub": subject,
        "nats": nats,
    });
    let header = base64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let signed = format!("{header}.{}", base64url(claims.to_string().as_bytes()));
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", base64url(&signature))
}

/// A broker configuration in operator mode (one account with JetStream on and the system
/// account, their JWTs preloaded) and a `.creds` file of a user of that account: what `nsc`
/// makes for a decentralised setup.
/// Returns the configuration file, the creds file and the user's seed.
fn operator_broker(dir: &Path) -> (PathBuf, PathBuf, String) {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "operator",
        serde_json::json!({}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let account_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        "account",
        serde_json::json!({
            "limits": unlimited,
            "default_permissions": { "pub": {}, "sub": {} },
        }),
    );
    // JetStream needs the server's system account (no JetStream of its own).
    let system = nkeys::KeyPair::new_account();
    let system_jwt = nats_jwt(
        &operator,
        &system.public_key(),
        "account",
        serde_json::json!({ "limits": { "subs": -1, "conn": -1 } }),
    );
    let user_jwt = nats_jwt(
        &account,
        &user.public_key(),
        "user",
        serde_json::json!({ "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1 }),
    );
    let config = dir.join("operator.conf");
    std::fs::write(
        &config,
        format!(
            "operator: \"{operator_jwt}\"\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: \"{system_jwt}\"\n  {acc}: \"{account_jwt}\"\n}}\n",
            sys = system.public_key(),
            acc = account.public_key(),
        ),
    )
    .unwrap();
    let seed = user.seed().unwrap();
    let creds = dir.join("user.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        ),
    )
    .unwrap();
    (config, creds, seed)
}

#[test]
fn a_creds_file_reaches_an_operator_mode_broker_and_its_seed_never_shows() {
    let _serial = serial();
    let dir = temp_dir("cluster-creds");
    let (config, creds, seed) = operator_broker(&dir);
    let nats = Nats::start(&dir, &["-c", config.to_str().unwrap()]);
    let u = nats.url();
    let creds_arg = creds.to_str().unwrap();
    // On the command line, with debug logs of the client library too.
    let out = cli_debug(
        &[
            "cameras",
            "--nats",
            &u,
            "--nats-creds",
            creds_arg,
            "add",
            "cred",
            "rtsp://127.0.0.1:1/x",
        ],
        &[],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains(&seed), "{}", out.stderr);
    // From the environment; the camera is in the registry (JetStream in the account works).
    let out = cli_debug(
        &["cameras", "--nats", &u, "list"],
        &[("NATS_CREDS", creds.as_os_str())],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("cred  rtsp://127.0.0.1:1/x  -  unassigned"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(&seed) && !out.stderr.contains(&seed));
    // `cameras list` with these extra options, expected to be refused: the error it printed.
    let refused = |extra: &[&str]| -> String {
        let mut args = vec!["cameras", "--nats", &u, "--nats-timeout", "2"];
        args.extend_from_slice(extra);
        args.push("list");
        let out = cli(&args);
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        out.stderr
    };
    // Without credentials the broker refuses, clearly.
    let stderr = refused(&[]);
    assert!(stderr.to_lowercase().contains("authorization"), "{stderr}");
    // A creds file that is not one: a clear error naming it.
    let broken = dir.join("broken.creds");
    std::fs::write(&broken, "not a creds file\n").unwrap();
    let stderr = refused(&["--nats-creds", broken.to_str().unwrap()]);
    assert!(stderr.contains("broken.creds"), "{stderr}");
    // A well-formed creds file of a user this broker does not trust: refused, seed not shown.
    let stranger = dir.join("stranger");
    std::fs::create_dir_all(&stranger).unwrap();
    let (_, other_creds, other_seed) = operator_broker(&stranger);
    let stderr = refused(&["--nats-creds", other_creds.to_str().unwrap()]);
    assert!(stderr.to_lowercase().contains("authorization"), "{stderr}");
    assert!(!stderr.contains(&other_seed));
    std::fs::remove_dir_all(dir).ok();
}
