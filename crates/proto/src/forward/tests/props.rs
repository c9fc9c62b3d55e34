//! Property tests: encode → decode round trips, strict prefixes are need-more, any
//! feed split gives the same requests, arbitrary bytes never panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rmpv::Value;

use super::*;

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
            inflated_len: 0,
            tag: tag.into(),
            mode,
            entries: events
                .into_iter()
                .map(|(time, record)| Entry {
                    time,
                    record: RawMap::encode(record.as_map().expect("records are maps")),
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
        let (mut got, err) = decode_stream(&bytes, &Limits::default());
        prop_assert!(err.is_none(), "{:?}", err);
        // The inflated size is the decoder's to know: present exactly when compressed.
        if let [Request::Events(f)] = &mut got[..] {
            let compressed = f.mode == Mode::CompressedPackedForward && !f.entries.is_empty();
            prop_assert_eq!(f.inflated_len > 0, compressed);
            prop_assert!(f.pinned_bytes() >= f.wire_len + f.inflated_len);
            f.inflated_len = 0;
        }
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
