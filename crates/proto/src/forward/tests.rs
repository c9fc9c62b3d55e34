//! Cross-module tests: every vector in `shared/testdata/forward/` against
//! `expected.json`, and property tests for round trips and incremental feeding.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rmpv::Value;
use serde_json::Value as Json;

use super::encode::put_time;
use super::handshake::{
    self, Credentials, Helo, Ping, PingRejection, Pong, password_digest, shared_key_digest,
    verify_ping, verify_pong,
};
use super::msgpack::{put_array_len, put_bin, put_map_len, put_str, put_value};
use super::*;

// ---------------------------------------------------------------------------------
// Helpers

fn vectors_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/forward");
    assert!(
        dir.join("expected.json").is_file(),
        "forward test vectors not found at {}",
        dir.display()
    );
    dir
}

fn read_vector(rel: &str) -> Vec<u8> {
    let path = vectors_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn expected() -> Vec<Json> {
    let text = std::fs::read_to_string(vectors_dir().join("expected.json")).unwrap();
    serde_json::from_str::<Json>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn expected_entry(file: &str) -> Json {
    expected()
        .into_iter()
        .find(|e| e["file"] == file)
        .unwrap_or_else(|| panic!("{file} missing from expected.json"))
}

/// Decodes a whole stream (all at once, then EOF); collects requests and the first error.
fn decode_stream(bytes: &[u8], limits: &Limits) -> (Vec<Request>, Option<DecodeError>) {
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
fn decode_in_steps(
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

fn hex_bytes(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// The JSON form expected.json uses for records (`{"$bin": hex}` for bin).
fn to_json(v: &Value) -> Json {
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

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Message => "Message",
        Mode::Forward => "Forward",
        Mode::PackedForward => "PackedForward",
        Mode::CompressedPackedForward => "CompressedPackedForward",
    }
}

/// Checks one decoded request against an expected.json request object.
fn check_request(file: &str, got: &Request, want: &Json) {
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
        assert!(entry.record.is_map());
        assert_eq!(
            to_json(&entry.record),
            event["record"],
            "{file} #{i} record"
        );
        let want_meta = event.get("metadata").cloned();
        assert_eq!(
            entry.metadata.as_ref().map(to_json),
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

fn acks(requests: &[Request]) -> Vec<u8> {
    requests
        .iter()
        .filter_map(|r| match r {
            Request::Events(f) => f.ack(),
            _ => None,
        })
        .flat_map(|b| b.to_vec())
        .collect()
}

fn expected_response(entry: &Json) -> Vec<u8> {
    entry["expected_response"]
        .as_str()
        .map(read_vector)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// Vectors

#[test]
fn every_valid_mode_vector_decodes_as_documented() {
    let mut checked = 0;
    for entry in expected() {
        let file = entry["file"].as_str().unwrap();
        let bytes = match entry["kind"].as_str().unwrap() {
            "request" if file.ends_with(".txt") => continue,
            "request" | "stream" | "captured" => read_vector(file),
            _ => continue,
        };
        let wants: Vec<Json> = match entry.get("requests") {
            Some(list) => list.as_array().unwrap().clone(),
            None => vec![entry.clone()],
        };
        let (got, err) = decode_stream(&bytes, &Limits::default());
        assert!(err.is_none(), "{file}: {err:?}");
        assert_eq!(got.len(), wants.len(), "{file}: request count");
        for (g, w) in got.iter().zip(&wants) {
            check_request(file, g, w);
        }
        assert_eq!(
            acks(&got),
            expected_response(&entry),
            "{file}: response bytes"
        );
        checked += 1;
    }
    assert_eq!(checked, 14 + 5 + 1, "modes + captured + stream vectors");
}

#[test]
fn json_mode_is_rejected_as_not_an_array() {
    let (got, err) = decode_stream(&read_vector("modes/message_json.txt"), &Limits::default());
    assert!(got.is_empty());
    let err = err.unwrap();
    assert!(matches!(
        err.kind(),
        DecodeErrorKind::NotArray { found: "integer" }
    ));
    assert!(!err.can_continue());
}

#[test]
fn tcp_nil_heartbeat_is_a_heartbeat() {
    let (got, err) = decode_stream(&read_vector("heartbeat/tcp_nil.bin"), &Limits::default());
    assert_eq!((got, err.is_none()), (vec![Request::Heartbeat], true));
    // The UDP heartbeat is answered with the same single byte it receives.
    assert_eq!(read_vector("heartbeat/udp_request.bin"), [0x00]);
    assert_eq!(read_vector("heartbeat/udp_response.bin"), [0x00]);
}

#[test]
fn every_valid_vector_decodes_identically_in_any_feed_size() {
    for entry in expected() {
        let file = entry["file"].as_str().unwrap();
        if !matches!(
            entry["kind"].as_str(),
            Some("request" | "stream" | "captured")
        ) || file.ends_with(".txt")
        {
            continue;
        }
        let bytes = read_vector(file);
        let whole = decode_stream(&bytes, &Limits::default());
        for step in [1, 2, 3, 7, 64] {
            let stepped = decode_in_steps(&bytes, step, &Limits::default());
            assert_eq!(stepped.0, whole.0, "{file} step {step}");
            assert!(stepped.1.is_none(), "{file} step {step}");
        }
    }
}

#[test]
fn every_strict_prefix_of_a_valid_vector_needs_more() {
    for entry in expected() {
        let file = entry["file"].as_str().unwrap();
        if entry["kind"] != "request" || file.ends_with(".txt") {
            continue;
        }
        let bytes = read_vector(file);
        for end in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..end]);
            let got = Decoder::default().decode(&mut buf);
            assert!(matches!(got, Ok(None)), "{file} prefix {end}: {got:?}");
            assert_eq!(&buf[..], &bytes[..end], "{file}: buffer modified");
        }
    }
}

/// What each `bad/` vector must produce.
fn bad_expectation(name: &str) -> fn(&DecodeErrorKind) -> bool {
    use DecodeErrorKind as K;
    match name {
        "top_level_map" => |k| matches!(k, K::NotArray { found: "map" }),
        "ascii_garbage" => |k| matches!(k, K::NotArray { found: "integer" }),
        "array_len1" => |k| matches!(k, K::WrongArity { len: 1 }),
        "message_missing_record" => |k| matches!(k, K::MissingRecord),
        "tag_not_string" => |k| matches!(k, K::TagNotString { found: "integer" }),
        "record_not_map" => |k| matches!(k, K::RecordNotMap { found: "str" }),
        "eventtime_len4" => |k| matches!(k, K::InvalidTime(TimeError::ExtLen(4))),
        "ext_type1_time" => |k| matches!(k, K::InvalidTime(TimeError::ExtType(1))),
        "truncated_fixext8" => |k| matches!(k, K::Truncated { buffered: 18 }),
        "option_not_map" => |k| matches!(k, K::OptionNotMap { found: "str" }),
        "chunk_not_string" => |k| {
            matches!(
                k,
                K::InvalidOption {
                    key: "chunk",
                    found: "integer"
                }
            )
        },
        "array32_claims_4g" | "str32_claims_4g" | "map32_claims_4g" => |k| {
            matches!(
                k,
                K::FrameTooLarge {
                    limit: 33_554_432,
                    ..
                }
            )
        },
        "deep_nesting_100k" => |k| matches!(k, K::TooDeep { limit: 64 }),
        // The bomb inflates to zeros, which are not entries: rejected after the first
        // 64 KiB step, long before the 64 MiB would be produced.
        "gzip_bomb_64MiB" => |k| {
            matches!(
                k,
                K::InvalidEntry {
                    reason: "entry is not an array"
                }
            )
        },
        "gzip_corrupt" => |k| {
            matches!(
                k,
                K::Decompress {
                    algorithm: "gzip",
                    ..
                }
            )
        },
        "packed_entries_truncated" => |k| matches!(k, K::TruncatedEntries),
        "packed_entries_not_entries" => |k| matches!(k, K::InvalidEntry { .. }),
        "compressed_unknown_algo" => |k| matches!(k, K::UnsupportedCompression(a) if a == "lz4"),
        other => panic!("no expectation for bad/{other}"),
    }
}

#[test]
fn every_bad_vector_fails_as_documented_without_ack() {
    let mut checked = 0;
    for entry in expected() {
        let file = entry["file"].as_str().unwrap();
        if entry["kind"] != "bad" {
            continue;
        }
        let name = file.trim_start_matches("bad/").trim_end_matches(".bin");
        let bytes = read_vector(file);
        let (got, err) = decode_stream(&bytes, &Limits::default());
        match name {
            // Policy: float times are accepted as seconds + rounded fraction.
            "time_float_message" => {
                assert!(err.is_none(), "{err:?}");
                let Request::Events(f) = &got[0] else {
                    panic!()
                };
                assert_eq!(
                    f.entries[0].time,
                    EventTime::new(1_700_000_000, 500_000_000)
                );
            }
            // Policy: tags are bytes; invalid UTF-8 is kept, not rejected.
            "tag_invalid_utf8" => {
                assert!(err.is_none(), "{err:?}");
                let Request::Events(f) = &got[0] else {
                    panic!()
                };
                assert_eq!(&f.tag[..], b"\xff\xfe\xfd");
            }
            _ => {
                assert!(got.is_empty(), "{file}: decoded {got:?}");
                let err = err.unwrap_or_else(|| panic!("{file}: no error"));
                assert!(bad_expectation(name)(err.kind()), "{file}: {err}");
                let framing = matches!(
                    err.kind(),
                    DecodeErrorKind::NotArray { .. }
                        | DecodeErrorKind::FrameTooLarge { .. }
                        | DecodeErrorKind::TooDeep { .. }
                        | DecodeErrorKind::Truncated { .. }
                );
                assert_eq!(err.can_continue(), !framing, "{file}");
                assert!(!err.to_string().is_empty());
            }
        }
        assert!(acks(&got).is_empty(), "{file}: must not ack");
        // Fed one byte at a time the outcome is the same.
        let stepped = decode_in_steps(&bytes, 1, &Limits::default());
        assert_eq!(stepped.0, got, "{file}");
        checked += 1;
    }
    assert_eq!(checked, 22);
}

#[test]
fn truncated_vector_is_need_more_until_eof() {
    let bytes = read_vector("bad/truncated_fixext8.bin");
    let mut buf = BytesMut::from(&bytes[..]);
    let mut decoder = Decoder::default();
    assert!(matches!(decoder.decode(&mut buf), Ok(None)));
    assert_eq!(buf.len(), bytes.len());
}

#[test]
fn gzip_output_is_capped_while_inflating() {
    let limits = Limits {
        max_decompressed_bytes: 1 << 20,
        ..Limits::default()
    };
    // One entry holding a 4 MiB bin: the entry scanner refuses it from its header.
    let mut entries = Vec::new();
    put_array_len(&mut entries, 2);
    entries.push(0x01);
    put_map_len(&mut entries, 1);
    put_str(&mut entries, b"a");
    put_bin(&mut entries, &vec![0; 4 << 20]);
    // Many small valid entries adding up to 2 MiB.
    let mut many = Vec::new();
    for _ in 0..(2 << 20) / 16 {
        put_array_len(&mut many, 2);
        many.push(0x01);
        put_map_len(&mut many, 1);
        put_str(&mut many, b"k");
        put_str(&mut many, &[b'v'; 9]);
    }
    for payload in [entries, many] {
        let frame = packed_frame(b"t", &gzip(&payload), Some("gzip"));
        let (got, err) = decode_stream(&frame, &limits);
        assert!(got.is_empty());
        let err = err.unwrap();
        assert!(
            matches!(
                err.kind(),
                DecodeErrorKind::DecompressedTooLarge {
                    algorithm: "gzip",
                    limit: 1_048_576
                }
            ),
            "{err}"
        );
        assert!(err.can_continue());
    }
}

#[test]
fn gzip_payload_is_sniffed_even_when_the_option_says_text() {
    let mut entries = Vec::new();
    put_array_len(&mut entries, 2);
    entries.push(0x05);
    put_map_len(&mut entries, 0);
    for option in [None, Some("text")] {
        let frame = packed_frame(b"t", &gzip(&entries), option);
        let (got, err) = decode_stream(&frame, &Limits::default());
        assert!(err.is_none(), "{err:?}");
        let Request::Events(f) = &got[0] else {
            panic!()
        };
        assert_eq!(f.mode, Mode::CompressedPackedForward);
        assert_eq!(f.entries.len(), 1);
    }
}

#[cfg(feature = "zstd")]
#[test]
fn zstd_payloads_decode_including_concatenated_frames() {
    let b = sample_builder(3);
    let entries = b.entries_for_test();
    let mut payload = zstd::encode_all(&entries[..10], 3).unwrap();
    payload.extend(zstd::encode_all(&entries[10..], 3).unwrap());
    let frame = packed_frame(b"t", &payload, Some("zstd"));
    let (got, err) = decode_stream(&frame, &Limits::default());
    assert!(err.is_none(), "{err:?}");
    let Request::Events(f) = &got[0] else {
        panic!()
    };
    assert_eq!(
        (f.mode, f.entries.len()),
        (Mode::CompressedPackedForward, 3)
    );
}

#[cfg(not(feature = "zstd"))]
#[test]
fn zstd_is_unsupported_without_the_feature() {
    let frame = packed_frame(b"t", &[0x28, 0xb5, 0x2f, 0xfd, 0], None);
    let (_, err) = decode_stream(&frame, &Limits::default());
    let err = err.unwrap();
    assert!(matches!(err.kind(), DecodeErrorKind::UnsupportedCompression(a) if a == "zstd"));
}

#[test]
fn v15_metadata_and_option_metadata_are_kept() {
    let mut b = PackedForwardBuilder::new("t");
    let meta = Value::Map(vec![(Value::from("k"), Value::from(1))]);
    b.push_with_metadata(EventTime::new(5, 6), &meta, &Value::Map(vec![]));
    let (got, _) = decode_stream(&b.finish(None, Compression::Gzip), &Limits::default());
    let Request::Events(f) = &got[0] else {
        panic!()
    };
    assert_eq!(f.entries[0].metadata.as_ref(), Some(&meta));
    assert_eq!(f.metadata_for(&f.entries[0]), Some(&meta));

    // Message mode with option metadata (Fluent Bit).
    let mut frame = Vec::new();
    put_array_len(&mut frame, 4);
    put_str(&mut frame, b"t");
    frame.push(0x01);
    put_map_len(&mut frame, 0);
    put_map_len(&mut frame, 2);
    put_str(&mut frame, b"metadata");
    put_value(&mut frame, &meta);
    put_str(&mut frame, b"fluent_signal");
    frame.push(0x00);
    let (got, err) = decode_stream(&frame, &Limits::default());
    assert!(err.is_none(), "{err:?}");
    let Request::Events(f) = &got[0] else {
        panic!()
    };
    assert_eq!(
        (f.metadata.as_ref(), f.fluent_signal),
        (Some(&meta), Some(0))
    );
    assert_eq!(f.metadata_for(&f.entries[0]), Some(&meta));
}

// ---------------------------------------------------------------------------------
// Handshake vectors

fn handshake_inputs() -> (Json, Json) {
    let e = expected_entry("handshake/");
    (e["inputs"].clone(), e["digests"].clone())
}

fn input_bytes(v: &Json) -> Vec<u8> {
    match v {
        Json::String(s) => s.as_bytes().to_vec(),
        other => hex_bytes(other["$bin"].as_str().unwrap()),
    }
}

#[test]
fn handshake_digests_match_the_published_values() {
    let (i, d) = handshake_inputs();
    let b = |k: &str| input_bytes(&i[k]);
    let (nonce, key) = (b("nonce"), b("shared_key"));
    for (salt, ping, pong) in [
        (
            "shared_key_salt",
            "ping_shared_key_hexdigest",
            "pong_shared_key_hexdigest",
        ),
        (
            "shared_key_salt_fluentbit",
            "ping_shared_key_hexdigest_fluentbit_salt",
            "pong_shared_key_hexdigest_fluentbit_salt",
        ),
    ] {
        let salt = b(salt);
        assert_eq!(
            shared_key_digest(&salt, &b("client_hostname"), &nonce, &key),
            d[ping]
        );
        assert_eq!(
            shared_key_digest(&salt, &b("server_hostname"), &nonce, &key),
            d[pong]
        );
    }
    let pw = password_digest(&b("auth_salt"), &b("username"), &b("password"));
    assert_eq!(pw, d["password_hexdigest"]);
}

fn decode_response(bytes: &[u8]) -> Response {
    let mut buf = BytesMut::from(bytes);
    let r = ResponseDecoder::new().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    r
}

fn decode_ping(bytes: &[u8]) -> Ping {
    let (got, err) = decode_stream(bytes, &Limits::default());
    assert!(err.is_none(), "{err:?}");
    match got.as_slice() {
        [Request::Ping(p)] => p.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_side_handshake_vectors() {
    let (i, _) = handshake_inputs();
    let b = |k: &str| input_bytes(&i[k]);
    let helo = Helo {
        nonce: b("nonce").into(),
        auth: b("auth_salt").into(),
        keepalive: true,
    };
    assert_eq!(helo.encode(), read_vector("handshake/helo_fluentd.bin"));
    let key = b("shared_key");
    let alice = Credentials {
        username: b("username"),
        password: b("password"),
    };
    let users = std::slice::from_ref(&alice);

    let ping = decode_ping(&read_vector("handshake/ping_user.bin"));
    assert_eq!(ping.username, b("username"));
    assert_eq!(verify_ping(&ping, &helo, &key, users), Ok(()));
    assert_eq!(
        verify_ping(&ping, &helo, b"wrong", users),
        Err(PingRejection::SharedKeyMismatch)
    );
    let bob = Credentials {
        username: b("username"),
        password: b"nope".to_vec(),
    };
    assert_eq!(
        verify_ping(&ping, &helo, &key, &[bob]),
        Err(PingRejection::UserMismatch)
    );
    let pong = Pong::accept(&ping, &helo, &b("server_hostname"), &key);
    assert_eq!(pong.encode(), read_vector("handshake/pong_ok.bin"));

    let nouser = decode_ping(&read_vector("handshake/ping_nouser.bin"));
    assert_eq!(verify_ping(&nouser, &helo, &key, &[]), Ok(()));
    assert_eq!(
        verify_ping(&nouser, &helo, &key, users),
        Err(PingRejection::UserMismatch)
    );

    let raw = decode_ping(&read_vector("handshake/ping_fluentbit_raw_salt.bin"));
    assert_eq!(raw.salt, b("shared_key_salt_fluentbit"));
    assert_eq!(verify_ping(&raw, &helo, &key, &[]), Ok(()));
    let pong = Pong::accept(&raw, &helo, &b("server_hostname"), &key);
    assert_eq!(
        pong.encode(),
        read_vector("handshake/pong_ok_fluentbit_raw_salt.bin")
    );

    let fail = Pong::reject(PingRejection::SharedKeyMismatch).encode();
    assert_eq!(fail, read_vector("handshake/pong_fail_shared_key.bin"));
    let fail = Pong::reject(PingRejection::UserMismatch).encode();
    assert_eq!(fail, read_vector("handshake/pong_fail_user.bin"));
}

#[test]
fn client_side_handshake_vectors() {
    let (i, _) = handshake_inputs();
    let b = |k: &str| input_bytes(&i[k]);
    let key = b("shared_key");
    for file in ["handshake/helo_fluentd.bin", "handshake/helo_fluentbit.bin"] {
        let Response::Helo(helo) = decode_response(&read_vector(file)) else {
            panic!("{file}")
        };
        assert_eq!(
            (&helo.nonce[..], &helo.auth[..]),
            (&b("nonce")[..], &b("auth_salt")[..])
        );
        assert!(helo.keepalive, "{file}: keepalive defaults to true");

        let alice = Credentials {
            username: b("username"),
            password: b("password"),
        };
        let salt = b("shared_key_salt");
        let host = b("client_hostname");
        let ping = Ping::with_salt(&helo, &salt, &host, &key, Some(&alice));
        assert_eq!(
            ping.encode(),
            read_vector("handshake/ping_user.bin"),
            "{file}"
        );
        let anonymous = Helo {
            auth: Bytes::new(),
            ..helo.clone()
        };
        let nouser = Ping::with_salt(&anonymous, &salt, &host, &key, None);
        assert_eq!(nouser.encode(), read_vector("handshake/ping_nouser.bin"));

        let Response::Pong(pong) = decode_response(&read_vector("handshake/pong_ok.bin")) else {
            panic!()
        };
        assert_eq!(verify_pong(&pong, &ping, &helo, &key), Ok(()));
        assert_eq!(
            verify_pong(&pong, &ping, &helo, b"other"),
            Err(handshake::PongError::DigestMismatch)
        );
        let Response::Pong(fail) = decode_response(&read_vector("handshake/pong_fail_user.bin"))
        else {
            panic!()
        };
        assert!(matches!(
            verify_pong(&fail, &ping, &helo, &key),
            Err(handshake::PongError::Rejected { reason }) if reason == "username/password mismatch"
        ));
    }
}

#[test]
fn malformed_pings_are_reported_as_such() {
    let mut five = Vec::new();
    put_array_len(&mut five, 5);
    for _ in 0..5 {
        put_str(&mut five, b"PING");
    }
    let mut six_int = Vec::new();
    put_array_len(&mut six_int, 6);
    put_str(&mut six_int, b"PING");
    six_int.extend_from_slice(&[0x01; 5]);
    for bytes in [five, six_int] {
        let (_, err) = decode_stream(&bytes, &Limits::default());
        let err = err.unwrap();
        assert!(
            matches!(err.kind(), DecodeErrorKind::MalformedPing { .. }),
            "{err}"
        );
        assert!(err.can_continue());
    }
    // A Message-mode event tagged PING is just an event.
    let mut event = Vec::new();
    put_array_len(&mut event, 3);
    put_str(&mut event, b"PING");
    event.push(0x01);
    put_map_len(&mut event, 0);
    let (got, _) = decode_stream(&event, &Limits::default());
    assert!(matches!(got.as_slice(), [Request::Events(_)]));
}

// ---------------------------------------------------------------------------------
// Encoders used by the property tests

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn packed_frame(tag: &[u8], payload: &[u8], compressed: Option<&str>) -> Vec<u8> {
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

fn option(frame: &mut Vec<u8>, chunk: Option<&[u8]>) {
    match chunk {
        Some(c) => {
            put_map_len(frame, 1);
            put_str(frame, b"chunk");
            put_str(frame, c);
        }
        None => frame.push(0xc0),
    }
}

fn message_frame(tag: &[u8], time: EventTime, record: &Value, chunk: Option<&[u8]>) -> Vec<u8> {
    let mut frame = Vec::new();
    put_array_len(&mut frame, 4);
    put_str(&mut frame, tag);
    put_time(&mut frame, time);
    put_value(&mut frame, record);
    option(&mut frame, chunk);
    frame
}

fn forward_frame(tag: &[u8], events: &[(EventTime, Value)], chunk: Option<&[u8]>) -> Vec<u8> {
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
fn sample_builder(n: u32) -> PackedForwardBuilder {
    let mut b = PackedForwardBuilder::new("t");
    for i in 0..n {
        b.push(
            EventTime::new(i64::from(i), 0),
            &Value::Map(vec![(Value::from("i"), Value::from(i))]),
        );
    }
    b
}

// ---------------------------------------------------------------------------------
// Property tests

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .prop_map(Value::F64),
        any::<f32>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .prop_map(Value::F32),
        "\\PC{0,12}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::Binary),
        (1i8..100, proptest::collection::vec(any::<u8>(), 0..9))
            .prop_map(|(t, d)| Value::Ext(t, d)),
    ]
}

fn key() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z_]{1,8}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 1..6).prop_map(Value::Binary),
    ]
}

fn record() -> impl Strategy<Value = Value> {
    let value = leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..4).prop_map(Value::Map),
        ]
    });
    proptest::collection::vec((key(), value), 0..5).prop_map(Value::Map)
}

fn event_time() -> impl Strategy<Value = EventTime> {
    // Up to (not including) the group-marker seconds.
    (0i64..0xffff_fffe, 0u32..1_000_000_000).prop_map(|(secs, nanos)| EventTime { secs, nanos })
}

fn events() -> impl Strategy<Value = Vec<(EventTime, Value)>> {
    proptest::collection::vec((event_time(), record()), 0..6)
}

fn chunk() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))
}

/// A valid request of any mode, with the requests it must decode to.
fn any_frame() -> impl Strategy<Value = (Vec<u8>, EventFrame)> {
    let tag = proptest::collection::vec(any::<u8>(), 0..20);
    (tag, events(), chunk(), 0..4u8).prop_map(|(tag, mut events, chunk, kind)| {
        let chunk = chunk.as_deref();
        let (bytes, mode) = match kind {
            0 => {
                events.truncate(1);
                if events.is_empty() {
                    events.push((EventTime::default(), Value::Map(vec![])));
                }
                let (time, record) = &events[0];
                (message_frame(&tag, *time, record, chunk), Mode::Message)
            }
            1 => (forward_frame(&tag, &events, chunk), Mode::Forward),
            _ => {
                let mut b = PackedForwardBuilder::new(tag.clone());
                for (time, record) in &events {
                    b.push(*time, record);
                }
                let (compression, mode) = if kind == 2 {
                    (Compression::None, Mode::PackedForward)
                } else {
                    (Compression::Gzip, Mode::CompressedPackedForward)
                };
                (b.finish(chunk, compression).to_vec(), mode)
            }
        };
        let packed = matches!(mode, Mode::PackedForward | Mode::CompressedPackedForward);
        let frame = EventFrame {
            wire_len: bytes.len(),
            tag: tag.into(),
            mode,
            entries: events
                .into_iter()
                .map(|(time, record)| Entry {
                    time,
                    record,
                    metadata: None,
                })
                .collect(),
            chunk: chunk.map(Bytes::copy_from_slice),
            size: None,
            fluent_signal: None,
            metadata: None,
        };
        let size = packed.then_some(frame.entries.len() as u64);
        (bytes, EventFrame { size, ..frame })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_round_trips((bytes, want) in any_frame()) {
        let (got, err) = decode_stream(&bytes, &Limits::default());
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(got, vec![Request::Events(want.clone())]);
        if let Some(chunk) = &want.chunk {
            let mut buf = BytesMut::from(&want.ack().unwrap()[..]);
            let ack = ResponseDecoder::new().decode(&mut buf).unwrap();
            prop_assert_eq!(ack, Some(Response::Ack(chunk.clone())));
        }
    }

    #[test]
    fn any_strict_prefix_is_need_more_and_leaves_the_buffer((bytes, _) in any_frame()) {
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::new();
        // Both a fresh decoder per prefix and one decoder resuming across prefixes.
        for end in 0..bytes.len() {
            let mut fresh = BytesMut::from(&bytes[..end]);
            prop_assert!(matches!(Decoder::default().decode(&mut fresh), Ok(None)));
            prop_assert_eq!(&fresh[..], &bytes[..end]);
            buf.extend_from_slice(&bytes[end..end + 1]);
            if end + 1 < bytes.len() {
                prop_assert!(matches!(decoder.decode(&mut buf), Ok(None)));
                prop_assert_eq!(&buf[..], &bytes[..end + 1]);
            }
        }
        prop_assert!(matches!(decoder.decode(&mut buf), Ok(Some(_))));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn any_feed_split_gives_the_same_requests(
        frames in proptest::collection::vec(any_frame(), 1..5),
        heartbeat in any::<bool>(),
        step in 1usize..40,
    ) {
        let mut stream = Vec::new();
        for (bytes, _) in &frames {
            stream.extend_from_slice(bytes);
            if heartbeat {
                stream.push(0xc0);
            }
        }
        let whole = decode_stream(&stream, &Limits::default());
        prop_assert!(whole.1.is_none());
        prop_assert_eq!(whole.0.len(), frames.len() * if heartbeat { 2 } else { 1 });
        let bytewise = decode_in_steps(&stream, 1, &Limits::default());
        prop_assert_eq!(&bytewise.0, &whole.0);
        let stepped = decode_in_steps(&stream, step, &Limits::default());
        prop_assert_eq!(&stepped.0, &whole.0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_stream(&bytes, &Limits::default());
        let _ = decode_in_steps(&bytes, 3, &Limits::default());
        let mut buf = BytesMut::from(&bytes[..]);
        let mut d = ResponseDecoder::new();
        while let Ok(Some(_)) = d.decode(&mut buf) {}
    }
}
