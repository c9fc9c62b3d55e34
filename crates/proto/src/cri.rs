//! CRI container log lines, as kubelet and container runtimes write them under
//! `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`:
//!
//! ```text
//! 2024-01-01T00:00:00.123456789Z stdout F the message
//! 2024-01-01T00:00:00.123456789+02:00 stderr P first part of a long li
//! ```
//!
//! Fields are separated by one space: an RFC 3339 time, the stream (`stdout` or
//! `stderr`), a tag whose first flag is `P` (partial: the runtime split a long
//! line, the rest follows in the next `P`/`F` lines of the same stream) or `F`
//! (full, or the last part), further flags after `:` ignored, then the message to
//! the end of the line (its newline already removed by the caller).
//!
//! Parsing is zero-copy (the message is a slice of the input) and never panics on
//! any input; a line that is not CRI is an [`CriError`] and the caller keeps it
//! raw. The time is kept as its bytes and converted separately
//! ([`parse_rfc3339_ns`]), so a line with an absurd time still yields its stream
//! and message.

use std::fmt;

/// The output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed line, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriLine<'a> {
    /// The time field as written.
    pub time: &'a [u8],
    /// Which stream.
    pub stream: Stream,
    /// `P`: more parts of this line follow.
    pub partial: bool,
    /// The message (may be empty).
    pub message: &'a [u8],
}

/// Why a line is not CRI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CriError {
    /// Fewer than three space-separated fields before the message.
    MissingField,
    /// The stream is neither `stdout` nor `stderr`.
    BadStream,
    /// The tag does not start with the `P` or `F` flag.
    BadTag,
}

impl fmt::Display for CriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CriError::MissingField => "missing time, stream or tag field",
            CriError::BadStream => "stream is neither stdout nor stderr",
            CriError::BadTag => "tag is neither P nor F",
        })
    }
}

impl std::error::Error for CriError {}

/// Parse one line (without its newline).
pub fn parse_line(line: &[u8]) -> Result<CriLine<'_>, CriError> {
    let mut rest = line;
    let mut field = || -> Result<&[u8], CriError> {
        let sp = memchr_space(rest).ok_or(CriError::MissingField)?;
        let f = &rest[..sp];
        rest = &rest[sp + 1..];
        Ok(f)
    };
    let time = field()?;
    let stream = match field()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return Err(CriError::BadStream),
    };
    if time.is_empty() {
        return Err(CriError::MissingField);
    }
    // The tag may be the last field: "... stdout F" is an empty full line.
    let (tag, message) = match memchr_space(rest) {
        Some(sp) => (&rest[..sp], &rest[sp + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let partial = match tag.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(CriError::BadTag),
    };
    Ok(CriLine {
        time,
        stream,
        partial,
        message,
    })
}

fn memchr_space(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b' ')
}

/// Nanoseconds since the Unix epoch of an RFC 3339 time
/// (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, years 0000–9999, up to 9
/// fraction digits). `None` for anything else (the caller keeps its own time).
pub fn parse_rfc3339_ns(t: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<i64> {
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(b.iter().fold(0i64, |a, &d| a * 10 + i64::from(d - b'0')))
    }
    if t.len() < 20 || t.len() > 40 {
        return None;
    }
    if t[4] != b'-' || t[7] != b'-' || !matches!(t[10], b'T' | b't' | b' ') {
        return None;
    }
    if t[13] != b':' || t[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(&t[0..4])?, num(&t[5..7])?, num(&t[8..10])?);
    let (h, mi, s) = (num(&t[11..13])?, num(&t[14..16])?, num(&t[17..19])?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &t[19..];
    let mut nanos = 0i64;
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(&rest[1..=digits])? * 10i64.pow(9 - digits as u32);
        rest = &rest[1 + digits..];
    }
    let offset_secs = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), hh0, hh1, b':', mm0, mm1] => {
            let v = num(&[*hh0, *hh1])? * 3600 + num(&[*mm0, *mm1])? * 60;
            if *sign == b'+' { v } else { -v }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Kubernetes metadata carried by a pod log path
/// `…/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPath<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Pod name.
    pub pod: &'a str,
    /// Pod UID.
    pub pod_uid: &'a str,
    /// Container name.
    pub container: &'a str,
}

/// Read the pod metadata from a log path; `None` when it is not laid out so.
/// Namespaces and pod names cannot hold `_` (DNS labels), so the split is exact.
pub fn pod_path(path: &str) -> Option<PodPath<'_>> {
    let mut parts = path.rsplit('/');
    let _file = parts.next()?;
    let container = parts.next()?;
    let pod_dir = parts.next()?;
    let mut it = pod_dir.splitn(3, '_');
    let (namespace, pod, pod_uid) = (it.next()?, it.next()?, it.next()?);
    if [namespace, pod, pod_uid, container]
        .iter()
        .any(|s| s.is_empty())
    {
        return None;
    }
    Some(PodPath {
        namespace,
        pod,
        pod_uid,
        container,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_partial_lines() {
        let l = parse_line(b"2024-01-01T00:00:00.000000000Z stdout F hello world").unwrap();
        assert_eq!(l.stream, Stream::Stdout);
        assert!(!l.partial);
        assert_eq!(l.message, b"hello world");
        let p = parse_line(b"2024-01-01T00:00:00Z stderr P part").unwrap();
        assert!(p.partial);
        assert_eq!(p.stream, Stream::Stderr);
        assert_eq!(p.message, b"part");
    }

    #[test]
    fn empty_messages_and_extra_flags() {
        assert_eq!(parse_line(b"t stdout F").unwrap().message, b"");
        assert_eq!(parse_line(b"t stdout F ").unwrap().message, b"");
        assert!(parse_line(b"t stdout P:x msg").unwrap().partial);
        // Spaces inside the message are kept.
        assert_eq!(parse_line(b"t stdout F  two  ").unwrap().message, b" two  ");
    }

    #[test]
    fn not_cri_is_an_error_never_a_panic() {
        assert_eq!(parse_line(b""), Err(CriError::MissingField));
        assert_eq!(parse_line(b"plain text line"), Err(CriError::BadStream));
        assert_eq!(parse_line(b"t stdin F x"), Err(CriError::BadStream));
        assert_eq!(parse_line(b"t stdout X x"), Err(CriError::BadTag));
        assert_eq!(parse_line(b" stdout F x"), Err(CriError::MissingField));
        assert_eq!(parse_line(b"{\"log\":\"x\"}"), Err(CriError::MissingField));
    }

    #[test]
    fn every_prefix_of_a_line_parses_or_errs_without_panic() {
        let line = b"2024-01-01T00:00:00.123456789+02:00 stderr P message";
        for n in 0..=line.len() {
            let _ = parse_line(&line[..n]);
            let _ = parse_rfc3339_ns(&line[..n.min(35)]);
        }
    }

    #[test]
    fn times_convert_with_fractions_and_offsets() {
        assert_eq!(parse_rfc3339_ns(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ns(b"2024-01-01T00:00:00.5Z"),
            Some(1_704_067_200_500_000_000)
        );
        assert_eq!(
            parse_rfc3339_ns(b"2024-01-01T02:00:00.000000001+02:00"),
            Some(1_704_067_200_000_000_001)
        );
        assert_eq!(
            parse_rfc3339_ns(b"2024-02-29T00:00:00Z").map(|n| n / 1_000_000_000),
            Some(1_709_164_800)
        );
    }

    #[test]
    fn hostile_times_are_none() {
        for t in [
            &b"2023-02-29T00:00:00Z"[..],
            b"2024-13-01T00:00:00Z",
            b"2024-01-01T00:00:00.1234567890Z",
            b"9999999999-01-01T00:00:00Z",
            b"2024-01-01T00:00:00",
            b"2024-01-01T00:00:00+2:00",
            b"2024-01-01T25:00:00Z",
            b"abcd-ef-ghTij:kl:mnZ",
        ] {
            assert_eq!(parse_rfc3339_ns(t), None, "{}", String::from_utf8_lossy(t));
        }
    }

    #[test]
    fn pod_metadata_from_the_path() {
        let p = pod_path("/var/log/pods/default_web-7f9c_0a1b-2c3d/nginx/0.log").unwrap();
        assert_eq!(
            p,
            PodPath {
                namespace: "default",
                pod: "web-7f9c",
                pod_uid: "0a1b-2c3d",
                container: "nginx"
            }
        );
        assert_eq!(pod_path("/var/log/app.log"), None);
        assert_eq!(pod_path("x.log"), None);
    }
}
