//! Cross-module tests: every vector in `testdata/forward/` (copied from the team's shared vectors) against
//! `expected.json` (`vectors`, `handshake`), property tests for round trips and
//! incremental feeding (`props`), and decoder unit tests (`decode`). This file holds
//! the shared helpers and test-only encoders for Message and Forward mode.

mod decode;
mod handshake;
mod props;
mod vectors;

use std::path::PathBuf;

use bytes::BytesMut;
use rmpv::Value;
use serde_json::Value as Json;

use super::encode::put_time;
use super::msgpack::{put_array_len, put_bin, put_map_len, put_str, put_value};
use super::*;

pub(super) fn vectors_dir() -> PathBuf {
    // Read at run time: a test binary reused from a target dir built in
    // another clone must find this clone's files.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../../testdata/forward");
    assert!(
        dir.join("expected.json").is_file(),
        "forward test vectors not found at {}",
        dir.display()
    );
    dir
}

pub(super) fn read_vector(rel: &str) -> Vec<u8> {
    let path = vectors_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(super) fn expected() -> Vec<Json> {
    let text = std::fs::read_to_string(vectors_dir().join("expected.json")).unwrap();
    serde_json::from_str::<Json>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

pub(super) fn expected_entry(file: &str) -> Json {
    expected()
        .into_iter()
        .find(|e| e["file"] == file)
        .unwrap_or_else(|| panic!("{file} missing from expected.json"))
}

/// Decodes a whole stream (all at once, then EOF); collects requests and the first error.
pub(super) fn decode_stream(bytes: &[u8], limits: &Limits) -> (Vec<Request>, Option<DecodeError>) {
    let mut buf = BytesMut::from(bytes);
    let mut decoder = Decoder::new(limits.clone());
    let mut out = Vec::new();
    loop {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// Same as [`decode_stream`], appending `step` bytes at a time.
pub(super) fn decode_in_steps(
    bytes: &[u8],
    step: usize,
    limits: &Limits,
) -> (Vec<Request>, Option<DecodeError>) {
    let mut buf = BytesMut::new();
    let mut decoder = Decoder::new(limits.clone());
    let mut out = Vec::new();
    for piece in bytes.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    match decoder.decode_eof(&mut buf) {
        Ok(None) => (out, None),
        Ok(Some(r)) => panic!("request {r:?} only decoded at EOF"),
        Err(e) => (out, Some(e)),
    }
}

pub(super) fn hex_bytes(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// The JSON form expected.json uses for records (`{"$bin": hex}` for bin).
pub(super) fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => match i.as_u64() {
            Some(u) => Json::from(u),
            None => Json::from(i.as_i64().unwrap()),
        },
        Value::F32(f) => Json::from(f64::from(*f)),
        Value::F64(f) => Json::from(*f),
        Value::String(s) => Json::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Binary(b) => serde_json::json!({ "$bin": hex::encode(b) }),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(pairs) => Json::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    let Json::String(k) = to_json(k) else {
                        panic!("non-string key {k:?}")
                    };
                    (k, to_json(v))
                })
                .collect(),
        ),
        Value::Ext(..) => panic!("ext in a record"),
    }
}

pub(super) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Message => "Message",
        Mode::Forward => "Forward",
        Mode::PackedForward => "PackedForward",
        Mode::CompressedPackedForward => "CompressedPackedForward",
    }
}

/// Checks one decoded request against an expected.json request object.
pub(super) fn check_request(file: &str, got: &Request, want: &Json) {
    if want["mode"] == "nil-heartbeat" {
        assert_eq!(got, &Request::Heartbeat, "{file}");
        return;
    }
    let Request::Events(frame) = got else {
        panic!("{file}: {got:?}")
    };
    assert_eq!(mode_name(frame.mode), want["mode"], "{file} mode");
    assert_eq!(
        frame.tag,
        want["tag"].as_str().unwrap().as_bytes(),
        "{file} tag"
    );
    let events = want["events"].as_array().unwrap();
    assert_eq!(frame.entries.len(), events.len(), "{file} event count");
    for (i, (entry, event)) in frame.entries.iter().zip(events).enumerate() {
        assert_eq!(
            entry.time.secs,
            event["sec"].as_i64().unwrap(),
            "{file} #{i} sec"
        );
        assert_eq!(
            u64::from(entry.time.nanos),
            event["nsec"].as_u64().unwrap(),
            "{file} #{i}"
        );
        assert_eq!(
            to_json(&entry.record.to_value()),
            event["record"],
            "{file} #{i} record"
        );
        let want_meta = event.get("metadata").cloned();
        assert_eq!(
            entry.metadata.as_ref().map(|m| to_json(&m.to_value())),
            want_meta,
            "{file} #{i} metadata"
        );
    }
    let option = &want["option"];
    let chunk = option
        .get("chunk")
        .and_then(Json::as_str)
        .map(str::as_bytes);
    assert_eq!(frame.chunk.as_deref(), chunk, "{file} chunk");
    assert_eq!(
        frame.size,
        option.get("size").and_then(Json::as_u64),
        "{file} size"
    );
    let signal = option.get("fluent_signal").and_then(Json::as_u64);
    assert_eq!(frame.fluent_signal, signal, "{file} fluent_signal");
}

pub(super) fn acks(requests: &[Request]) -> Vec<u8> {
    requests
        .iter()
        .filter_map(|r| match r {
            Request::Events(f) => f.ack(),
            _ => None,
        })
        .flat_map(|b| b.to_vec())
        .collect()
}

pub(super) fn expected_response(entry: &Json) -> Vec<u8> {
    entry["expected_response"]
        .as_str()
        .map(read_vector)
        .unwrap_or_default()
}

// Test-only encoders.

pub(super) fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

pub(super) fn packed_frame(tag: &[u8], payload: &[u8], compressed: Option<&str>) -> Vec<u8> {
    let mut frame = Vec::new();
    put_array_len(&mut frame, 3);
    put_str(&mut frame, tag);
    put_bin(&mut frame, payload);
    match compressed {
        Some(c) => {
            put_map_len(&mut frame, 1);
            put_str(&mut frame, b"compressed");
            put_str(&mut frame, c.as_bytes());
        }
        None => put_map_len(&mut frame, 0),
    }
    frame
}

pub(super) fn option(frame: &mut Vec<u8>, chunk: Option<&[u8]>) {
    match chunk {
        Some(c) => {
            put_map_len(frame, 1);
            put_str(frame, b"chunk");
            put_str(frame, c);
        }
        None => frame.push(0xc0),
    }
}

pub(super) fn message_frame(
    tag: &[u8],
    time: EventTime,
    record: &Value,
    chunk: Option<&[u8]>,
) -> Vec<u8> {
    let mut frame = Vec::new();
    put_array_len(&mut frame, 4);
    put_str(&mut frame, tag);
    put_time(&mut frame, time);
    put_value(&mut frame, record);
    option(&mut frame, chunk);
    frame
}

pub(super) fn forward_frame(
    tag: &[u8],
    events: &[(EventTime, Value)],
    chunk: Option<&[u8]>,
) -> Vec<u8> {
    let mut frame = Vec::new();
    put_array_len(&mut frame, 3);
    put_str(&mut frame, tag);
    put_array_len(&mut frame, events.len() as u32);
    for (time, record) in events {
        put_array_len(&mut frame, 2);
        put_time(&mut frame, *time);
        put_value(&mut frame, record);
    }
    option(&mut frame, chunk);
    frame
}

#[cfg(feature = "zstd")]
impl PackedForwardBuilder {
    fn entries_for_test(&self) -> Vec<u8> {
        let bytes = self.clone().finish(None, Compression::None);
        let mut r = super::msgpack::Reader::new(&bytes);
        r.header().unwrap();
        r.skip().unwrap();
        let super::msgpack::Header::Bin(n) = r.header().unwrap() else {
            panic!()
        };
        r.bytes(n).unwrap().to_vec()
    }
}

#[cfg(feature = "zstd")]
pub(super) fn sample_builder(n: u32) -> PackedForwardBuilder {
    let mut b = PackedForwardBuilder::new("t");
    for i in 0..n {
        b.push(
            EventTime::new(i64::from(i), 0),
            &Value::Map(vec![(Value::from("i"), Value::from(i))]),
        );
    }
    b
}
