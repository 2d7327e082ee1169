//! Where media comes from: a file path, a URI `uridecodebin` takes, or a camera
//! ([`Source::camera`], in `camera.rs`). A source keeps the URI it hands to GStreamer apart
//! from the name it shows, so a password in the URL never reaches a log, record or error.

use std::path::{Path, PathBuf};

use gstreamer as gst;

use super::CaptureError;
use super::redact;

/// Where media comes from: a file path or any URI `uridecodebin` takes.
#[derive(Clone)]
pub struct Source {
    /// What the user typed with any password replaced by `***` (used in messages, logs and
    /// records: credentials never leave this struct).
    pub name: String,
    /// The URI handed to GStreamer (may hold credentials: never print it).
    pub uri: String,
    /// The local file, when the source is one.
    pub path: Option<PathBuf>,
    /// Secrets found in the URI (the password, raw and percent-decoded), scrubbed from any
    /// text that leaves the capture.
    pub(super) secrets: Vec<String>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Source {
    /// Parses a path or URI; a path must exist.
    pub fn parse(text: &str) -> Result<Self, CaptureError> {
        if text.contains("://") {
            let path = text
                .strip_prefix("file://")
                .map(|p| PathBuf::from(p.to_owned()));
            let redacted = redact::redact_url(text);
            if let Some(p) = &path {
                check_file(&redacted.text, p)?;
            }
            return Ok(Self {
                name: redacted.text,
                uri: text.to_owned(),
                path,
                secrets: redacted.secrets,
            });
        }
        let path = PathBuf::from(text);
        check_file(text, &path)?;
        let absolute = std::fs::canonicalize(&path).map_err(|e| CaptureError::Open {
            source_name: text.to_owned(),
            message: e.to_string(),
        })?;
        let uri = gst::glib::filename_to_uri(&absolute, None)
            .map_err(|e| CaptureError::Open {
                source_name: text.to_owned(),
                message: e.to_string(),
            })?
            .to_string();
        Ok(Self {
            name: text.to_owned(),
            uri,
            path: Some(absolute),
            secrets: Vec::new(),
        })
    }

    /// `text` with every secret of this source's URI replaced by `***`: apply to anything
    /// that came from GStreamer before it reaches a log, a record or an error.
    pub fn scrub(&self, text: &str) -> String {
        redact::scrub(text, &self.secrets)
    }

    /// True for sources whose frames arrive in real time (network streams, devices).
    pub fn is_live(&self) -> bool {
        is_live_uri(&self.uri)
    }
}

/// True for URIs of sources whose frames arrive in real time (network streams).
pub fn is_live_uri(uri: &str) -> bool {
    ["rtsp://", "rtsps://", "rtmp://", "udp://", "srt://"]
        .iter()
        .any(|p| uri.starts_with(p))
}

/// A path must name a non-empty file: the error says which of the three it is not.
fn check_file(text: &str, path: &Path) -> Result<(), CaptureError> {
    match std::fs::metadata(path) {
        Err(_) => Err(CaptureError::NotFound {
            source_name: text.to_owned(),
        }),
        Ok(m) if m.is_dir() => Err(CaptureError::Open {
            source_name: text.to_owned(),
            message: "is a directory, not a media file".into(),
        }),
        Ok(m) if m.len() == 0 => Err(CaptureError::Decode {
            source_name: text.to_owned(),
            message: "the file is empty".into(),
        }),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("afs-source-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_path_becomes_an_absolute_file_uri_named_as_typed() {
        let dir = temp_dir("path");
        let file = dir.join("clip.mp4");
        std::fs::write(&file, b"not empty").unwrap();
        let source = Source::parse(file.to_str().unwrap()).unwrap();
        assert_eq!(source.name, file.to_str().unwrap());
        assert!(source.uri.starts_with("file:///"), "{}", source.uri);
        assert!(source.uri.ends_with("/clip.mp4"), "{}", source.uri);
        assert_eq!(
            source.path.as_deref(),
            Some(file.canonicalize().unwrap().as_path())
        );
        assert!(!source.is_live());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn missing_empty_and_directory_paths_are_told_apart() {
        let dir = temp_dir("bad");
        let missing = dir.join("missing.mp4");
        let empty = dir.join("empty.mp4");
        std::fs::write(&empty, b"").unwrap();
        for (path, expected) in [
            (missing.to_str().unwrap(), "no such file"),
            (empty.to_str().unwrap(), "the file is empty"),
            (dir.to_str().unwrap(), "is a directory"),
        ] {
            let message = Source::parse(path).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
            assert!(message.contains(path), "{message}");
        }
        // A file:// URI is checked like a path.
        let uri = format!("file://{}", missing.display());
        let message = Source::parse(&uri).unwrap_err().to_string();
        assert!(message.contains("no such file"), "{message}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_network_uri_is_live_and_its_password_is_only_in_the_uri() {
        let source = Source::parse("rtsp://admin:s3cr%40t@10.0.0.7:8554/stream1").unwrap();
        assert!(source.is_live());
        assert_eq!(source.name, "rtsp://admin:***@10.0.0.7:8554/stream1");
        assert!(source.uri.contains("s3cr%40t"));
        assert!(source.path.is_none());
        assert!(!format!("{source:?}").contains("s3cr"));
        let scrubbed = source.scrub("could not connect with s3cr@t and s3cr%40t");
        assert_eq!(scrubbed, "could not connect with *** and ***");
        assert!(!Source::parse("http://example.com/a.mp4").unwrap().is_live());
        for live in ["rtsps://h/x", "rtmp://h/x", "udp://h:5000", "srt://h:9000"] {
            assert!(is_live_uri(live), "{live}");
        }
    }
}
