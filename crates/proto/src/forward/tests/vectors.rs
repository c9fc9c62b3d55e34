//! Every request, stream, captured, heartbeat and bad vector against expected.json,
//! plus compression and metadata cases the vectors do not cover.

use bytes::BytesMut;
use rmpv::Value;
use serde_json::Value as Json;

use super::*;

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
    let meta_raw = RawMap::encode(meta.as_map().unwrap());
    assert_eq!(f.entries[0].metadata.as_ref(), Some(&meta_raw));
    assert_eq!(f.metadata_for(&f.entries[0]), Some(&meta_raw));

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
        (Some(&meta_raw), Some(0))
    );
    assert_eq!(f.metadata_for(&f.entries[0]), Some(&meta_raw));
    assert_eq!(f.metadata_for(&f.entries[0]).unwrap().to_value(), meta);
}
