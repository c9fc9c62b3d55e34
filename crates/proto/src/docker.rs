//! Docker `json-file` log lines, as the Docker daemon writes them under
//! `/var/lib/docker/containers/<id>/<id>-json.log`:
//!
//! ```text
//! {"log":"the message\n","stream":"stdout","time":"2024-01-01T00:00:00.123456789Z"}
//! ```
//!
//! `log` is the output as written, with its newline; a line longer than the
//! daemon's buffer (16 KiB) is split into several JSON lines, all but the last
//! without the trailing `\n`: those are *partial* and the caller joins them with
//! what follows on the same stream. Other keys (`attrs`) are ignored.
//!
//! Parsing never panics (serde_json bounds its recursion); a line that is not
//! such an object is a [`DockerError`] and the caller keeps it raw. The time is
//! returned as written and converted with [`crate::cri::parse_rfc3339_ns`], so a
//! line with an absurd time still yields its stream and message.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;

pub use crate::cri::Stream;

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerLine<'a> {
    /// The message without its trailing newline.
    pub message: Cow<'a, str>,
    /// Which stream.
    pub stream: Stream,
    /// The message had no trailing newline: more parts follow.
    pub partial: bool,
    /// The `time` field as written (empty when missing).
    pub time: Cow<'a, str>,
}

/// Why a line is not a Docker JSON log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DockerError {
    /// Not a JSON object with a string `log` (and string `stream`, `time`).
    NotJson,
    /// The stream is neither `stdout` nor `stderr`.
    BadStream,
}

impl fmt::Display for DockerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DockerError::NotJson => "not a Docker JSON log line",
            DockerError::BadStream => "stream is neither stdout nor stderr",
        })
    }
}

impl std::error::Error for DockerError {}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow, default)]
    time: Cow<'a, str>,
}

/// Parse one line (without its own newline).
pub fn parse_line(line: &[u8]) -> Result<DockerLine<'_>, DockerError> {
    let raw: Raw<'_> = serde_json::from_slice(line).map_err(|_| DockerError::NotJson)?;
    let stream = match &*raw.stream {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return Err(DockerError::BadStream),
    };
    let partial = !raw.log.ends_with('\n');
    let message = match raw.log {
        Cow::Borrowed(s) => Cow::Borrowed(s.strip_suffix('\n').unwrap_or(s)),
        Cow::Owned(mut s) => {
            if !partial {
                s.pop();
            }
            Cow::Owned(s)
        }
    };
    Ok(DockerLine {
        message,
        stream,
        partial,
        time: raw.time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_partial_lines() {
        let l = parse_line(
            br#"{"log":"hello \"world\"\n","stream":"stderr","time":"2024-01-01T00:00:00.5Z"}"#,
        )
        .unwrap();
        assert_eq!(l.message, "hello \"world\"");
        assert_eq!(l.stream, Stream::Stderr);
        assert!(!l.partial);
        assert_eq!(
            crate::cri::parse_rfc3339_ns(l.time.as_bytes()),
            Some(1_704_067_200_500_000_000)
        );
        let p = parse_line(br#"{"log":"part","stream":"stdout","time":"x","attrs":{"a":"b"}}"#)
            .unwrap();
        assert_eq!(p.message, "part");
        assert!(p.partial);
        assert!(
            matches!(p.message, Cow::Borrowed(_)),
            "no copy without escapes"
        );
    }

    #[test]
    fn hostile_lines_are_errors_not_panics() {
        for bad in [
            &b"not json"[..],
            b"",
            b"{",
            br#"{"log":1,"stream":"stdout"}"#,
            br#"{"log":"x\n","stream":"stdin","time":""}"#,
            br#"{"log":"\ud800","stream":"stdout"}"#,
            &[b'['; 10_000][..],
        ] {
            assert!(parse_line(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // An absurd time is the caller's to judge: the line still parses.
        let l = parse_line(br#"{"log":"m\n","stream":"stdout","time":"99999-99-99T99:99:99Z"}"#)
            .unwrap();
        assert_eq!(crate::cri::parse_rfc3339_ns(l.time.as_bytes()), None);
    }
}
