//! RFC 3164 / BSD after the PRI, with the deviations of real senders: Cisco
//! sequence numbers and clock marks, ISO timestamps, years, fractions, a missing
//! hostname (glibc `syslog(3)` on `/dev/log`), no timestamp at all after a PRI.

use super::{Format, Message, Options, ParseError, Priority, StructuredData, err, strip_bom, time};

/// Longest tag taken as one (RFC 3164 says 32; real ones run longer).
const MAX_TAG: usize = 48;
/// Longest `[pid]` content.
const MAX_PID: usize = 32;

pub(super) fn parse<'a>(
    s: &'a [u8],
    at: usize,
    priority: Option<Priority>,
    options: &Options,
) -> Result<Message<'a>, ParseError> {
    let mut i = at;
    let mut stamp = timestamp(s, i, options);
    if stamp.is_none() {
        // Cisco: `<189>123: *Mar  1 18:46:11.123: %SYS-5-CONFIG_I: ...`.
        let n = s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if n > 0 && s.get(i + n..i + n + 2) == Some(b": ") {
            stamp = timestamp(s, i + n + 2, options);
            if stamp.is_some() {
                i += n + 2;
            }
        }
    }
    let timestamp = match stamp {
        Some((t, used)) => {
            i += used;
            t
        }
        None if priority.is_none() => {
            return err("neither RFC 5424 nor RFC 3164: no PRI and no timestamp", at);
        }
        None => None,
    };
    let mut hostname = None;
    if i > at {
        let (w, end) = super::word(s, i);
        if end < s.len() && !w.is_empty() && !looks_like_tag(w) {
            hostname = Some(w);
            i = end + 1;
        }
    }
    let (appname, procid) = match tag(s, i) {
        Some((t, pid, used)) => {
            i += used;
            (Some(t), pid)
        }
        None => (None, None),
    };
    Ok(Message {
        format: Format::Rfc3164,
        priority,
        timestamp,
        hostname,
        appname,
        procid,
        msgid: None,
        structured_data: StructuredData::default(),
        msg: strip_bom(s.get(i..).unwrap_or_default()),
    })
}

/// A timestamp at `at` with what follows it (`:`, then one space, or the end):
/// `(nanoseconds, bytes used)`. A timestamp naming an impossible date counts as
/// none (the bytes stay in the message).
fn timestamp(s: &[u8], at: usize, options: &Options) -> Option<(Option<i64>, usize)> {
    let mut i = at;
    if matches!(s.get(i), Some(b'*' | b'.')) {
        i += 1;
    }
    let zone = i64::from(options.utc_offset_secs);
    let t = if let Some((civil, offset, used)) = time::iso(s, i) {
        i += used;
        civil.to_unix_ns(offset.unwrap_or(zone))?
    } else {
        let (civil, has_year, used) = time::bsd(s, i)?;
        i += used;
        // Cisco appends the zone name: `Mar  1 2026 18:46:11 UTC:`.
        if s.get(i..i + 4) == Some(b" UTC") {
            i += 4;
            civil.to_unix_ns(0)?
        } else if has_year {
            civil.to_unix_ns(zone)?
        } else {
            time::infer_year(civil, options.now_secs, zone)?
        }
    };
    if s.get(i) == Some(&b':') {
        i += 1;
    }
    match s.get(i) {
        None => Some((Some(t), i - at)),
        Some(b' ') => Some((Some(t), i + 1 - at)),
        Some(_) => None,
    }
}

/// Whether the word after the timestamp is the tag rather than a hostname.
fn looks_like_tag(w: &[u8]) -> bool {
    w.ends_with(b":") || (w.contains(&b'[') && w.ends_with(b"]"))
}

/// A tag, its pid and the bytes they took.
type Tag<'a> = (&'a [u8], Option<&'a [u8]>, usize);

/// `TAG[PID]:` or `TAG:` at `at`, followed by an optional space: (tag, pid, used).
fn tag(s: &[u8], at: usize) -> Option<Tag<'_>> {
    let rest = s.get(at..)?;
    let n = rest
        .iter()
        .take(MAX_TAG + 1)
        .take_while(|&&b| !matches!(b, b' ' | b'[' | b':'))
        .count();
    if n == 0 || n > MAX_TAG {
        return None;
    }
    let mut i = n;
    let mut pid = None;
    if rest.get(i) == Some(&b'[') {
        let p = rest[i + 1..]
            .iter()
            .take(MAX_PID + 1)
            .position(|&b| b == b']')?;
        if p > MAX_PID || rest[i + 1..i + 1 + p].contains(&b' ') {
            return None;
        }
        pid = Some(&rest[i + 1..i + 1 + p]);
        i += p + 2;
        if rest.get(i) == Some(&b':') {
            i += 1;
        }
    } else if rest.get(i) == Some(&b':') {
        i += 1;
    } else {
        return None;
    }
    match rest.get(i) {
        Some(b' ') => i += 1,
        None => {}
        // `tag:x` or `tag[1]x`: a word with a colon, not a tag.
        Some(_) => return None,
    }
    Some((&rest[..n], pid, i))
}
