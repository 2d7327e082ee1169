//! Credentials in source URLs (`rtsp://user:password@camera/stream`) never leave the capture:
//! names shown anywhere carry `***` for the password, and text that comes back from
//! GStreamer is scrubbed of it (raw and percent-decoded) before it is logged or returned.

/// A URL with its password replaced, and the secrets that were taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    /// The URL with `***` in place of the password.
    pub text: String,
    /// The password as written and percent-decoded (empty when the URL has none).
    pub secrets: Vec<String>,
}

/// Replaces the password of `scheme://user:password@host/...` by `***`. URLs without
/// credentials come back unchanged.
pub fn redact_url(url: &str) -> Redacted {
    let unchanged = || Redacted {
        text: url.to_owned(),
        secrets: Vec::new(),
    };
    let Some(scheme_end) = url.find("://") else {
        return unchanged();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    // The userinfo ends at the last '@' of the authority (a password may contain '@').
    let Some(at) = authority.rfind('@') else {
        return unchanged();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return unchanged();
    };
    let password = &userinfo[colon + 1..];
    if password.is_empty() {
        return unchanged();
    }
    let mut secrets = vec![password.to_owned()];
    let decoded = percent_decode(password);
    if decoded != password && !decoded.is_empty() {
        secrets.push(decoded);
    }
    let text = format!(
        "{}{}:***{}",
        &url[..authority_start],
        &userinfo[..colon],
        &url[authority_start + at..]
    );
    Redacted { text, secrets }
}

/// `text` with every secret replaced by `***`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    // Longest first, so a secret that contains another is replaced whole.
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in sorted {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_replaced_and_the_rest_kept() {
        let r = redact_url("rtsp://admin:s3cr%40t@10.0.0.7:554/live?x=1");
        assert_eq!(r.text, "rtsp://admin:***@10.0.0.7:554/live?x=1");
        assert_eq!(r.secrets, vec!["s3cr%40t".to_owned(), "s3cr@t".to_owned()]);
        let msg = scrub(
            "Unauthorized: rtsp://admin:s3cr@t@10.0.0.7 and s3cr%40t",
            &r.secrets,
        );
        assert!(!msg.contains("s3cr"), "{msg}");
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        for url in [
            "rtsp://10.0.0.7/live",
            "rtsp://user@host/x",
            "file:///tmp/a@b:c.mp4",
            "not a url",
            "rtsp://user:@host/",
        ] {
            let r = redact_url(url);
            assert_eq!(r.text, url);
            assert!(r.secrets.is_empty());
        }
    }

    #[test]
    fn a_password_with_at_signs_is_taken_whole() {
        let r = redact_url("rtsp://u:p@ss@host/s");
        assert_eq!(r.text, "rtsp://u:***@host/s");
        assert_eq!(r.secrets, vec!["p@ss".to_owned()]);
    }
}
