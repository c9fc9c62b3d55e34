//! Encodings: how a sink turns an event into bytes.
//!
//! - `raw`: the body bytes and a newline (the CDN case: the line after the client id).
//! - `json`: one JSON object per line: `time` (RFC 3339, ns), `tag`, `message` (the
//!   body as text when it is UTF-8, else `message_base64`), then the structured
//!   fields merged at top level (a field never overrides those keys), then origin
//!   metadata (`host`, `path`, `pid`, ...) when present.
//! - `logstash_json`: the fuse_kafka document, keys in its order: `path`, `pid`,
//!   `uid`, `gid`, `@message` (base64 of the bytes), `@timestamp` (local time,
//!   `YYYY-MM-DDTHH:MM:SS.mmm±hhmm`), `user`, `group`, `command` (base64 of the
//!   command line), `@version`, `@fields`, `@tags`. Unknown numbers are `null`,
//!   unknown strings `""`, so every key is always present.
//! - `msgpack`: Fluentd's record form `[tag, EventTime, record]` where the record is
//!   the structured fields plus `message` when absent.
//! - `syslog`: one RFC 5424 message per event ([`syslog`] says how the header is
//!   filled from the event's fields).
//!
//! Every encoder appends to a caller-owned `Vec<u8>` so a sink reuses one buffer.
//! Raw records (forward) are written straight from their msgpack bytes: JSON by
//! walking them in place, msgpack by copying them.
//! Strings are escaped as `serde_json` does ([`json`] has a fast path for text
//! with nothing to escape), so any input gives valid JSON (the original
//! fuse_kafka built JSON with printf and no escaping).

use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use crate::event::{Event, RawValue, Record, Value};
use json::{bytes_lossy as json_bytes_lossy, str as json_str};

mod json;
pub mod syslog;

/// Version string written in `@version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Which encoding a sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Body bytes and a newline.
    #[default]
    Raw,
    /// One JSON object per event.
    Json,
    /// The fuse_kafka logstash document.
    LogstashJson,
    /// Fluentd's msgpack record form.
    Msgpack,
    /// RFC 5424 syslog messages.
    Syslog,
}

impl Encoding {
    /// Append the encoding of `event` to `out`. `framed` adds the newline that
    /// line-oriented sinks (file, stdout) need; message sinks (kafka) pass false.
    pub fn encode(self, event: &Event, out: &mut Vec<u8>, framed: bool) {
        match self {
            Encoding::Raw => out.extend_from_slice(&event.body),
            Encoding::Json => encode_json(event, out),
            Encoding::LogstashJson => encode_logstash(event, out),
            Encoding::Msgpack => encode_msgpack(event, out),
            Encoding::Syslog => syslog::encode(event, out),
        }
        if framed && self != Encoding::Msgpack {
            out.push(b'\n');
        }
    }
}

fn logstash_timestamp(time_ns: i64) -> String {
    let utc = chrono::DateTime::from_timestamp_nanos(time_ns);
    utc.with_timezone(&chrono::Local)
        .format("%Y-%m-%dT%H:%M:%S%.3f%z")
        .to_string()
}

const RESERVED: [&str; 4] = ["time", "tag", "message", "message_base64"];

fn encode_json(event: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"time\":");
    json::time_ns(out, event.time_ns);
    out.extend_from_slice(b",\"tag\":");
    json_str(out, &event.tag);
    match std::str::from_utf8(&event.body) {
        Ok(s) => {
            out.extend_from_slice(b",\"message\":");
            json_str(out, s);
        }
        Err(_) => {
            out.extend_from_slice(b",\"message_base64\":\"");
            out.extend_from_slice(B64.encode(&event.body).as_bytes());
            out.push(b'"');
        }
    }
    if let Some(tenant) = &event.tenant {
        out.extend_from_slice(b",\"tenant\":");
        json_str(out, tenant);
    }
    match &event.fields {
        Some(Record::Decoded(fields)) => {
            for (k, v) in fields.iter() {
                let key = key_text(k);
                if RESERVED.contains(&key.as_ref()) || key == "tenant" {
                    continue;
                }
                out.push(b',');
                json_str(out, &key);
                out.push(b':');
                write_value(out, v, 0);
            }
        }
        Some(Record::Raw(map)) => {
            for (k, v) in map.iter() {
                if let Some(key) = k.as_bytes() {
                    if key == b"tenant" || RESERVED.iter().any(|r| r.as_bytes() == key) {
                        continue;
                    }
                    out.push(b',');
                    json_bytes_lossy(out, key);
                } else {
                    let key = k.to_string();
                    if RESERVED.contains(&key.as_str()) || key == "tenant" {
                        continue;
                    }
                    out.push(b',');
                    json_str(out, &key);
                }
                out.push(b':');
                write_raw(out, v, 0);
            }
        }
        None => {}
    }
    if let Some(o) = &event.origin {
        let strs = [
            ("host", &o.host),
            ("path", &o.path),
            ("user", &o.user),
            ("group", &o.group),
        ];
        for (k, v) in strs {
            if let Some(v) = v {
                let _ = write!(out, ",\"{k}\":");
                json_str(out, v);
            }
        }
        let nums = [("pid", o.pid), ("uid", o.uid), ("gid", o.gid)];
        for (k, v) in nums {
            if let Some(v) = v {
                let _ = write!(out, ",\"{k}\":{v}");
            }
        }
        if let Some(c) = &o.command {
            out.extend_from_slice(b",\"command\":");
            json_str(out, c);
        }
        if let Some(off) = o.offset {
            let _ = write!(out, ",\"offset\":{off}");
        }
    }
    out.push(b'}');
}

fn key_text(k: &Value) -> std::borrow::Cow<'_, str> {
    match k {
        Value::String(s) => String::from_utf8_lossy(s.as_bytes()),
        Value::Binary(b) => String::from_utf8_lossy(b),
        other => std::borrow::Cow::Owned(other.to_string()),
    }
}

/// Nesting beyond this is written as `null`: forward records are depth-capped at
/// decode, this only guards against a future caller building deeper values.
const MAX_JSON_DEPTH: usize = 128;

fn write_value(out: &mut Vec<u8>, v: &Value, depth: usize) {
    if depth > MAX_JSON_DEPTH {
        out.extend_from_slice(b"null");
        return;
    }
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Value::F32(f) if f.is_finite() => {
            let _ = write!(out, "{f}");
        }
        Value::F64(f) if f.is_finite() => {
            let _ = write!(out, "{f}");
        }
        Value::F32(_) | Value::F64(_) => out.extend_from_slice(b"null"),
        Value::String(s) => json_bytes_lossy(out, s.as_bytes()),
        Value::Binary(b) => match std::str::from_utf8(b) {
            Ok(s) => json_str(out, s),
            Err(_) => {
                out.push(b'"');
                out.extend_from_slice(B64.encode(b).as_bytes());
                out.push(b'"');
            }
        },
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, depth + 1);
            }
            out.push(b']');
        }
        Value::Map(pairs) => write_pairs(out, pairs, depth),
        Value::Ext(_, data) => {
            out.push(b'"');
            out.extend_from_slice(B64.encode(data).as_bytes());
            out.push(b'"');
        }
    }
}

fn write_pairs(out: &mut Vec<u8>, pairs: &[(Value, Value)], depth: usize) {
    out.push(b'{');
    for (i, (k, val)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, &key_text(k));
        out.push(b':');
        write_value(out, val, depth + 1);
    }
    out.push(b'}');
}

/// The `json` encoding of a raw value: the same mapping as [`write_value`].
fn write_raw(out: &mut Vec<u8>, v: RawValue<'_>, depth: usize) {
    if depth > MAX_JSON_DEPTH {
        out.extend_from_slice(b"null");
        return;
    }
    match v {
        RawValue::Nil => out.extend_from_slice(b"null"),
        RawValue::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        RawValue::Uint(n) => {
            let _ = write!(out, "{n}");
        }
        RawValue::Int(n) => {
            let _ = write!(out, "{n}");
        }
        RawValue::F32(f) if f.is_finite() => {
            let _ = write!(out, "{f}");
        }
        RawValue::F64(f) if f.is_finite() => {
            let _ = write!(out, "{f}");
        }
        RawValue::F32(_) | RawValue::F64(_) => out.extend_from_slice(b"null"),
        RawValue::Str(s) => json_bytes_lossy(out, s),
        RawValue::Bin(b) => match std::str::from_utf8(b) {
            Ok(s) => json_str(out, s),
            Err(_) => {
                out.push(b'"');
                out.extend_from_slice(B64.encode(b).as_bytes());
                out.push(b'"');
            }
        },
        RawValue::Array(seq) => {
            out.push(b'[');
            for (i, item) in seq.items().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_raw(out, item, depth + 1);
            }
            out.push(b']');
        }
        RawValue::Map(seq) => write_raw_pairs(out, seq.pairs(), depth),
        RawValue::Ext(_, data) => {
            out.push(b'"');
            out.extend_from_slice(B64.encode(data).as_bytes());
            out.push(b'"');
        }
    }
}

fn write_raw_pairs<'a>(
    out: &mut Vec<u8>,
    pairs: impl Iterator<Item = (RawValue<'a>, RawValue<'a>)>,
    depth: usize,
) {
    out.push(b'{');
    for (i, (k, val)) in pairs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match k.as_bytes() {
            Some(key) => json_bytes_lossy(out, key),
            None => json_str(out, &k.to_string()),
        }
        out.push(b':');
        write_raw(out, val, depth + 1);
    }
    out.push(b'}');
}

/// Append structured fields as one JSON object, with the `json` encoding's value
/// mapping (lossy strings, base64 for non-UTF-8 bin and ext, null for non-finite
/// floats).
pub fn write_json_map(out: &mut Vec<u8>, pairs: &[(Value, Value)]) {
    write_pairs(out, pairs, 0);
}

/// [`write_json_map`] for either form of record.
pub fn write_json_record(out: &mut Vec<u8>, record: &Record) {
    match record {
        Record::Decoded(pairs) => write_pairs(out, pairs, 0),
        Record::Raw(map) => write_raw_pairs(out, map.iter(), 0),
    }
}

fn encode_logstash(event: &Event, out: &mut Vec<u8>) {
    let origin = event.origin.as_deref();
    let opt_num = |out: &mut Vec<u8>, v: Option<u32>| match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.extend_from_slice(b"null"),
    };
    out.extend_from_slice(b"{\"path\":");
    json_str(out, origin.and_then(|o| o.path.as_deref()).unwrap_or(""));
    out.extend_from_slice(b",\"pid\":");
    opt_num(out, origin.and_then(|o| o.pid));
    out.extend_from_slice(b",\"uid\":");
    opt_num(out, origin.and_then(|o| o.uid));
    out.extend_from_slice(b",\"gid\":");
    opt_num(out, origin.and_then(|o| o.gid));
    out.extend_from_slice(b",\"@message\":\"");
    out.extend_from_slice(B64.encode(&event.body).as_bytes());
    out.extend_from_slice(b"\",\"@timestamp\":");
    json_str(out, &logstash_timestamp(event.time_ns));
    out.extend_from_slice(b",\"user\":");
    json_str(out, origin.and_then(|o| o.user.as_deref()).unwrap_or(""));
    out.extend_from_slice(b",\"group\":");
    json_str(out, origin.and_then(|o| o.group.as_deref()).unwrap_or(""));
    out.extend_from_slice(b",\"command\":\"");
    let command = origin.and_then(|o| o.command.as_deref()).unwrap_or("");
    out.extend_from_slice(B64.encode(command).as_bytes());
    out.extend_from_slice(b"\",\"@version\":");
    json_str(out, VERSION);
    out.extend_from_slice(b",\"@fields\":{");
    if let Some(fields) = origin.and_then(|o| o.static_fields.as_deref()) {
        for (i, (k, v)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, k);
            out.push(b':');
            json_str(out, v);
        }
    }
    out.extend_from_slice(b"},\"@tags\":[");
    if let Some(tags) = origin.and_then(|o| o.static_tags.as_deref()) {
        for (i, t) in tags.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, t);
        }
    }
    out.extend_from_slice(b"]}");
}

fn encode_msgpack(event: &Event, out: &mut Vec<u8>) {
    let secs = event.time_ns.div_euclid(1_000_000_000);
    let nanos = event.time_ns.rem_euclid(1_000_000_000) as u32;
    let mut time = [0u8; 8];
    time[..4].copy_from_slice(&(secs as u32).to_be_bytes());
    time[4..].copy_from_slice(&nanos.to_be_bytes());
    // [tag, EventTime, record]; writing into a Vec cannot fail.
    let _ = rmp::encode::write_array_len(out, 3);
    let _ = rmp::encode::write_str(out, &event.tag);
    let _ = rmp::encode::write_ext_meta(out, 8, 0);
    out.extend_from_slice(&time);
    let has_message = event
        .fields
        .as_ref()
        .is_some_and(|r| r.get(b"message").is_some());
    let extra = u32::from(!has_message);
    match &event.fields {
        Some(Record::Raw(map)) => {
            let _ = rmp::encode::write_map_len(out, map.len() as u32 + extra);
            out.extend_from_slice(map.pairs_bytes());
        }
        Some(Record::Decoded(pairs)) => {
            let _ = rmp::encode::write_map_len(out, pairs.len() as u32 + extra);
            for (k, v) in pairs.iter() {
                let _ = rmpv::encode::write_value(out, k);
                let _ = rmpv::encode::write_value(out, v);
            }
        }
        None => {
            let _ = rmp::encode::write_map_len(out, extra);
        }
    }
    if !has_message {
        let _ = rmp::encode::write_str(out, "message");
        match std::str::from_utf8(&event.body) {
            Ok(s) => {
                let _ = rmp::encode::write_str(out, s);
            }
            Err(_) => {
                let _ = rmp::encode::write_bin(out, &event.body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::event::Origin;

    fn ev(body: &[u8]) -> Event {
        Event::new(
            Bytes::copy_from_slice(body),
            1_700_000_000_123_456_789,
            "app".into(),
            "s".into(),
        )
    }

    #[test]
    fn raw_is_body_and_newline_even_for_invalid_utf8() {
        let mut out = Vec::new();
        Encoding::Raw.encode(&ev(b"a\xffb"), &mut out, true);
        assert_eq!(out, b"a\xffb\n");
    }

    #[test]
    fn json_escapes_and_merges_fields() {
        let mut e = ev(b"he said \"hi\"\n");
        let fields = Arc::new(vec![
            (Value::from("level"), Value::from("warn")),
            (Value::from("message"), Value::from("ignored: body wins")),
            (Value::from("n"), Value::from(3)),
            (
                Value::from("nested"),
                Value::Map(vec![(
                    Value::Binary(b"b".to_vec()),
                    Value::Array(vec![Value::F64(f64::NAN), Value::Binary(vec![0xff])]),
                )]),
            ),
        ]);
        e.fields = Some(fields.clone().into());
        let mut out = Vec::new();
        Encoding::Json.encode(&e, &mut out, false);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["message"], "he said \"hi\"\n");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["n"], 3);
        assert_eq!(v["tag"], "app");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(v["nested"]["b"], serde_json::json!([null, "/w=="]));
        // A raw record (forward) gives the same bytes as its decoded form.
        e.fields = Some(Record::Raw(crate::event::RawMap::encode(&fields)));
        let mut raw = Vec::new();
        Encoding::Json.encode(&e, &mut raw, false);
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            String::from_utf8(out).unwrap()
        );
    }

    #[test]
    fn msgpack_writes_raw_and_decoded_records_alike() {
        let fields = Arc::new(vec![
            (Value::from("level"), Value::from("warn")),
            (Value::from("n"), Value::from(-3)),
        ]);
        let mut e = ev(b"hi");
        e.fields = Some(fields.clone().into());
        let mut decoded = Vec::new();
        Encoding::Msgpack.encode(&e, &mut decoded, true);
        e.fields = Some(Record::Raw(crate::event::RawMap::encode(&fields)));
        let mut raw = Vec::new();
        Encoding::Msgpack.encode(&e, &mut raw, true);
        assert_eq!(raw, decoded);
        let v = rmpv::decode::read_value(&mut &raw[..]).unwrap();
        let record = v.as_array().unwrap()[2].as_map().unwrap().clone();
        assert_eq!(record.len(), 3);
        assert_eq!(record[2], (Value::from("message"), Value::from("hi")));
    }

    #[test]
    fn json_non_utf8_body_goes_base64() {
        let mut out = Vec::new();
        Encoding::Json.encode(&ev(b"\xff\xfe"), &mut out, false);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["message_base64"], "//4=");
        assert!(v.get("message").is_none());
    }

    #[test]
    fn logstash_has_fuse_kafka_keys_in_order() {
        let mut e = ev(b"line\n");
        e.origin = Some(Arc::new(Origin {
            path: Some("/var/log/app/x.log".into()),
            pid: Some(42),
            uid: Some(1000),
            gid: Some(100),
            user: Some("al\"ice".into()),
            group: Some("users".into()),
            command: Some("sh -c echo".into()),
            static_fields: Some(Arc::new(vec![("dc".into(), "par1".into())])),
            static_tags: Some(Arc::new(vec!["edge".into()])),
            ..Origin::default()
        }));
        let mut out = Vec::new();
        Encoding::LogstashJson.encode(&e, &mut out, false);
        let text = String::from_utf8(out.clone()).unwrap();
        let keys = [
            "\"path\"",
            "\"pid\"",
            "\"uid\"",
            "\"gid\"",
            "\"@message\"",
            "\"@timestamp\"",
            "\"user\"",
            "\"group\"",
            "\"command\"",
            "\"@version\"",
            "\"@fields\"",
            "\"@tags\"",
        ];
        let positions: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["@message"], B64.encode(b"line\n"));
        assert_eq!(v["command"], B64.encode(b"sh -c echo"));
        assert_eq!(v["user"], "al\"ice");
        assert_eq!(v["@fields"]["dc"], "par1");
        assert_eq!(v["@tags"][0], "edge");
        let ts = v["@timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), "2023-11-14T22:13:20.123+0000".len(), "{ts}");
        assert_eq!(&ts[19..23], ".123");
    }

    #[test]
    fn msgpack_is_tag_eventtime_record() {
        let mut out = Vec::new();
        Encoding::Msgpack.encode(&ev(b"hi"), &mut out, true);
        let v = rmpv::decode::read_value(&mut &out[..]).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr[0].as_str(), Some("app"));
        assert_eq!(
            arr[1],
            Value::Ext(0, vec![0x65, 0x53, 0xf1, 0x00, 0x07, 0x5b, 0xcd, 0x15])
        );
        assert_eq!(arr[2].as_map().unwrap()[0].1.as_str(), Some("hi"));
    }
}
