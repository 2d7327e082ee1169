//! Helpers shared by the integration tests: where the test media is, running the real binary
//! with a time limit, reading its JSON Lines.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod onnx;
pub mod process;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The labeled test media: `$AFFECTSTREAM_TESTDATA`, else `../shared/testdata` beside the checkout.
pub fn testdata() -> PathBuf {
    let dir = std::env::var_os("AFFECTSTREAM_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata"));
    assert!(
        dir.is_dir(),
        "test media not found at {} (set AFFECTSTREAM_TESTDATA)",
        dir.display()
    );
    dir
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("affectstream-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// What a finished child process left.
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// `affectstream args` with `env` set and `RUST_LOG=log`, stdin closed and both outputs piped.
pub fn binary_command(args: &[&str], env: &[(&str, &std::ffi::OsStr)], log: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_affectstream"));
    command
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs the `affectstream` binary with `args`, killing it after `limit` (then panics: a hang
/// is a failure).
pub fn run_binary(args: &[&str], limit: Duration) -> Output {
    run_binary_env(args, &[], "warn", limit)
}

/// [`run_binary`] with `env` set and `RUST_LOG=log`.
pub fn run_binary_env(
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    log: &str,
    limit: Duration,
) -> Output {
    let mut child = binary_command(args, env, log)
        .spawn()
        .expect("start affectstream");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).ok();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).ok();
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            panic!("affectstream {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code(),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Parses JSON Lines.
pub fn parse_jsonl(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Reads a JSON Lines file.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    parse_jsonl(&std::fs::read_to_string(path).expect("read records"))
}

/// Asserts the process failed with one clear error line naming `name` and containing `what`,
/// and did not panic.
pub fn assert_clear_failure(out: &Output, name: &str, what: &str) {
    assert_ne!(
        out.code,
        Some(0),
        "expected failure; stderr: {}",
        out.stderr
    );
    assert!(
        out.code.is_some(),
        "killed by a signal; stderr: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "panic: {}", out.stderr);
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected: {}", out.stderr);
    assert!(
        errors[0].contains(name),
        "error line does not name {name}: {}",
        errors[0]
    );
    assert!(
        errors[0].contains(what),
        "error line does not say {what}: {}",
        errors[0]
    );
}
