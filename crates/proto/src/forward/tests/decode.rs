//! Decoder unit tests: arity, times, group markers, signals, limits, error text, and
//! the client-side response decoder.

use bytes::{Bytes, BytesMut};

use super::super::entry::float_time;
use super::super::{
    DecodeError, DecodeErrorKind, Decoder, EventTime, Limits, Request, Response, ResponseDecoder,
    TimeError,
};

fn decode_all(bytes: &[u8], limits: Limits) -> Result<Request, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let mut decoder = Decoder::new(limits);
    let request = decoder.decode_eof(&mut buf)?.expect("a request");
    assert!(buf.is_empty(), "{} bytes left", buf.len());
    Ok(request)
}

fn err(bytes: &[u8]) -> DecodeError {
    decode_all(bytes, Limits::default()).unwrap_err()
}

/// `[tag, time, record, option]` with an extra fifth element.
#[test]
fn five_element_request_is_wrong_arity() {
    let bytes = [0x95, 0xa1, b't', 0x01, 0x80, 0x80, 0xc0];
    assert!(matches!(
        err(&bytes).kind(),
        DecodeErrorKind::WrongArity { len: 5 }
    ));
    let forward = [0x94, 0xa1, b't', 0x90, 0x80, 0xc0];
    assert!(matches!(
        err(&forward).kind(),
        DecodeErrorKind::WrongArity { len: 4 }
    ));
}

#[test]
fn float_times_round_to_the_nearest_nanosecond() {
    assert_eq!(
        float_time(1.25).unwrap(),
        EventTime {
            secs: 1,
            nanos: 250_000_000
        }
    );
    assert_eq!(
        float_time(-0.5).unwrap(),
        EventTime {
            secs: -1,
            nanos: 500_000_000
        }
    );
    // Rounds up into the next second.
    assert_eq!(
        float_time(0.999_999_999_9).unwrap(),
        EventTime { secs: 1, nanos: 0 }
    );
    assert!(float_time(f64::NAN).is_err());
    assert!(float_time(1e19).is_err());
}

#[test]
fn nanoseconds_of_one_billion_are_rejected() {
    let mut bytes = vec![0x93, 0xa1, b't', 0xd7, 0x00, 0, 0, 0, 1];
    bytes.extend_from_slice(&1_000_000_000u32.to_be_bytes());
    bytes.push(0x80);
    assert!(matches!(
        err(&bytes).kind(),
        DecodeErrorKind::InvalidTime(TimeError::Nanos(1_000_000_000))
    ));
}

#[test]
fn group_markers_are_dropped_from_forward_entries() {
    // [t, [[[marker, {}], {}], [1, {"a": 1}]]]
    let mut bytes = vec![0x92, 0xa1, b't', 0x92, 0x92, 0x92, 0xd7, 0x00];
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0x80]);
    bytes.extend_from_slice(&[0x92, 0x01, 0x81, 0xa1, b'a', 0x01]);
    let Request::Events(frame) = decode_all(&bytes, Limits::default()).unwrap() else {
        panic!()
    };
    assert_eq!(frame.entries.len(), 1);
    assert_eq!(frame.entries[0].time, EventTime { secs: 1, nanos: 0 });
}

/// PackedForward `[t, bin(entries)]`.
fn packed(entries: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x92, 0xa1, b't', 0xc4, entries.len() as u8];
    bytes.extend_from_slice(entries);
    bytes
}

/// `[EventTime(secs, nanos), record]` as Fluentd packs it (the decoder's fast path).
fn event_time_entry(secs: u32, nanos: u32, record: &[u8]) -> Vec<u8> {
    let mut e = vec![0x92, 0xd7, 0x00];
    e.extend_from_slice(&secs.to_be_bytes());
    e.extend_from_slice(&nanos.to_be_bytes());
    e.extend_from_slice(record);
    e
}

#[test]
fn packed_event_time_entries_keep_every_check() {
    let mut entries = event_time_entry(0xffff_fffe, 0, &[0x80]);
    entries.extend(event_time_entry(5, 7, &[0x81, 0xa1, b'a', 0x01]));
    let Request::Events(frame) = decode_all(&packed(&entries), Limits::default()).unwrap() else {
        panic!()
    };
    assert_eq!(frame.entries.len(), 1, "group marker dropped");
    assert_eq!(frame.entries[0].time, EventTime { secs: 5, nanos: 7 });
    assert_eq!(
        frame.entries[0].record.get(b"a"),
        Some(super::super::RawValue::Uint(1))
    );

    let bad_nanos = event_time_entry(5, 1_000_000_000, &[0x80]);
    assert!(matches!(
        err(&packed(&bad_nanos)).kind(),
        DecodeErrorKind::InvalidTime(TimeError::Nanos(1_000_000_000))
    ));
    let not_map = event_time_entry(5, 0, &[0x01]);
    assert!(matches!(
        err(&packed(&not_map)).kind(),
        DecodeErrorKind::RecordNotMap { found: "integer" }
    ));
    // The map claims two pairs, holds one: truncated, not read past the entry.
    let short = event_time_entry(5, 0, &[0x82, 0xa1, b'a', 0x01]);
    assert!(matches!(
        err(&packed(&short)).kind(),
        DecodeErrorKind::TruncatedEntries
    ));
    let deep = event_time_entry(5, 0, &[0x81, 0xa1, b'a', 0x91, 0x91, 0x91, 0xc0]);
    let limits = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    let mut buf = BytesMut::from(&packed(&deep)[..]);
    let e = Decoder::new(limits).decode(&mut buf).unwrap_err();
    assert!(
        matches!(e.kind(), DecodeErrorKind::TooDeep { limit: 3 }),
        "{e}"
    );
}

#[test]
fn fluent_signal_other_than_logs_is_rejected_before_entries() {
    // PackedForward whose payload is not entries, with fluent_signal 1 (metrics).
    let mut bytes = vec![0x93, 0xa1, b't', 0xc4, 0x01, 0x05, 0x81];
    bytes.extend_from_slice(b"\xadfluent_signal\x01");
    assert!(matches!(
        err(&bytes).kind(),
        DecodeErrorKind::UnsupportedSignal(1)
    ));
}

#[test]
fn oversized_requests_fail_at_the_header_not_after_buffering() {
    let limits = Limits {
        max_frame_bytes: 100,
        ..Limits::default()
    };
    let mut buf = BytesMut::from(&[0x92, 0xa1, b't', 0xc5, 0x01, 0x00][..]);
    let err = Decoder::new(limits).decode(&mut buf).unwrap_err();
    assert!(matches!(
        err.kind(),
        DecodeErrorKind::FrameTooLarge { declared: 262, .. }
    ));
    assert!(!err.can_continue());
}

#[test]
fn too_many_entries_is_checked_against_the_header() {
    let limits = Limits {
        max_entries_per_frame: 2,
        ..Limits::default()
    };
    let mut bytes = vec![0x92, 0xa1, b't', 0x93];
    for _ in 0..3 {
        bytes.extend_from_slice(&[0x92, 0x01, 0x80]);
    }
    let err = decode_all(&bytes, limits.clone()).unwrap_err();
    assert!(matches!(
        err.kind(),
        DecodeErrorKind::TooManyEntries { limit: 2 }
    ));
    assert!(err.can_continue());
    // The same entries packed.
    let mut packed = vec![0x92, 0xa1, b't', 0xc4, 9];
    packed.extend_from_slice(&bytes[4..]);
    let err = decode_all(&packed, limits).unwrap_err();
    assert!(matches!(
        err.kind(),
        DecodeErrorKind::TooManyEntries { limit: 2 }
    ));
}

#[test]
fn error_display_names_offset_tag_mode_and_entry() {
    let mut buf = BytesMut::from(&b"\xc0\x92\xa3a\xffb\xc4\x03\x01\xa1x"[..]);
    let mut decoder = Decoder::default();
    assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Request::Heartbeat));
    let err = decoder.decode(&mut buf).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid entry: entry is not an array (request at stream offset 1, \
         tag \"a\\xffb\", PackedForward mode, entry 0)"
    );
    assert_eq!(err.entry_index(), Some(0));
    assert_eq!(decoder.stream_offset(), 11);
}

#[test]
fn response_decoder_reads_acks_and_rejects_other_maps() {
    let mut buf = BytesMut::from(&b"\x81\xa3ack\xa2id\x81\xa1x\x01"[..]);
    let mut d = ResponseDecoder::new();
    assert_eq!(
        d.decode(&mut buf).unwrap(),
        Some(Response::Ack(Bytes::from_static(b"id")))
    );
    let err = d.decode(&mut buf).unwrap_err();
    assert!(matches!(
        err.kind(),
        DecodeErrorKind::MalformedResponse { .. }
    ));
    assert!(buf.is_empty());
}
