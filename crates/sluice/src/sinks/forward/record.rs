//! The record the forward sink sends for an event: its fields, with the body
//! under `message` unless the record holds the body already.
//!
//! A record from a forward source holds its body by construction (the value of
//! `message_key`, or the whole record rendered as JSON), so it travels on
//! unchanged, as the bytes it came in. Fields that are metadata beside the body —
//! a Kafka source's `kafka.*`, a syslog source's `facility`, `hostname`... — do
//! not: without the added `message` the next hop would get the metadata and lose
//! the record's value.

use proto::forward::PackedForwardBuilder;

use crate::event::{Event, Record, Value};

/// Appends `[time, record]` for `ev` to `b`.
pub(super) fn push(b: &mut PackedForwardBuilder, ev: &Event) {
    let time = super::client::event_time(ev);
    match &ev.fields {
        Some(r @ Record::Raw(m)) if holds_body(ev, r) => b.push_raw(time, m),
        Some(r) => {
            let mut pairs = r.to_fields();
            if !holds_body(ev, r) {
                pairs.push((Value::from("message"), body_value(&ev.body)));
            }
            b.push(time, &Value::Map(pairs));
        }
        None => b.push(time, &record(ev)),
    }
}

fn body_value(body: &[u8]) -> Value {
    match std::str::from_utf8(body) {
        Ok(s) => Value::from(s),
        Err(_) => Value::Binary(body.to_vec()),
    }
}

/// The record sent for an event without fields: `{"message": body}`.
fn record(ev: &Event) -> Value {
    Value::Map(vec![(Value::from("message"), body_value(&ev.body))])
}

/// Whether `record` carries `ev`'s body: it has a `message` key, or a top-level
/// str/bin value equal to the body, or the body is the record as JSON (a forward
/// source's body when `message_key` names no value).
fn holds_body(ev: &Event, record: &Record) -> bool {
    let body = &ev.body[..];
    if record.get(b"message").is_some() {
        return true;
    }
    let in_values = match record {
        Record::Raw(m) => m.iter().any(|(_, v)| v.as_bytes() == Some(body)),
        Record::Decoded(f) => f.iter().any(|(_, v)| match v {
            Value::String(s) => s.as_bytes() == body,
            Value::Binary(b) => b[..] == *body,
            _ => false,
        }),
    };
    if in_values {
        return true;
    }
    if body.first() != Some(&b'{') {
        return false;
    }
    let mut json = Vec::with_capacity(body.len());
    crate::encoding::write_json_record(&mut json, record);
    json == body
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use proto::forward::{Compression, RawMap};

    use super::*;

    fn ev(body: &str, fields: Option<Record>) -> Event {
        let mut e = Event::new(Bytes::from(body.to_owned()), 0, "t".into(), "s".into());
        e.fields = fields;
        e
    }

    /// The record of the one entry `push` wrote, decoded.
    fn sent(e: &Event) -> Vec<(Value, Value)> {
        let mut b = PackedForwardBuilder::new("t");
        push(&mut b, e);
        let bytes = b.finish(None, Compression::None);
        let v = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        let entries = v.as_array().unwrap()[1].as_slice().unwrap().to_vec();
        let entry = rmpv::decode::read_value(&mut &entries[..]).unwrap();
        entry.as_array().unwrap()[1].as_map().unwrap().clone()
    }

    fn kafka_fields() -> Vec<(Value, Value)> {
        vec![
            (Value::from("kafka.topic"), Value::from("a")),
            (Value::from("kafka.offset"), Value::from(7)),
        ]
    }

    #[test]
    fn metadata_fields_get_the_body_as_message() {
        for fields in [
            Record::Decoded(Arc::new(kafka_fields())),
            Record::Raw(RawMap::encode(&kafka_fields())),
        ] {
            let r = sent(&ev("v-7", Some(fields)));
            assert_eq!(r.len(), 3);
            assert_eq!(r[2], (Value::from("message"), Value::from("v-7")));
        }
        let r = sent(&ev("plain", None));
        assert_eq!(r, vec![(Value::from("message"), Value::from("plain"))]);
    }

    #[test]
    fn records_holding_their_body_travel_unchanged() {
        // message_key = "message", a Fluent Bit style "log" key, and a record
        // without the key (the body is the record as JSON).
        let with_message = vec![(Value::from("message"), Value::from("hi"))];
        let with_log = vec![
            (Value::from("log"), Value::from("a line")),
            (Value::from("n"), Value::from(1)),
        ];
        let no_key = vec![(Value::from("a"), Value::from(1))];
        for (body, pairs) in [
            ("hi", with_message),
            ("a line", with_log),
            (r#"{"a":1}"#, no_key),
        ] {
            let raw = RawMap::encode(&pairs);
            let e = ev(body, Some(Record::Raw(raw)));
            assert_eq!(sent(&e), pairs, "{body}");
            let e = ev(body, Some(Record::Decoded(Arc::new(pairs.clone()))));
            assert_eq!(sent(&e), pairs, "{body}");
        }
    }
}
