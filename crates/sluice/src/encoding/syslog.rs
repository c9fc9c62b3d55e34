//! `encoding = "syslog"`: one RFC 5424 message per event, so a file sink writes
//! a syslog-format file and a stream sink can feed a syslog server.
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG
//! ```
//!
//! - PRI: `syslog.facility` × 8 + `syslog.severity` when the event has them (the
//!   syslog source sets both); else facility `user` (1) and the severity of the
//!   `level` field (`fatal` → crit, `error`, `warn`, `notice`, `info`, `debug`),
//!   `notice` when there is none.
//! - TIMESTAMP: the event time in UTC, microseconds (`2026-12-07T04:16:47.123456Z`).
//! - HOSTNAME: `syslog.hostname`, else the origin host (the writer's or peer's),
//!   else this machine's name. APP-NAME: `syslog.appname`, else the event's tag.
//!   PROCID: `syslog.procid`, else the writer's pid. MSGID: `syslog.msgid`.
//!   Each is cut to its RFC length (255, 48, 128, 32), characters outside
//!   printable US-ASCII become `_`, and an absent one is `-`.
//! - STRUCTURED-DATA: `syslog.sd.ID.PARAM` fields (what the syslog source
//!   makes of the structured data it received), grouped by ID in field order,
//!   values escaped (`"`, `\`, `]`); `-` when there are none.
//! - MSG: the body, as is.
//!
//! A message received by the syslog source therefore goes out as it came in,
//! apart from the timestamp's form.

use std::borrow::Cow;
use std::sync::OnceLock;

use crate::event::{Event, FieldRef, Record, Value};

/// The RFC 5424 severity of each `level` value.
fn severity_of_level(level: &[u8]) -> Option<u8> {
    Some(match level {
        b"fatal" | b"critical" | b"crit" => 2,
        b"error" | b"err" => 3,
        b"warn" | b"warning" => 4,
        b"notice" => 5,
        b"info" => 6,
        b"debug" | b"trace" => 7,
        _ => return None,
    })
}

fn local_hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(crate::host::hostname)
}

fn text<'a>(v: &FieldRef<'a>) -> Cow<'a, str> {
    match v.as_bytes() {
        Some(b) => String::from_utf8_lossy(b),
        None => match v.as_u64() {
            Some(n) => Cow::Owned(n.to_string()),
            None => Cow::Owned(v.to_string()),
        },
    }
}

/// A header field: `-` when absent or empty, else at most `max` printable
/// US-ASCII characters (others become `_`).
fn header(out: &mut Vec<u8>, value: Option<&[u8]>, max: usize) {
    match value.filter(|v| !v.is_empty()) {
        None => out.push(b'-'),
        Some(v) => out.extend(v.iter().take(max).map(|&c| match c {
            33..=126 => c,
            _ => b'_',
        })),
    }
    out.push(b' ');
}

fn field<'e>(event: &'e Event, name: &str) -> Option<Cow<'e, str>> {
    event.field(name).filter(|v| !v.is_nil()).map(|v| text(&v))
}

fn priority(event: &Event) -> u8 {
    let num = |name| event.field(name).and_then(|v| v.as_u64());
    match (num("syslog.facility"), num("syslog.severity")) {
        (Some(f), Some(s)) if f < 24 && s < 8 => (f * 8 + s) as u8,
        _ => {
            let sev = event
                .field("level")
                .and_then(|v| v.as_bytes().and_then(severity_of_level))
                .unwrap_or(5);
            8 + sev
        }
    }
}

/// `syslog.sd.ID.PARAM` fields as `(ID, PARAM, value)` in field order.
fn sd_params(event: &Event) -> Vec<(String, String, String)> {
    const PREFIX: &str = "syslog.sd.";
    let mut params = Vec::new();
    let mut push = |key: &str, value: Cow<'_, str>| {
        if let Some((id, param)) = key
            .strip_prefix(PREFIX)
            .and_then(|r| r.split_once('.'))
            .filter(|(id, param)| !id.is_empty() && !param.is_empty())
        {
            params.push((id.to_owned(), param.to_owned(), value.into_owned()));
        }
    };
    match &event.fields {
        Some(Record::Raw(map)) => {
            for (k, v) in map.iter() {
                if let Some(key) = k
                    .as_bytes()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .filter(|k| k.starts_with(PREFIX))
                {
                    push(key, text(&FieldRef::Raw(v)));
                }
            }
        }
        Some(Record::Decoded(fields)) => {
            for (k, v) in fields.iter() {
                let key = match k {
                    Value::String(s) => s.as_str().filter(|k| k.starts_with(PREFIX)),
                    _ => None,
                };
                if let Some(key) = key {
                    push(key, text(&FieldRef::Value(v)));
                }
            }
        }
        None => {}
    }
    params
}

/// An SD-NAME: printable US-ASCII except `=`, space, `]`, `"`; at most 32.
fn sd_name(out: &mut Vec<u8>, name: &str) {
    out.extend(name.bytes().take(32).map(|c| match c {
        b'=' | b']' | b'"' => b'_',
        33..=126 => c,
        _ => b'_',
    }));
}

fn structured_data(out: &mut Vec<u8>, event: &Event) {
    let params = sd_params(event);
    if params.is_empty() {
        out.extend_from_slice(b"- ");
        return;
    }
    let mut open: Option<&str> = None;
    for (id, param, value) in &params {
        if open != Some(id.as_str()) {
            if open.is_some() {
                out.push(b']');
            }
            out.push(b'[');
            sd_name(out, id);
            open = Some(id);
        }
        out.push(b' ');
        sd_name(out, param);
        out.extend_from_slice(b"=\"");
        for c in value.bytes() {
            if matches!(c, b'"' | b'\\' | b']') {
                out.push(b'\\');
            }
            out.push(c);
        }
        out.push(b'"');
    }
    out.extend_from_slice(b"] ");
}

/// Append `event` as one RFC 5424 message (no trailing newline).
pub fn encode(event: &Event, out: &mut Vec<u8>) {
    out.push(b'<');
    out.extend_from_slice(priority(event).to_string().as_bytes());
    out.extend_from_slice(b">1 ");
    let time = chrono::DateTime::from_timestamp_nanos(event.time_ns);
    out.extend_from_slice(
        time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .as_bytes(),
    );
    out.push(b' ');
    let origin = event.origin.as_deref();
    let host = field(event, "syslog.hostname")
        .or_else(|| origin.and_then(|o| o.host.as_deref()).map(Cow::Borrowed))
        .unwrap_or(Cow::Borrowed(local_hostname()));
    header(out, Some(host.as_bytes()), 255);
    let app = field(event, "syslog.appname").unwrap_or(Cow::Borrowed(&event.tag));
    header(out, Some(app.as_bytes()), 48);
    let procid = field(event, "syslog.procid").or_else(|| {
        origin
            .and_then(|o| o.pid)
            .map(|p| Cow::Owned(p.to_string()))
    });
    header(out, procid.as_deref().map(str::as_bytes), 128);
    let msgid = field(event, "syslog.msgid");
    header(out, msgid.as_deref().map(str::as_bytes), 32);
    structured_data(out, event);
    out.extend_from_slice(&event.body);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::event::Origin;

    fn ev(body: &[u8], fields: Vec<(&str, Value)>) -> Event {
        let mut e = Event::new(
            Bytes::copy_from_slice(body),
            1_700_000_000_123_456_789,
            "app.web".into(),
            "s".into(),
        );
        if !fields.is_empty() {
            let pairs = fields
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect();
            e.fields = Some(Record::Decoded(Arc::new(pairs)));
        }
        e
    }

    fn line(e: &Event) -> String {
        let mut out = Vec::new();
        encode(e, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn syslog_fields_make_the_header_and_structured_data() {
        let e = ev(
            b"invoice sent",
            vec![
                ("syslog.facility", Value::from(19)),
                ("syslog.severity", Value::from(4)),
                ("syslog.hostname", Value::from("web-1")),
                ("syslog.appname", Value::from("billing")),
                ("syslog.procid", Value::from("4242")),
                ("syslog.msgid", Value::from("INVOICE")),
                ("syslog.sd.order@32473.id", Value::from("A-1")),
                ("syslog.sd.order@32473.note", Value::from(r#"a "q" \ ]"#)),
                ("syslog.sd.meta.seq", Value::from(7)),
            ],
        );
        assert_eq!(
            line(&e),
            r#"<156>1 2023-11-14T22:13:20.123456Z web-1 billing 4242 INVOICE [order@32473 id="A-1" note="a \"q\" \\ \]"][meta seq="7"] invoice sent"#
        );
    }

    #[test]
    fn plain_events_take_level_tag_origin_and_dashes() {
        let mut e = ev(b"disk full", vec![("level", Value::from("error"))]);
        e.origin = Some(Arc::new(Origin {
            host: Some("10.0.0.7".into()),
            pid: Some(99),
            ..Origin::default()
        }));
        assert_eq!(
            line(&e),
            "<11>1 2023-11-14T22:13:20.123456Z 10.0.0.7 app.web 99 - - disk full"
        );
        // Nothing known: user.notice, this host, the tag as app name.
        let bare = line(&ev(b"x", vec![]));
        assert!(
            bare.starts_with("<13>1 2023-11-14T22:13:20.123456Z "),
            "{bare}"
        );
        assert!(bare.ends_with(" app.web - - - x"), "{bare}");
    }

    #[test]
    fn header_fields_are_cut_and_cleaned() {
        let long = "a".repeat(100);
        let e = ev(
            b"m",
            vec![
                ("syslog.hostname", Value::from("my host\n")),
                ("syslog.appname", Value::from(long.as_str())),
                ("syslog.msgid", Value::from("")),
            ],
        );
        let l = line(&e);
        let parts: Vec<&str> = l.split(' ').collect();
        assert_eq!(parts[2], "my_host_");
        assert_eq!(parts[3].len(), 48);
        assert_eq!(parts[5], "-");
    }
}
