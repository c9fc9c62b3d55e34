//! JSON pieces every JSON encoder writes per event: quoted strings and the RFC 3339
//! time. Both are on the hot path of every JSON sink (an archive writes one per
//! consumed record), so the common case is done by hand:
//! - a string with nothing to escape (no `"`, `\` or control byte: most log text)
//!   is copied in one go after a branch-free scan; any other string goes through
//!   `serde_json`'s escaper, so every input still gives valid JSON;
//! - the time is formatted into the output without an allocation, with the same
//!   text as chrono's `to_rfc3339_opts(Nanos, true)` (`2023-11-14T22:13:20.000000000Z`).

/// Append `s` as a JSON string.
pub fn str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    if needs_escape(b) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(b.len() + 2);
        out.push(b'"');
        out.extend_from_slice(b);
        out.push(b'"');
    }
}

/// Append `b` as a JSON string, invalid UTF-8 replaced by U+FFFD.
pub fn bytes_lossy(out: &mut Vec<u8>, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => str(out, s),
        Err(_) => str(out, &String::from_utf8_lossy(b)),
    }
}

/// Whether `b` holds a byte JSON must escape. No early exit, so the loop
/// compiles to wide compares.
fn needs_escape(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(32);
    for c in &mut chunks {
        if c.iter()
            .fold(false, |a, &x| a | (x < 0x20) | (x == b'"') | (x == b'\\'))
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&x| x < 0x20 || x == b'"' || x == b'\\')
}

/// Append the quoted RFC 3339 UTC time of `time_ns` (nanoseconds since the
/// epoch), nanosecond digits always present.
pub fn time_ns(out: &mut Vec<u8>, time_ns: i64) {
    let secs = time_ns.div_euclid(1_000_000_000);
    let nanos = time_ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let mut buf = *b"\"0000-00-00T00:00:00.000000000Z\"";
    put(&mut buf[1..5], y as u32);
    put(&mut buf[6..8], m);
    put(&mut buf[9..11], d);
    put(&mut buf[12..14], sod / 3600);
    put(&mut buf[15..17], sod / 60 % 60);
    put(&mut buf[18..20], sod % 60);
    put(&mut buf[21..30], nanos);
    out.extend_from_slice(&buf);
}

/// Write `v`'s last `dst.len()` decimal digits into `dst`, zero-padded.
fn put(dst: &mut [u8], mut v: u32) {
    for c in dst.iter_mut().rev() {
        *c = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Year, month, day of the proleptic Gregorian calendar for a count of days since
/// 1970-01-01 (H. Hinnant's `civil_from_days`). Every `i64` nanosecond time lies
/// in years 1677–2262.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrono_text(ns: i64) -> String {
        format!(
            "\"{}\"",
            chrono::DateTime::from_timestamp_nanos(ns)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        )
    }

    #[test]
    fn time_matches_chrono_everywhere_in_the_i64_range() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut cases = vec![
            0,
            -1,
            1,
            i64::MIN,
            i64::MAX,
            1_700_000_000_123_456_789,
            951_782_400_000_000_000, // 2000-02-29
            -86_400_000_000_000,
        ];
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(x as i64);
        }
        for ns in cases {
            let mut out = Vec::new();
            time_ns(&mut out, ns);
            assert_eq!(String::from_utf8(out).unwrap(), chrono_text(ns), "{ns}");
        }
    }

    #[test]
    fn strings_match_serde_json_for_every_byte() {
        let mut samples: Vec<String> = vec![
            String::new(),
            "plain log line with spaces and digits 0123456789".into(),
            "x".repeat(100),
            "é ü ☃ 🎉".into(),
        ];
        for c in 0u8..=0x7f {
            // The byte alone, at the end of a long string, and inside one.
            let ch = char::from(c);
            samples.push(ch.to_string());
            samples.push(format!("{}{ch}", "a".repeat(40)));
            samples.push(format!("{}{ch}{}", "a".repeat(33), "b".repeat(20)));
        }
        for s in samples {
            let mut out = Vec::new();
            str(&mut out, &s);
            assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
        let mut out = Vec::new();
        bytes_lossy(&mut out, b"ok \xff");
        assert_eq!(out, "\"ok \u{fffd}\"".as_bytes());
    }
}
