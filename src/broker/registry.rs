//! The camera registry (KV `affect_cameras`): what `affectstream cameras add/remove/list`
//! writes and reads, and what workers claim cameras from.

use std::collections::BTreeMap;

use async_nats::jetstream::kv::{Operation, Store};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::lease::LeaseValue;
use super::{BrokerError, names};
use crate::streams::StreamSettings;
use crate::streams::settings::SettingsOverrides;

/// One camera of the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraEntry {
    /// Source URL (may hold credentials: the registry is as secret as the cameras).
    pub url: String,
    /// Per-camera stream settings (`[[stream]]` keys of a streams config), as given.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// When it was added, Unix epoch milliseconds.
    #[serde(default)]
    pub added_ms: u64,
}

/// Schemes a registry camera may use (workers may run on other machines, so no bare paths).
const SCHEMES: [&str; 8] = [
    "rtsp://", "rtsps://", "rtmp://", "http://", "https://", "srt://", "udp://", "file://",
];

/// Checks a camera URL: a known scheme and a host (or, for `file://`, an absolute path).
pub fn check_url(url: &str) -> Result<(), String> {
    let shown = crate::capture::redact_url(url).text;
    let Some(scheme) = SCHEMES.iter().find(|s| url.starts_with(**s)) else {
        return Err(format!(
            "invalid camera URL '{shown}': it must start with one of {}",
            SCHEMES.join(", ")
        ));
    };
    let rest = &url[scheme.len()..];
    if *scheme == "file://" {
        if !rest.starts_with('/') {
            return Err(format!(
                "invalid camera URL '{shown}': file:// needs an absolute path"
            ));
        }
        return Ok(());
    }
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("invalid camera URL '{shown}': no host"));
    }
    Ok(())
}

/// Splits `KEY=VALUE`.
pub fn parse_option(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("--option '{text}': expected KEY=VALUE")),
    }
}

/// The stream settings of `options` (the keys of a `[[stream]]` entry: protocols,
/// latency_ms, reconnect_initial_s, reconnect_max_s, retry_budget_s, stall_timeout_s).
pub fn settings(options: &BTreeMap<String, String>) -> Result<StreamSettings, String> {
    let mut table = String::new();
    for (key, value) in options {
        let bare = format!("{key} = {value}\n");
        // A number or boolean as is; anything else as a string.
        if toml::from_str::<toml::Table>(&bare).is_ok() {
            table.push_str(&bare);
        } else {
            table.push_str(&format!("{key} = {}\n", toml::Value::String(value.clone())));
        }
    }
    let overrides: SettingsOverrides =
        toml::from_str(&table).map_err(|e| format!("camera option: {}", e.message()))?;
    overrides.apply(StreamSettings::default())
}

/// Adds a camera; a name already in use or a bad URL or option is an error.
pub async fn add(store: &Store, name: &str, entry: &CameraEntry) -> Result<u64, BrokerError> {
    names::check_name("camera", name).map_err(BrokerError::Registry)?;
    check_url(&entry.url).map_err(BrokerError::Registry)?;
    settings(&entry.options).map_err(BrokerError::Registry)?;
    let value = serde_json::to_vec(entry).map_err(|e| BrokerError::Registry(e.to_string()))?;
    let expected = match store
        .entry(name)
        .await
        .map_err(|e| BrokerError::Registry(format!("cannot read the registry: {e}")))?
    {
        None => 0,
        Some(e) if matches!(e.operation, Operation::Delete | Operation::Purge) => e.revision,
        Some(e) => return Err(already_exists(name, &e.value)),
    };
    match store.update(name, Bytes::from(value), expected).await {
        Ok(revision) => Ok(revision),
        Err(e) if e.kind() == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision => {
            let current = store.get(name).await.ok().flatten().unwrap_or_default();
            Err(already_exists(name, &current))
        }
        Err(e) => Err(BrokerError::Registry(format!(
            "cannot write the registry: {e}"
        ))),
    }
}

fn already_exists(name: &str, value: &[u8]) -> BrokerError {
    let url = serde_json::from_slice::<CameraEntry>(value)
        .map(|e| crate::capture::redact_url(&e.url).text)
        .unwrap_or_default();
    BrokerError::Registry(format!(
        "a camera named '{name}' already exists ({url}); remove it first"
    ))
}

/// Removes a camera (its worker stops it and gives its lease back).
pub async fn remove(store: &Store, name: &str) -> Result<(), BrokerError> {
    names::check_name("camera", name).map_err(BrokerError::Registry)?;
    let entry = store
        .entry(name)
        .await
        .map_err(|e| BrokerError::Registry(format!("cannot read the registry: {e}")))?;
    match entry {
        Some(e) if e.operation == Operation::Put => store
            .delete_expect_revision(name, Some(e.revision))
            .await
            .map_err(|e| BrokerError::Registry(format!("cannot remove '{name}': {e}"))),
        _ => Err(BrokerError::Registry(format!("no camera named '{name}'"))),
    }
}

/// One line of `cameras list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CameraLine {
    /// Camera name.
    pub name: String,
    /// Its URL, password replaced by `***`.
    pub url: String,
    /// The worker holding it, if any.
    pub worker: Option<String>,
    /// `unassigned`, or the holder's state: connecting, live, reconnecting, failed, ...
    pub state: String,
    /// Why (failed, reconnecting).
    pub reason: Option<String>,
}

impl std::fmt::Display for CameraLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}  {}  {}  {}",
            self.name,
            self.url,
            self.worker.as_deref().unwrap_or("-"),
            self.state
        )?;
        if let Some(reason) = &self.reason {
            write!(f, ": {reason}")?;
        }
        Ok(())
    }
}

/// Every key of a bucket with its live value (deleted keys left out).
pub async fn entries(store: &Store) -> Result<BTreeMap<String, (u64, Bytes)>, BrokerError> {
    use futures_util::StreamExt;
    let mut out = BTreeMap::new();
    let mut keys = store
        .keys()
        .await
        .map_err(|e| BrokerError::Registry(format!("cannot list the bucket: {e}")))?;
    let mut names = Vec::new();
    while let Some(key) = keys.next().await {
        match key {
            Ok(k) => names.push(k),
            Err(e) => {
                return Err(BrokerError::Registry(format!(
                    "cannot list the bucket: {e}"
                )));
            }
        }
    }
    for key in names {
        if let Ok(Some(e)) = store.entry(key.clone()).await
            && e.operation == Operation::Put
        {
            out.insert(key, (e.revision, e.value));
        }
    }
    Ok(out)
}

/// The registry with each camera's holder and state, by name.
pub async fn list(cameras: &Store, leases: &Store) -> Result<Vec<CameraLine>, BrokerError> {
    let registry = entries(cameras).await?;
    let held = entries(leases).await?;
    let mut lines = Vec::new();
    for (name, (_, value)) in registry {
        let url = serde_json::from_slice::<CameraEntry>(&value)
            .map(|e| crate::capture::redact_url(&e.url).text)
            .unwrap_or_else(|_| "(unreadable entry)".into());
        let lease = held
            .get(&name)
            .and_then(|(_, v)| serde_json::from_slice::<LeaseValue>(v).ok());
        lines.push(match lease {
            Some(l) => CameraLine {
                name,
                url,
                worker: Some(l.worker),
                state: l.state,
                reason: l.reason,
            },
            None => CameraLine {
                name,
                url,
                worker: None,
                state: "unassigned".into(),
                reason: None,
            },
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_a_scheme_and_a_host() {
        assert!(check_url("rtsp://admin:pw@10.0.0.7:554/stream1").is_ok());
        assert!(check_url("rtsp://cam/x").is_ok());
        assert!(check_url("file:///data/clip.mp4").is_ok());
        let e = check_url("rtsp://admin:Zq8@/x").unwrap_err();
        assert!(e.contains("no host") && !e.contains("Zq8"), "{e}");
        assert!(
            check_url("clip.mp4")
                .unwrap_err()
                .contains("must start with")
        );
        assert!(check_url("file://relative.mp4").is_err());
        assert!(check_url("rtsp://:554/x").is_err());
    }

    #[test]
    fn options_are_stream_settings_and_unknown_keys_are_named() {
        let mut o = BTreeMap::new();
        o.insert("latency_ms".to_owned(), "50".to_owned());
        o.insert("protocols".to_owned(), "udp".to_owned());
        o.insert("retry_budget_s".to_owned(), "2.5".to_owned());
        let s = settings(&o).unwrap();
        assert_eq!(s.rtsp.latency, std::time::Duration::from_millis(50));
        assert_eq!(s.retry_budget, std::time::Duration::from_millis(2500));
        o.insert("colour".to_owned(), "red".to_owned());
        assert!(settings(&o).unwrap_err().contains("colour"));
        let mut bad = BTreeMap::new();
        bad.insert("stall_timeout_s".to_owned(), "0".to_owned());
        assert!(settings(&bad).unwrap_err().contains("stall_timeout_s"));
        assert_eq!(
            parse_option("a = b").unwrap(),
            ("a".to_owned(), "b".to_owned())
        );
        assert!(parse_option("novalue").is_err());
    }
}
