//! A running `affectstream` process whose output lines are collected, each with the instant it
//! arrived, by reader threads: for the tests that watch a live process (RTSP streams, cluster
//! workers) rather than run it to the end.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Output lines with the instants they arrived, filled by a reader thread.
pub type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

fn collect(pipe: impl Read + Send + 'static) -> (Lines, JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push((Instant::now(), line));
        }
    });
    (lines, reader)
}

/// A running `affectstream`; killed when dropped.
pub struct Running {
    pub child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
    readers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Starts `affectstream args` with `env` and `RUST_LOG=log`, stdin closed.
    pub fn start(args: &[&str], env: &[(&str, &std::ffi::OsStr)], log: &str) -> Self {
        let mut child = super::binary_command(args, env, log)
            .spawn()
            .expect("start affectstream");
        let (stdout, out_reader) = collect(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    /// Everything on stderr so far.
    pub fn stderr_text(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The stdout lines so far.
    pub fn stdout_lines(&self) -> Vec<(Instant, String)> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits until a line of `lines` that arrived after `after` satisfies `pred`; returns
    /// it and when it arrived. Panics after `limit`, with stderr.
    fn wait_in(
        &self,
        lines: &Lines,
        after: Option<Instant>,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (Instant, String) {
        let started = Instant::now();
        loop {
            let found = lines
                .lock()
                .unwrap()
                .iter()
                .find(|(at, l)| after.is_none_or(|a| *at > a) && pred(l))
                .cloned();
            if let Some(found) = found {
                return found;
            }
            assert!(
                started.elapsed() < limit,
                "no matching line within {limit:?}; stderr:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until a stdout line satisfies `pred`; returns when it arrived.
    pub fn wait_for_line(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Instant {
        self.wait_in(&self.stdout, None, limit, pred).0
    }

    /// Waits until a stdout line that arrived after `after` satisfies `pred`; returns when it
    /// arrived.
    pub fn wait_for_line_after(
        &self,
        after: Instant,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Instant {
        self.wait_in(&self.stdout, Some(after), limit, pred).0
    }

    /// Waits until a stderr line contains `needle`; returns the line.
    pub fn wait_stderr(&self, limit: Duration, needle: &str) -> String {
        self.wait_in(&self.stderr, None, limit, |l| l.contains(needle))
            .1
    }

    /// Sends `signal` (a name: TERM, KILL, STOP, CONT) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal}");
    }

    /// Waits for the exit (killing the process after `limit`, then panicking); returns the
    /// exit code once the readers have taken the last lines.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                self.child.kill().ok();
                panic!(
                    "affectstream did not exit within {limit:?}:\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            reader.join().ok();
        }
        status.code()
    }

    /// [`Running::wait`], then the exit code, stdout and stderr; panics if it panicked.
    pub fn finish(mut self, limit: Duration) -> (Option<i32>, Vec<(Instant, String)>, String) {
        let code = self.wait(limit);
        let stderr = self.stderr_text();
        assert!(!stderr.contains("panicked"), "panic:\n{stderr}");
        let stdout = std::mem::take(&mut *self.stdout.lock().unwrap());
        (code, stdout, stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
