//! RFC 5424 after the PRI: `VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID
//! SP MSGID SP SD [SP MSG]` (grammar and leniencies in the parent module).

use super::{
    Format, Message, Options, ParseError, Priority, StructuredData, err, sd, strip_bom, time,
};

/// Length of `VERSION SP` at the start of `s` (1..=2 digits, not starting with 0).
pub(super) fn version(s: &[u8]) -> Option<usize> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    (matches!(n, 1 | 2) && s[0] != b'0' && s.get(n) == Some(&b' ')).then_some(n + 1)
}

/// A header field at `at`: `None` for `-`, and the index after its space.
fn field<'a>(
    s: &'a [u8],
    at: usize,
    what: &'static str,
) -> Result<(Option<&'a [u8]>, usize), ParseError> {
    let (w, end) = super::word(s, at);
    if w.is_empty() {
        return err(what, at);
    }
    if s.get(end) != Some(&b' ') {
        return err("header ends early", end);
    }
    Ok(((w != b"-").then_some(w), end + 1))
}

pub(super) fn parse<'a>(
    s: &'a [u8],
    at: usize,
    priority: Option<Priority>,
    options: &Options,
) -> Result<Message<'a>, ParseError> {
    let (timestamp, mut i) = if s.get(at) == Some(&b'-') {
        (None, at + 1)
    } else {
        let Some((civil, offset, used)) = time::iso(s, at) else {
            return err("invalid timestamp", at);
        };
        // No offset is a deviation (RFC 5424 requires one): the configured zone.
        match civil.to_unix_ns(offset.unwrap_or(i64::from(options.utc_offset_secs))) {
            Some(t) => (Some(t), at + used),
            None => return err("timestamp out of range", at),
        }
    };
    if s.get(i) != Some(&b' ') {
        return err("expected space after timestamp", i);
    }
    i += 1;
    let (hostname, i) = field(s, i, "empty hostname")?;
    let (appname, i) = field(s, i, "empty app-name")?;
    let (procid, i) = field(s, i, "empty procid")?;
    let (msgid, mut i) = field(s, i, "empty msgid")?;
    let structured_data = if s.get(i) == Some(&b'-') {
        i += 1;
        StructuredData::default()
    } else {
        let len = sd::validate(s, i)?;
        i += len;
        StructuredData::new(&s[i - len..i])
    };
    let msg = match s.get(i) {
        None => &[][..],
        Some(b' ') => strip_bom(&s[i + 1..]),
        Some(_) => return err("expected space after structured data", i),
    };
    Ok(Message {
        format: Format::Rfc5424,
        priority,
        timestamp,
        hostname,
        appname,
        procid,
        msgid,
        structured_data,
        msg,
    })
}
