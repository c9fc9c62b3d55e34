use super::*;

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    put_value(&mut out, v);
    out
}

#[test]
fn every_marker_parses_or_needs_more_without_panicking() {
    for m in 0..=255u8 {
        let mut buf = vec![m];
        // Truncated header: either parsed (1-byte header), need-more or 0xc1.
        let _ = parse_header(&buf);
        buf.extend_from_slice(&[0; 16]);
        match parse_header(&buf) {
            Ok(Some((_, n))) => assert!(n <= 9, "marker {m:#x}"),
            Ok(None) => panic!("marker {m:#x} needs more than 17 bytes"),
            Err(InvalidMarker(b)) => assert_eq!(b, 0xc1),
        }
    }
}

#[test]
fn encoder_round_trips_through_reader_with_minimal_headers() {
    let v = Value::Map(vec![
        (Value::from("a"), Value::from(-33)),
        (Value::from("u"), Value::from(u64::MAX)),
        (Value::from("i"), Value::from(i64::MIN)),
        (
            Value::Binary(vec![0; 300]),
            Value::Array(vec![Value::Nil; 20]),
        ),
        (Value::from("e"), Value::Ext(0, vec![1; 8])),
        (Value::from("x"), Value::Ext(5, vec![1; 3])),
        (Value::from("f"), Value::F32(1.5)),
        (Value::from("s"), Value::from("x".repeat(70_000))),
    ]);
    let bytes = encode(&v);
    let mut r = Reader::new(&bytes);
    assert_eq!(r.value(8).unwrap(), v);
    assert_eq!(r.remaining(), 0);
    assert_eq!(encode(&Value::from(5)), [0x05]);
    assert_eq!(encode(&Value::from(-1)), [0xff]);
    assert_eq!(encode(&Value::from(200)), [0xcc, 200]);
    assert_eq!(encode(&Value::from(-100)), [0xd0, 0x9c]);
}

#[test]
fn reader_keeps_invalid_utf8_str_as_str_bytes() {
    let bytes = [0xa3, 0xff, 0xfe, 0xfd];
    let v = Reader::new(&bytes).value(1).unwrap();
    let Value::String(s) = &v else {
        panic!("{v:?}")
    };
    assert_eq!(s.as_bytes(), &[0xff, 0xfe, 0xfd]);
    assert_eq!(encode(&v), bytes);
}

#[test]
fn reader_rejects_depth_and_truncation_without_large_allocation() {
    let nested = [0x91u8; 10];
    assert_eq!(Reader::new(&nested).value(4), Err(ReadError::TooDeep));
    // array32 of 4 G elements followed by nothing: Eof, capacity capped at 0.
    let huge = [0xdd, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(Reader::new(&huge).value(4), Err(ReadError::Eof));
    assert_eq!(Reader::new(&huge).skip(), Err(ReadError::Eof));
    assert_eq!(
        Reader::new(&[0xc1]).skip(),
        Err(ReadError::InvalidMarker(0xc1))
    );
}

#[test]
fn scanner_resumes_and_finds_the_exact_boundary() {
    let v = Value::Array(vec![Value::from("tag"), Value::Binary(vec![7; 100])]);
    let mut bytes = encode(&v);
    let len = bytes.len();
    bytes.extend_from_slice(&[0xc0, 0xc0]);
    let mut s = Scanner::default();
    for end in 0..len {
        assert_eq!(
            s.scan(&bytes[..end], 1 << 20, 8),
            Ok(Scan::NeedMore),
            "{end}"
        );
    }
    assert_eq!(s.scan(&bytes, 1 << 20, 8), Ok(Scan::Complete(len)));
    assert!(!s.in_progress());
    let top = s.last_top_offsets();
    assert_eq!(
        (top.get(0), top.get(1), top.get(2)),
        (Some(1), Some(5), None)
    );
}

#[test]
fn scanner_rejects_oversized_claims_before_the_bytes_arrive() {
    let mut s = Scanner::default();
    let array32 = [0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0];
    assert!(matches!(
        s.scan(&array32, 1 << 20, 8),
        Err(ScanError::TooLarge { .. })
    ));
    let str32 = [0x92, 0xa1, b't', 0xdb, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        s.scan(&str32, 1 << 20, 8),
        Err(ScanError::TooLarge { .. })
    ));
    let deep = [0x91u8; 100];
    assert_eq!(s.scan(&deep, 1 << 20, 8), Err(ScanError::TooDeep));
    assert_eq!(
        s.scan(&[0x92, 0xc0, 0xc1], 1 << 20, 8),
        Err(ScanError::InvalidMarker {
            byte: 0xc1,
            offset: 2
        })
    );
    // Exactly at the limit is fine, one byte over is not.
    assert_eq!(s.scan(&[0x92, 0xc0, 0xc0], 3, 8), Ok(Scan::Complete(3)));
    assert!(s.scan(&[0x93, 0xc0, 0xc0, 0xc0], 3, 8).is_err());
}

#[test]
fn scanner_restarts_when_the_buffer_shrinks() {
    let mut s = Scanner::default();
    assert_eq!(s.scan(&[0x92, 0xc0], 100, 8), Ok(Scan::NeedMore));
    assert_eq!(s.scan(&[0xc0], 100, 8), Ok(Scan::Complete(1)));
}
