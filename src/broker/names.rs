//! Names of cameras and workers, and the subjects and message ids built from them.

/// Longest camera or worker name.
pub const MAX_NAME: usize = 64;

/// Checks a camera or worker name: 1 to 64 of `A-Z a-z 0-9 _ -` (it becomes a KV key and a
/// subject token, so no dots, spaces or wildcards).
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} name '{name}' is not 1 to {MAX_NAME} characters of A-Z, a-z, 0-9, '_' and '-'"
        ))
    }
}

/// Subject of a camera's records.
pub fn record_subject(camera: &str) -> String {
    format!("affect.rec.{camera}")
}

/// Subject of a camera's events and state changes.
pub fn event_subject(camera: &str) -> String {
    format!("affect.evt.{camera}")
}

/// Message id of a record: `<camera>:<lease_rev>:<seq>`; the server drops a second message
/// with the same id within its duplicate window.
pub fn record_id(camera: &str, lease_rev: u64, seq: u64) -> String {
    format!("{camera}:{lease_rev}:{seq}")
}

/// A default worker name: the host name and the process id.
pub fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".into());
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME - 12)
        .collect();
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_keys_or_subject_tokens_are_refused() {
        assert!(check_name("camera", "lobby-1_B").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(check_name("camera", bad).is_err(), "{bad}");
        }
        assert!(check_name("worker", &default_worker_name()).is_ok());
        assert_eq!(record_id("cam", 7, 3), "cam:7:3");
        assert_eq!(record_subject("cam"), "affect.rec.cam");
    }
}
