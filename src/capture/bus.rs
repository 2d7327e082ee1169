//! The capture's GStreamer bus loop: end of stream, errors (turned into one line a user
//! understands, naming the source, secrets scrubbed) and warnings (logged), and the
//! [`StopHandle`] that ends a capture from another thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::mp4::iso_bmff_truncation;
use super::{Capture, CaptureError};

/// Name of the application message [`StopHandle::stop`] posts on the capture's bus.
const STOP_MESSAGE: &str = "affectstream-stop";
/// How long a stopped capture waits for its end of stream before it ends anyway. The
/// appsinks refuse buffers once stopped, and a queue that saw that refusal drops the end of
/// stream that follows it, so it may never come (seen on a paced looping bench: a 20 s pass
/// ran to the end of its 64 s file).
pub const STOP_GRACE: Duration = Duration::from_millis(250);

/// Ends a running capture from any thread: the appsinks refuse further buffers, and the
/// capture reports end of stream once its end of stream arrives, or [`STOP_GRACE`] after the
/// stop at the latest.
#[derive(Clone)]
pub struct StopHandle {
    pub(super) stopping: Arc<AtomicBool>,
    bus: Option<gst::Bus>,
}

impl StopHandle {
    /// Asks the capture to end: what was delivered so far is processed, then end of stream.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(bus) = &self.bus {
            // Wakes the thread waiting on the bus; a bus already flushed refuses it.
            let _ = bus.post(gst::message::Application::new(gst::Structure::new_empty(
                STOP_MESSAGE,
            )));
        }
    }
}

impl Capture {
    /// A handle that ends this capture from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            stopping: self.stopping.clone(),
            bus: self.pipeline.bus(),
        }
    }

    /// Blocks until the source ends (Ok) or fails (the decode error, naming the source).
    /// Then stops the pipeline, which closes the output channels.
    pub fn wait(self) -> Result<(), CaptureError> {
        let result = self.wait_inner();
        self.pipeline.set_state(gst::State::Null).ok();
        result?;
        // GStreamer ends a truncated MP4 with a plain EOS; the box sizes tell.
        let stopped = self.stopping.load(Ordering::SeqCst);
        if let Some(problem) = (!stopped)
            .then_some(self.source.path.as_deref())
            .flatten()
            .and_then(iso_bmff_truncation)
        {
            return Err(CaptureError::Decode {
                source_name: self.source.name.clone(),
                message: problem,
            });
        }
        Ok(())
    }

    fn wait_inner(&self) -> Result<(), CaptureError> {
        loop {
            if let Some(outcome) = self.poll(None) {
                return outcome;
            }
        }
    }

    /// Waits up to `timeout` (None: forever) for the source to end: Some(Ok) at end of
    /// stream, Some(Err) on a decode or connection error (secrets scrubbed), None when it is
    /// still running. Once stopped it waits for the end of stream up to [`STOP_GRACE`] (past
    /// `timeout` if need be) and then reports Some(Ok) without it. The pipeline keeps running
    /// either way; drop the capture to stop it.
    pub fn poll(&self, timeout: Option<Duration>) -> Option<Result<(), CaptureError>> {
        use gst::MessageType;
        let Some(bus) = self.pipeline.bus() else {
            return Some(Err(CaptureError::Setup("pipeline has no bus".into())));
        };
        let mut deadline = timeout.map(|t| Instant::now() + t);
        let mut stop_by: Option<Instant> = None;
        loop {
            let stopped = self.stopping.load(Ordering::SeqCst);
            if stopped && stop_by.is_none() {
                // From now on the grace is the deadline, past `timeout` if need be.
                let by = Instant::now() + STOP_GRACE;
                stop_by = Some(by);
                deadline = Some(by);
            }
            if stop_by.is_some_and(|by| Instant::now() >= by) {
                tracing::debug!(source = %self.source.name, "stopped without an end of stream");
                return Some(Ok(()));
            }
            let wait = match deadline {
                None => gst::ClockTime::NONE,
                Some(d) => Some(gst::ClockTime::from_nseconds(
                    d.saturating_duration_since(Instant::now()).as_nanos() as u64,
                )),
            };
            let msg = bus.timed_pop_filtered(
                wait,
                &[
                    MessageType::Eos,
                    MessageType::Error,
                    MessageType::Warning,
                    MessageType::Application,
                ],
            );
            let Some(msg) = msg else {
                if stop_by.is_some() || self.stopping.load(Ordering::SeqCst) {
                    continue;
                }
                return None;
            };
            use gst::MessageView;
            match msg.view() {
                MessageView::Eos(..) => return Some(Ok(())),
                MessageView::Error(err) => {
                    tracing::debug!(
                        debug = ?err.debug().map(|d| self.source.scrub(&d)),
                        "GStreamer error"
                    );
                    let source_name = self.source.name.clone();
                    let message = self
                        .source
                        .scrub(&describe_error(&err.error(), err.debug().as_deref()));
                    // Connection problems (refused, unauthorized, unreachable) are about
                    // opening the source, not decoding it.
                    return Some(Err(if err.error().is::<gst::ResourceError>() {
                        CaptureError::Open {
                            source_name,
                            message,
                        }
                    } else {
                        CaptureError::Decode {
                            source_name,
                            message,
                        }
                    }));
                }
                MessageView::Warning(w) => {
                    let text = self.source.scrub(&w.error().to_string());
                    tracing::warn!(source = %self.source.name, "GStreamer: {text}");
                }
                _ => {}
            }
            if stop_by.is_none() && deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
        }
    }
}

/// Turns GStreamer's error into one line a user understands.
fn describe_error(error: &gst::glib::Error, debug: Option<&str>) -> String {
    let text = error.to_string();
    if error.matches(gst::StreamError::TypeNotFound) {
        return "not a media file GStreamer can read (could not determine the type of stream)"
            .into();
    }
    if error.matches(gst::StreamError::CodecNotFound)
        || error.matches(gst::CoreError::MissingPlugin)
    {
        return format!("{text} (install the GStreamer plugins: scripts/setup.sh)");
    }
    if error.matches(gst::StreamError::Demux) || error.matches(gst::StreamError::Decode) {
        let detail = debug
            .and_then(|d| d.lines().last())
            .map(|l| format!(" ({})", l.trim()))
            .unwrap_or_default();
        return format!("the file is corrupt or truncated: {text}{detail}");
    }
    text
}

/// The first error waiting on the pipeline's bus, described (for a pipeline that refused to
/// start).
pub(super) fn first_bus_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Error(err) = msg.view() {
            return Some(describe_error(&err.error(), err.debug().as_deref()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::delivery::CaptureTargets;
    use crate::capture::{Source, TargetSlot};
    use std::sync::Mutex;

    /// `description` running as a capture of `source`, for the bus loop alone.
    fn capture(description: &str, source: &str) -> Capture {
        gst::init().unwrap();
        let pipeline = gst::parse::launch(description)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let (targets, _) = CaptureTargets::channels(false);
        let slot: TargetSlot = Arc::new(Mutex::new(None));
        Capture {
            pipeline,
            source: Source::parse(source).unwrap(),
            counters: targets.counters.clone(),
            stopping: Arc::new(AtomicBool::new(false)),
            slot,
            live: false,
        }
    }

    #[test]
    fn end_of_stream_is_ok_and_a_running_source_is_none() {
        let ended = capture("videotestsrc num-buffers=3 ! fakesink", "rtsp://h/a");
        assert!(matches!(
            ended.poll(Some(Duration::from_secs(10))),
            Some(Ok(()))
        ));
        let running = capture("videotestsrc is-live=true ! fakesink", "rtsp://h/b");
        assert!(running.poll(Some(Duration::from_millis(100))).is_none());
        // Stopped by its handle: the flag the appsinks read, and the capture ends without
        // waiting for an end of stream that a live source never sends.
        let stop = running.stop_handle();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            stop.stop();
        });
        let started = Instant::now();
        assert!(matches!(running.poll(None), Some(Ok(()))));
        assert!(running.stopping.load(Ordering::SeqCst));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        stopper.join().unwrap();
    }

    #[test]
    fn an_element_error_reaches_the_user_with_its_text_scrubbed_and_the_source_named() {
        let capture = capture(
            "videotestsrc is-live=true ! fakesink name=out",
            "rtsp://admin:Zq8pass@10.1.2.3/cam",
        );
        let out = capture.pipeline.by_name("out").unwrap();
        gst::element_warning!(out, gst::CoreError::Failed, ("a warning is only logged"));
        gst::element_error!(
            out,
            gst::StreamError::Failed,
            ("row 3 of frame 12 runs past its plane (login Zq8pass)")
        );
        let error = capture
            .poll(Some(Duration::from_secs(10)))
            .unwrap()
            .unwrap_err();
        assert!(matches!(error, CaptureError::Decode { .. }));
        assert_eq!(
            error.to_string(),
            "cannot decode 'rtsp://admin:***@10.1.2.3/cam': \
             row 3 of frame 12 runs past its plane (login ***)"
        );
    }

    #[test]
    fn a_resource_error_is_about_opening_the_source() {
        let capture = capture(
            "videotestsrc is-live=true ! fakesink name=out",
            "rtsp://h/c",
        );
        let out = capture.pipeline.by_name("out").unwrap();
        gst::element_error!(out, gst::ResourceError::OpenRead, ("Unauthorized (401)"));
        let error = capture
            .poll(Some(Duration::from_secs(10)))
            .unwrap()
            .unwrap_err();
        assert!(matches!(error, CaptureError::Open { .. }));
        assert_eq!(
            error.to_string(),
            "cannot open 'rtsp://h/c': Unauthorized (401)"
        );
    }

    #[test]
    fn gstreamer_errors_are_described_in_words() {
        let not_media = gst::glib::Error::new(gst::StreamError::TypeNotFound, "x");
        assert!(describe_error(&not_media, None).starts_with("not a media file"));
        let plugin = gst::glib::Error::new(gst::CoreError::MissingPlugin, "no h265 decoder");
        assert_eq!(
            describe_error(&plugin, None),
            "no h265 decoder (install the GStreamer plugins: scripts/setup.sh)"
        );
        let demux = gst::glib::Error::new(gst::StreamError::Demux, "bad atom");
        assert_eq!(
            describe_error(&demux, Some("qtdemux.c(1)\n  moov ends early  ")),
            "the file is corrupt or truncated: bad atom (moov ends early)"
        );
        let other = gst::glib::Error::new(gst::StreamError::Failed, "plain");
        assert_eq!(describe_error(&other, None), "plain");
    }
}
