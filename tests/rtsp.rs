//! RTSP at scale against a real RTSP server on 127.0.0.1 (`affectstream-rtsp-serve`, built on
//! gstreamer-rtsp-server) serving testdata talking-head clips as H.264 + AAC: several streams
//! at once, a server restart (reconnect), a camera back after a 5 s and a 60 s outage with the
//! default settings (records again within 3 s of its return), a server that stays away
//! (failed, the other stream goes on), the WebSocket feed with a client that never reads,
//! /metrics over HTTP, and credentials that never leak. The tests run one at a time: they
//! measure live behaviour.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::process::Running;
use common::{parse_jsonl, temp_dir, testdata};

/// One live test at a time: they compete for two cores otherwise.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn clip(name: &str) -> String {
    testdata()
        .join("av/streams")
        .join(name)
        .display()
        .to_string()
}

/// A running `affectstream-rtsp-serve`.
struct RtspServer {
    child: Child,
    port: u16,
    args: Vec<String>,
}

impl RtspServer {
    /// Serves `mounts` (path, file) on `port` (0: any free port).
    fn start(port: u16, mounts: &[(&str, String)], extra: &[&str]) -> Self {
        let mut args = vec!["--port".to_owned(), port.to_string()];
        for (path, file) in mounts {
            args.push("--mount".into());
            args.push(format!("{path}={file}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(args)
    }

    fn spawn(args: Vec<String>) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_affectstream-rtsp-serve"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start affectstream-rtsp-serve");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).expect("server output");
        // Keep reading, so the server never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        // "ready rtsp://127.0.0.1:PORT/mount"
        let port: u16 = line
            .split(':')
            .nth(2)
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("server did not start: {line:?}"));
        let mut args = args;
        args[1] = port.to_string();
        Self { child, port, args }
    }

    fn url(&self, mount: &str) -> String {
        format!("rtsp://127.0.0.1:{}{mount}", self.port)
    }

    /// Kills the server like a camera losing power.
    fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// Starts it again on the same port.
    fn restart(&mut self) {
        self.kill();
        *self = Self::spawn(self.args.clone());
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The listen address from the "serving ws://ADDR/records" log line.
fn listen_addr(run: &Running, limit: Duration) -> String {
    let line = run.wait_stderr(limit, "serving ws://");
    line.split("serving ws://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned()
}

/// Writes `config` to DIR/streams.toml and runs `run --config` on it for `duration` seconds,
/// without the live endpoint.
fn run_config(dir: &std::path::Path, config: String, duration: &str) -> Running {
    let path = dir.join("streams.toml");
    std::fs::write(&path, config).unwrap();
    Running::start(
        &[
            "run",
            "--config",
            path.to_str().unwrap(),
            "--no-listen",
            "--duration",
            duration,
        ],
        &[],
        "info",
    )
}

fn json_lines(lines: &[(Instant, String)]) -> Vec<(Instant, serde_json::Value)> {
    lines
        .iter()
        .map(|(at, l)| (*at, parse_jsonl(l).pop().expect("one JSON value per line")))
        .collect()
}

fn is_record(v: &serde_json::Value) -> bool {
    v.get("frame").is_some()
}

fn http_get(addr: &str, path: &str, auth: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// The value of a metric line `name{labels} value`.
fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name_and_labels} in:\n{text}"))
}

#[test]
fn two_streams_at_once_feed_jsonl_csv_websocket_and_metrics() {
    let _serial = serial();
    let server = RtspServer::start(
        0,
        &[
            ("/lobby", clip("tedlieu_60s_256.mp4")),
            ("/door", clip("Obama_clip2_muxed.mp4")),
        ],
        &[],
    );
    let dir = temp_dir("rtsp-two");
    let csv = dir.join("faces.csv");
    let config = dir.join("streams.toml");
    std::fs::write(
        &config,
        format!(
            "[streams]\nlatency_ms = 100\n\n[[stream]]\nname = \"lobby\"\nurl = \"{}\"\n\n\
             [[stream]]\nname = \"door\"\nurl = \"{}\"\nprotocols = \"tcp\"\n",
            server.url("/lobby"),
            server.url("/door")
        ),
    )
    .unwrap();
    let run = Running::start(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--csv",
            csv.to_str().unwrap(),
            "--duration",
            "16",
        ],
        &[],
        "info",
    );
    let addr = listen_addr(&run, Duration::from_secs(30));
    run.wait_for_line(Duration::from_secs(30), |l| l.contains("\"frame\""));

    // A client that reads, and one that never reads.
    let (mut reader, _) = tungstenite::client(
        format!("ws://{addr}/records"),
        TcpStream::connect(&addr).unwrap(),
    )
    .expect("WebSocket handshake");
    let stalled = TcpStream::connect(&addr).unwrap();
    socket2::SockRef::from(&stalled)
        .set_recv_buffer_size(4096)
        .unwrap();
    let (_stalled, _) =
        tungstenite::client(format!("ws://{addr}/records"), stalled).expect("WebSocket handshake");
    let mut received = Vec::new();
    let until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < until {
        let message = reader.read().expect("the reading client keeps receiving");
        if let tungstenite::Message::Text(text) = message {
            received.push(serde_json::from_str::<serde_json::Value>(&text).unwrap());
        }
    }
    let metrics = http_get(&addr, "/metrics", None);
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    drop(reader);
    let (code, stdout, stderr) = run.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");

    // Both streams produced records, each carrying its stream name, with faces.
    let lines = json_lines(&stdout);
    for name in ["lobby", "door"] {
        let records: Vec<_> = lines
            .iter()
            .filter(|(_, v)| is_record(v) && v["stream"] == name)
            .collect();
        assert!(
            records.len() > 100,
            "{name}: {} records\n{stderr}",
            records.len()
        );
        let with_faces = records
            .iter()
            .filter(|(_, v)| !v["faces"].as_array().unwrap().is_empty())
            .count();
        assert!(
            with_faces * 10 > records.len() * 8,
            "{name}: {with_faces} with faces"
        );
        let states: Vec<&str> = lines
            .iter()
            .filter(|(_, v)| v["stream"] == name && v.get("state").is_some())
            .map(|(_, v)| v["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["connecting", "live", "ended"], "{name}");
    }
    // The CSV has a row per face per frame of both streams.
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    assert!(csv_text.starts_with("stream,source,frame,t,face,"));
    assert!(csv_text.lines().filter(|l| l.starts_with("lobby,")).count() > 100);
    assert!(csv_text.lines().filter(|l| l.starts_with("door,")).count() > 100);

    // The reading client got records of both streams as they happened.
    let ws_records = received.iter().filter(|v| is_record(v));
    let names: std::collections::HashSet<&str> =
        ws_records.filter_map(|v| v["stream"].as_str()).collect();
    assert!(
        names.contains("lobby") && names.contains("door"),
        "{names:?}"
    );
    assert!(received.len() > 200, "{} messages", received.len());

    // The client that never read was disconnected; the pipeline did not slow down: nearly
    // every decoded frame became a record.
    assert_eq!(
        metric(&metrics, "affectstream_websocket_clients_dropped_total"),
        1.0,
        "{metrics}"
    );
    for name in ["lobby", "door"] {
        let frames_in = metric(
            &metrics,
            &format!("affectstream_frames_in_total{{stream=\"{name}\"}}"),
        );
        let frames_out = metric(
            &metrics,
            &format!("affectstream_frames_out_total{{stream=\"{name}\"}}"),
        );
        let dropped = metric(
            &metrics,
            &format!("affectstream_frames_dropped_total{{stream=\"{name}\"}}"),
        );
        assert!(frames_in > 150.0, "{name}: {frames_in} frames in");
        assert!(
            frames_out >= frames_in - dropped - 30.0,
            "{name}: {frames_out} out of {frames_in}"
        );
        assert!(
            dropped <= frames_in * 0.05,
            "{name}: {dropped} dropped of {frames_in}"
        );
        assert_eq!(
            metric(
                &metrics,
                &format!("affectstream_stream_state{{stream=\"{name}\",state=\"live\"}}")
            ),
            1.0
        );
        assert_eq!(
            metric(
                &metrics,
                &format!("affectstream_reconnects_total{{stream=\"{name}\"}}")
            ),
            0.0
        );
    }
    assert!(metrics.contains(
        "affectstream_latency_seconds_bucket{stream=\"lobby\",stage=\"end_to_end\",le=\"+Inf\"}"
    ));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_stream_reconnects_after_the_server_restarts_and_its_timeline_continues() {
    let _serial = serial();
    let mut server = RtspServer::start(0, &[("/cam", clip("tedlieu_60s_256.mp4"))], &[]);
    let dir = temp_dir("rtsp-restart");
    let run = run_config(
        &dir,
        format!(
            "[streams]\nreconnect_initial_s = 0.25\nreconnect_max_s = 1.0\nretry_budget_s = 30\n\n\
             [[stream]]\nname = \"cam\"\nurl = \"{}\"\n",
            server.url("/cam")
        ),
        "22",
    );
    run.wait_for_line(Duration::from_secs(30), |l| l.contains("\"frame\""));
    std::thread::sleep(Duration::from_secs(3));
    server.kill();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    server.restart();
    let restarted = Instant::now();
    let first_after = run.wait_for_line(Duration::from_secs(15), |l| {
        l.contains("\"frame\"") && l.contains("\"cam\"")
    });
    let (code, stdout, stderr) = run.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let lines = json_lines(&stdout);
    // The first record that arrived after the restart.
    let first_new = lines
        .iter()
        .find(|(at, v)| *at > restarted && is_record(v))
        .map(|(at, _)| *at)
        .expect("records after the restart");
    let _ = first_after;
    eprintln!(
        "server restart -> first new record: {:.2} s",
        first_new.duration_since(restarted).as_secs_f64()
    );
    let records: Vec<_> = lines.iter().filter(|(_, v)| is_record(v)).collect();
    let before = records.iter().filter(|(at, _)| *at < killed).count();
    let after = records.iter().filter(|(at, _)| *at > restarted).count();
    assert!(before > 50 && after > 50, "{before} before, {after} after");
    // The stream timeline keeps increasing across the reconnect (no jump back to 0).
    let ts: Vec<f64> = records
        .iter()
        .map(|(_, v)| v["t"].as_f64().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[1] >= w[0]), "t went backwards");
    let statuses: Vec<&serde_json::Value> = lines
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v.get("state").is_some())
        .collect();
    assert!(statuses.iter().any(|v| v["state"] == "reconnecting"));
    let last = statuses.last().unwrap();
    assert_eq!(last["state"], "ended");
    assert_eq!(last["reconnects"], 1, "{statuses:?}");
    assert!(stderr.contains("reconnecting"), "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}

/// Runs one stream with the default reconnect settings, kills its server for `outage`,
/// restarts it on the same port and returns how long after the restarted server was
/// listening the first new record arrived.
fn first_record_after_outage(outage: Duration, name: &str) -> Duration {
    let mut server = RtspServer::start(0, &[("/cam", clip("tedlieu_60s_256.mp4"))], &[]);
    let dir = temp_dir(name);
    let run = run_config(
        &dir,
        format!(
            "[[stream]]\nname = \"cam\"\nurl = \"{}\"\n",
            server.url("/cam")
        ),
        "600",
    );
    run.wait_for_line(Duration::from_secs(30), |l| l.contains("\"frame\""));
    std::thread::sleep(Duration::from_secs(3));
    server.kill();
    let killed = Instant::now();
    // The outage is seen (the stream leaves `live`) well before the server returns.
    run.wait_for_line_after(killed, Duration::from_secs(8), |l| {
        l.contains("\"reconnecting\"")
    });
    std::thread::sleep(outage.saturating_sub(killed.elapsed()));
    // `restart` returns once the new server has printed "ready": it is listening.
    server.restart();
    let listening = Instant::now();
    let first_new = run.wait_for_line_after(listening, Duration::from_secs(15), |l| {
        l.contains("\"frame\"") && l.contains("\"cam\"")
    });
    std::thread::sleep(Duration::from_secs(2));
    run.signal("TERM");
    let (code, stdout, stderr) = run.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let back = first_new.duration_since(listening);
    eprintln!(
        "{:.0} s outage: server listening again -> first new record {:.2} s",
        outage.as_secs_f64(),
        back.as_secs_f64()
    );
    let lines = json_lines(&stdout);
    let statuses: Vec<&serde_json::Value> = lines
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v.get("state").is_some())
        .collect();
    let live_again = statuses
        .iter()
        .rev()
        .find(|v| v["state"] == "live")
        .unwrap();
    assert_eq!(live_again["reconnects"], 1, "{statuses:?}");
    let after = lines
        .iter()
        .filter(|(at, v)| *at > listening && is_record(v))
        .count();
    assert!(after > 20, "{after} records after the return");
    std::fs::remove_dir_all(dir).ok();
    back
}

#[test]
fn a_camera_back_after_a_5_s_outage_streams_again_within_3_s() {
    let _serial = serial();
    let back = first_record_after_outage(Duration::from_secs(5), "rtsp-outage5");
    assert!(
        back < Duration::from_secs(3),
        "first record {:.2} s after the server was back",
        back.as_secs_f64()
    );
}

#[test]
fn a_camera_back_after_a_60_s_outage_streams_again_within_3_s() {
    let _serial = serial();
    let back = first_record_after_outage(Duration::from_secs(60), "rtsp-outage60");
    assert!(
        back < Duration::from_secs(3),
        "first record {:.2} s after the server was back",
        back.as_secs_f64()
    );
}

#[test]
fn a_stream_whose_server_stays_away_fails_while_the_other_goes_on() {
    let _serial = serial();
    let mut gone = RtspServer::start(0, &[("/a", clip("tedlieu_60s_256.mp4"))], &[]);
    let steady = RtspServer::start(0, &[("/b", clip("reagan_clip1_muxed.mp4"))], &[]);
    let dir = temp_dir("rtsp-fail");
    let run = run_config(
        &dir,
        format!(
            "[streams]\nreconnect_initial_s = 0.2\nreconnect_max_s = 0.5\nretry_budget_s = 3\n\n\
             [[stream]]\nname = \"gone\"\nurl = \"{}\"\n\n[[stream]]\nname = \"steady\"\nurl = \"{}\"\n",
            gone.url("/a"),
            steady.url("/b")
        ),
        "14",
    );
    run.wait_for_line(Duration::from_secs(30), |l| {
        l.contains("\"gone\"") && l.contains("\"frame\"")
    });
    gone.kill();
    let failed_at = run.wait_for_line(Duration::from_secs(15), |l| {
        l.contains("\"gone\"") && l.contains("\"failed\"")
    });
    let (code, stdout, stderr) = run.finish(Duration::from_secs(60));
    // The run reports the failed stream, clearly, and exits non-zero after the other ended.
    assert_eq!(code, Some(1), "{stderr}");
    let error = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(
        error.contains("stream 'gone' failed: gave up after"),
        "{error}"
    );
    assert!(error.contains("retry budget 3.0 s"), "{error}");
    assert!(!error.contains("steady"), "{error}");
    let lines = json_lines(&stdout);
    let failed = lines
        .iter()
        .find(|(_, v)| v["stream"] == "gone" && v["state"] == "failed")
        .unwrap();
    assert!(failed.1["reason"].as_str().unwrap().contains("gave up"));
    // The steady stream kept producing after the other failed, and ended normally.
    let steady_after = lines
        .iter()
        .filter(|(at, v)| *at > failed_at && is_record(v) && v["stream"] == "steady")
        .count();
    assert!(
        steady_after > 40,
        "{steady_after} records of the steady stream after the failure"
    );
    assert!(
        lines
            .iter()
            .any(|(_, v)| v["stream"] == "steady" && v["state"] == "ended")
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn credentials_never_appear_in_logs_records_csv_or_metrics() {
    let _serial = serial();
    const PASSWORD: &str = "Zq8-topsecret";
    const WRONG: &str = "wrong-Zq8-guess";
    let server = RtspServer::start(
        0,
        &[("/cam", clip("tedlieu_60s_256.mp4"))],
        &["--user", "admin", "--password", PASSWORD],
    );
    let good = format!("rtsp://admin:{PASSWORD}@127.0.0.1:{}/cam", server.port);
    let bad = format!("rtsp://admin:{WRONG}@127.0.0.1:{}/cam", server.port);
    let dir = temp_dir("rtsp-secret");
    let csv = dir.join("faces.csv");
    let config = dir.join("streams.toml");
    std::fs::write(
        &config,
        "[streams]\nreconnect_initial_s = 0.2\nreconnect_max_s = 0.5\nretry_budget_s = 2\n",
    )
    .unwrap();
    // Debug logging too: GStreamer's error details are logged there.
    let run = Running::start(
        &[
            "run",
            "--source",
            &good,
            "--source",
            &bad,
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--csv",
            csv.to_str().unwrap(),
            "--duration",
            "8",
        ],
        &[],
        "info,affectstream=debug",
    );
    let addr = listen_addr(&run, Duration::from_secs(30));
    run.wait_for_line(Duration::from_secs(30), |l| l.contains("\"frame\""));
    run.wait_for_line(Duration::from_secs(15), |l| l.contains("\"failed\""));
    let metrics = http_get(&addr, "/metrics", None);
    let (code, stdout, stderr) = run.finish(Duration::from_secs(60));
    assert_eq!(
        code,
        Some(1),
        "the wrong password fails its stream:\n{stderr}"
    );
    let stdout: String = stdout.into_iter().map(|(_, l)| l + "\n").collect();
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    for (what, text) in [
        ("stdout", &stdout),
        ("stderr", &stderr),
        ("csv", &csv_text),
        ("metrics", &metrics),
    ] {
        for secret in [PASSWORD, WRONG] {
            assert!(
                !text.contains(secret),
                "{what} contains the password:\n{text}"
            );
        }
    }
    // The redacted form is what shows, and the refusal is explained.
    assert!(stdout.contains("rtsp://admin:***@127.0.0.1"));
    let error = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(error.contains("stream 'stream2' failed"), "{error}");
    assert!(error.to_lowercase().contains("unauthorized"), "{error}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_live_inputs_get_one_clear_error() {
    let _serial = serial();
    let dir = temp_dir("rtsp-bad");
    // Nothing listens on port 9 of this machine: refused, retried, then failed.
    let config = dir.join("refused.toml");
    std::fs::write(
        &config,
        "[streams]\nreconnect_initial_s = 0.1\nreconnect_max_s = 0.2\nretry_budget_s = 1\n\n\
         [[stream]]\nname = \"nobody\"\nurl = \"rtsp://127.0.0.1:9/none\"\n",
    )
    .unwrap();
    let out = common::run_binary(
        &["run", "--config", config.to_str().unwrap(), "--no-listen"],
        Duration::from_secs(30),
    );
    common::assert_clear_failure(&out, "stream 'nobody' failed", "gave up after");

    // Exposing the feed beyond this machine without a token.
    let out = common::run_binary(
        &[
            "run",
            "--source",
            "rtsp://127.0.0.1:9/none",
            "--listen",
            "0.0.0.0:0",
        ],
        Duration::from_secs(30),
    );
    common::assert_clear_failure(&out, "0.0.0.0:0", "bearer token");

    // Config mistakes name the key or the stream.
    for (text, what) in [
        (
            "[[stream]]\nname = \"a\"\nurl = \"rtsp://h/x\"\nlatency = 5\n",
            "latency",
        ),
        (
            "[[stream]]\nname = \"a\"\nurl = \"rtsp://h/x\"\n[[stream]]\nname = \"a\"\nurl = \"rtsp://h/y\"\n",
            "two streams are named 'a'",
        ),
        ("[streams]\nretry_budget_s = -1\n", "retry_budget_s"),
        (
            "[[stream]]\nname = \"a\"\nurl = \"rtsp://h/x\"\nprotocols = \"carrier-pigeon\"\n",
            "carrier-pigeon",
        ),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = common::run_binary(
            &["run", "--config", path.to_str().unwrap()],
            Duration::from_secs(30),
        );
        common::assert_clear_failure(&out, "bad.toml", what);
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_stream_that_stops_sending_is_restarted_by_the_stall_timeout() {
    let _serial = serial();
    let server = RtspServer::start(0, &[("/cam", clip("tedlieu_60s_256.mp4"))], &[]);
    let dir = temp_dir("rtsp-stall");
    let run = run_config(
        &dir,
        format!(
            "[streams]\nstall_timeout_s = 2\nreconnect_initial_s = 0.2\nreconnect_max_s = 0.5\n\
             retry_budget_s = 30\n\n[[stream]]\nname = \"cam\"\nurl = \"{}\"\n",
            server.url("/cam")
        ),
        "16",
    );
    run.wait_for_line(Duration::from_secs(30), |l| l.contains("\"frame\""));
    // Freeze the server: the connection stays open, nothing arrives, no error, no EOS.
    let pid = server.child.id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let stalled_seen = run.wait_for_line(Duration::from_secs(10), |l| {
        l.contains("\"reconnecting\"") && l.contains("stall timeout")
    });
    signal("-CONT");
    let (code, stdout, stderr) = run.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    let lines = json_lines(&stdout);
    let after = lines
        .iter()
        .filter(|(at, v)| *at > stalled_seen && is_record(v))
        .count();
    assert!(after > 50, "{after} records after the stall was detected");
    let last = lines
        .iter()
        .rev()
        .find(|(_, v)| v.get("state").is_some())
        .unwrap();
    assert_eq!(last.1["state"], "ended");
    assert_eq!(last.1["reconnects"], 1, "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}
