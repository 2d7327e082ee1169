//! `affectstream demo` for real: the overlay on a 720p test clip under Xvfb (screenshot not
//! blank, `q` quits cleanly with exit code 0), and the clear failures without a display or a
//! camera. Set AFFECTSTREAM_WRITE_SCREENSHOT=docs/overlay.png to keep the screenshot (the
//! README's image).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

fn clip() -> PathBuf {
    common::testdata().join("av/streams/obama_dnc2020_cspan_64s_720p.mp4")
}

/// Kills the children it holds when dropped (a failing test leaves nothing running).
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "{name} is missing: run scripts/setup.sh");
    name.to_owned()
}

/// Starts Xvfb on a free display number; returns the display and the server.
fn start_xvfb() -> (String, Child) {
    // Tests in this binary run in parallel: each takes its own numbers, and a server only
    // counts as ours when the display's lock file names its pid.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let xvfb = tool("Xvfb");
    let first = 90 + (std::process::id() % 200) * 4;
    for _ in 0..50 {
        let n = first + NEXT.fetch_add(1, Ordering::SeqCst);
        if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            || Path::new(&format!("/tmp/.X{n}-lock")).exists()
        {
            continue;
        }
        let mut server = Command::new(&xvfb)
            .args([
                &format!(":{n}"),
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Xvfb");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let owner = std::fs::read_to_string(format!("/tmp/.X{n}-lock"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
                if owner == Some(server.id()) {
                    return (format!(":{n}"), server);
                }
                if owner.is_some() {
                    break; // another server has this number
                }
            }
            if server.try_wait().unwrap().is_some() {
                break; // lost a race for this number: try the next
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server.kill().ok();
        server.wait().ok();
    }
    panic!("no free X display number for Xvfb");
}

/// Standard deviation and mean of the image's pixels (0..1), from ImageMagick.
fn image_stats(path: &Path) -> (f64, f64) {
    let out = Command::new(tool("identify"))
        .args(["-format", "%[fx:standard_deviation] %[fx:mean]"])
        .arg(path)
        .output()
        .expect("identify");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut values = text.split_whitespace().map(|v| v.parse::<f64>().unwrap());
    (values.next().unwrap(), values.next().unwrap())
}

fn screenshot(display: &str, path: &Path) -> bool {
    Command::new(tool("import"))
        .args(["-display", display, "-window", "root"])
        .arg(path)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn overlay_plays_a_clip_under_xvfb_and_quits_cleanly_on_q() {
    let (display, xvfb) = start_xvfb();
    let mut children = Children(vec![xvfb]);
    let dir = common::temp_dir("demo-xvfb");
    let log = dir.join("demo.log");
    let demo = spawn_demo(clip().as_os_str(), &display, &dir, &log);
    children.0.push(demo);

    // Wait for the overlay to show the video playing (models load first), then a few seconds
    // more so the timelines have something.
    let shot = dir.join("overlay.png");
    let started = Instant::now();
    let mut live_since = None;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the overlay never showed the video; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        if let Some(status) = children.0[1].try_wait().unwrap() {
            panic!(
                "demo exited early ({status}); log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
        if screenshot(&display, &shot) {
            let (std, mean) = image_stats(&shot);
            if std > 0.1 && mean > 0.05 {
                let since = *live_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(8) {
                    break;
                }
            }
        }
    }
    let (std, mean) = image_stats(&shot);
    assert!(
        std > 0.1 && mean > 0.05,
        "blank screenshot: std {std}, mean {mean}"
    );
    if let Some(target) = std::env::var_os("AFFECTSTREAM_WRITE_SCREENSHOT") {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join(target);
        std::fs::copy(&shot, &target).expect("keep the screenshot");
    }

    // q in the overlay window quits.
    let xdotool = tool("xdotool");
    let window = Command::new(&xdotool)
        .args(["search", "--sync", "--name", "affectstream"])
        .env("DISPLAY", &display)
        .output()
        .expect("xdotool search");
    let window = String::from_utf8_lossy(&window.stdout)
        .lines()
        .next()
        .expect("the overlay window")
        .to_owned();
    let key = |keys: &[&str]| {
        let keyed = Command::new(&xdotool)
            .args(["windowfocus", "--sync", &window, "key", "--window", &window])
            .args(keys)
            .env("DISPLAY", &display)
            .status()
            .expect("xdotool key");
        assert!(keyed.success());
    };
    // r records, s saves a screenshot; q (while recording) quits and flushes the recording.
    key(&["r", "s"]);
    std::thread::sleep(Duration::from_secs(2));
    key(&["q"]);
    let asked = Instant::now();
    let status = loop {
        if let Some(status) = children.0[1].try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "demo did not quit within 20 s of q"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "demo failed; log:\n{text}");
    assert!(!text.contains("panicked"), "{text}");
    // The figures the overlay measured (shown fps, displayed latency) for the record.
    let summary = text
        .lines()
        .find(|l| l.contains("overlay closed"))
        .unwrap_or_else(|| panic!("no overlay summary in the log:\n{text}"));
    eprintln!("{summary}");
    let shown: f64 = summary
        .split("shown_fps=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(shown > 5.0, "the overlay showed {shown} fps");
    let written = |ext: &str| -> Vec<PathBuf> {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == ext)
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("affectstream-"))
            })
            .collect()
    };
    let recordings = written("jsonl");
    assert_eq!(
        recordings.len(),
        1,
        "one recording expected in {}",
        dir.display()
    );
    let records = common::read_jsonl(&recordings[0]);
    assert!(
        records.len() >= 20,
        "{} records in 2 s of recording",
        records.len()
    );
    assert!(
        records
            .iter()
            .all(|r| r["fused"].is_object() || r["fused"].is_null())
    );
    let screenshots = written("png");
    assert_eq!(screenshots.len(), 1, "one screenshot expected (s)");
    let (std, _) = image_stats(&screenshots[0]);
    assert!(std > 0.1, "the saved screenshot is blank");
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs the binary with a controlled environment and a time limit.
fn run_demo(args: &[&str], display: Option<&str>) -> common::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_affectstream"));
    command
        .arg("demo")
        .args(args)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env("RUST_LOG", "warn");
    if let Some(display) = display {
        command.env("DISPLAY", display);
    }
    let out = command.output().expect("run affectstream demo");
    common::Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn no_display_is_one_clear_error() {
    let clip = clip();
    let out = run_demo(&["--source", clip.to_str().unwrap()], None);
    common::assert_clear_failure(&out, "DISPLAY", "no display");
}

#[test]
fn no_camera_names_the_device_and_how_to_choose_a_source() {
    // A display is set (the camera check comes before any window opens).
    let out = run_demo(&["--camera", "57"], Some(":12345"));
    common::assert_clear_failure(&out, "/dev/video57", "no camera found");
    assert!(out.stderr.contains("--source file.mp4"), "{}", out.stderr);
}

#[test]
fn sigterm_quits_cleanly_too() {
    let (display, xvfb) = start_xvfb();
    let mut children = Children(vec![xvfb]);
    let clip = common::testdata().join("av/streams/tedlieu_60s_256.mp4");
    let dir = common::temp_dir("demo-sigterm");
    let log = dir.join("demo.log");
    let demo = spawn_demo(clip.as_os_str(), &display, &dir, &log);
    children.0.push(demo);
    let found = Command::new(tool("xdotool"))
        .args(["search", "--sync", "--name", "affectstream"])
        .env("DISPLAY", &display)
        .output()
        .expect("xdotool search");
    assert!(found.status.success(), "the overlay window never appeared");
    std::thread::sleep(Duration::from_secs(2));
    terminate_cleanly(&mut children.0[1], &log);
    std::fs::remove_dir_all(&dir).ok();
}

/// Starts `affectstream demo --source SOURCE --out-dir DIR` on `display`, logging to `log`.
fn spawn_demo(source: &std::ffi::OsStr, display: &str, dir: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_affectstream"))
        .args(["demo".as_ref(), "--source".as_ref(), source])
        .arg("--out-dir")
        .arg(dir)
        .env("DISPLAY", display)
        .env("RUST_LOG", "warn,affectstream=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start affectstream demo")
}

/// Sends SIGTERM to `demo` and asserts it exits with code 0 within 20 s, without a panic.
fn terminate_cleanly(demo: &mut Child, log: &Path) {
    let killed = Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let asked = Instant::now();
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "demo did not quit within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Starts `affectstream-rtsp-serve` for `clip` on `port` (0: any); returns it and its port.
fn start_rtsp_server(clip: &Path, port: u16) -> (Child, u16) {
    use std::io::BufRead;
    let mut server = Command::new(env!("CARGO_BIN_EXE_affectstream-rtsp-serve"))
        .args(["--port", &port.to_string(), "--mount"])
        .arg(format!("/cam={}", clip.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start affectstream-rtsp-serve");
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    // "ready rtsp://127.0.0.1:PORT/cam"
    let port = line
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("server did not start: {line:?}"));
    (server, port)
}

fn wait_for_log(log: &Path, needle: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "no '{needle}' within {limit:?}; log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_rtsp_source_that_drops_reconnects_in_the_overlay() {
    let (display, xvfb) = start_xvfb();
    let mut children = Children(vec![xvfb]);
    let clip = common::testdata().join("av/streams/tedlieu_60s_256.mp4");
    let (server, port) = start_rtsp_server(&clip, 0);
    children.0.push(server);
    let dir = common::temp_dir("demo-rtsp");
    let log = dir.join("demo.log");
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let demo = spawn_demo(url.as_ref(), &display, &dir, &log);
    children.0.push(demo);
    wait_for_log(&log, "streams: live", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    // The camera goes away for 3 s, then comes back on the same port.
    children.0[1].kill().ok();
    children.0[1].wait().ok();
    wait_for_log(&log, "reconnecting", Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(3));
    let (server, _) = start_rtsp_server(&clip, port);
    children.0[1] = server;
    wait_for_log(&log, "live: reconnected", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    terminate_cleanly(&mut children.0[2], &log);
    std::fs::remove_dir_all(&dir).ok();
}
