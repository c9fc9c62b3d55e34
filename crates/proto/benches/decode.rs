//! Forward decode throughput per mode, plus PackedForward encoding. Each input
//! carries the same 1 000 typical log events, so the modes' figures compare directly;
//! criterion prints events/s ("elem/s"); the input sizes are printed first, so
//! MB/s = size / time per iteration.
//!
//! The decoder is zero-copy: records stay slices of the request ([`RawMap`]). Two
//! consumer passes run on the PackedForward request next to it, in the same process:
//! `PackedForward+body` also looks each record's `message` up (the forward source's
//! per-event work), `PackedForward+to_values` decodes every record into an owned
//! `rmpv::Value` tree (what the decoder did before, ~5 allocations per event), and a
//! plain `rmpv::decode::read_value` of the Forward request is the baseline.
//!
//! Run: `cargo bench -p sluice-proto --bench decode`
//! (quick look: append `-- --warm-up-time 1 --measurement-time 3`).

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rmpv::Value;
use sluice_proto::forward::{
    Compression, Decoder, EventFrame, EventTime, PackedForwardBuilder, RawMap, Request,
};

const EVENTS: u32 = 1_000;
const TAG: &str = "app.web.access";

fn record(i: u32) -> Value {
    Value::Map(vec![
        (
            Value::from("message"),
            Value::from(format!(
                "GET /api/v1/items/{i} HTTP/1.1 200 {} \"Mozilla/5.0 (X11; Linux x86_64)\"",
                512 + i % 977
            )),
        ),
        (Value::from("level"), Value::from("info")),
        (Value::from("host"), Value::from("web-03.example.internal")),
        (Value::from("pid"), Value::from(4242)),
        (
            Value::from("latency_ms"),
            Value::F64(f64::from(i % 250) / 7.0),
        ),
        (
            Value::from("kubernetes"),
            Value::Map(vec![
                (Value::from("namespace"), Value::from("prod")),
                (Value::from("pod"), Value::from(format!("web-{}", i % 16))),
            ]),
        ),
    ])
}

fn time(i: u32) -> EventTime {
    EventTime::new(1_700_000_000 + i64::from(i / 100), i * 997)
}

fn event_time_value(t: EventTime) -> Value {
    let mut data = (t.secs as u32).to_be_bytes().to_vec();
    data.extend_from_slice(&t.nanos.to_be_bytes());
    Value::Ext(0, data)
}

fn write(v: &Value, out: &mut Vec<u8>) {
    rmpv::encode::write_value(out, v).expect("writing into a Vec cannot fail");
}

fn chunk_option() -> Value {
    Value::Map(vec![(
        Value::from("chunk"),
        Value::from("EBESExQVFhcYGRobHB0eHw=="),
    )])
}

/// 1 000 Message requests back to back (fluent-logger style).
fn message_stream() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..EVENTS {
        let request = Value::Array(vec![Value::from(TAG), event_time_value(time(i)), record(i)]);
        write(&request, &mut out);
    }
    out
}

/// One Forward request of 1 000 entries (Fluent Bit's default output).
fn forward_request() -> Vec<u8> {
    let entries = (0..EVENTS)
        .map(|i| Value::Array(vec![event_time_value(time(i)), record(i)]))
        .collect();
    let request = Value::Array(vec![
        Value::from(TAG),
        Value::Array(entries),
        chunk_option(),
    ]);
    let mut out = Vec::new();
    write(&request, &mut out);
    out
}

/// One (Compressed)PackedForward request of 1 000 entries (Fluentd's output).
fn packed_request(compression: Compression) -> Vec<u8> {
    let mut b = PackedForwardBuilder::new(TAG);
    for i in 0..EVENTS {
        b.push(time(i), &record(i));
    }
    b.finish(Some(b"EBESExQVFhcYGRobHB0eHw=="), compression)
        .to_vec()
}

/// Decodes every request in `bytes`, handing each frame to `consume`; returns the
/// number of events.
fn decode_with(mut buf: BytesMut, mut consume: impl FnMut(&EventFrame) -> usize) -> usize {
    let mut decoder = Decoder::default();
    let mut events = 0;
    while let Some(request) = decoder.decode(&mut buf).expect("bench input is valid") {
        if let Request::Events(frame) = request {
            events += consume(&frame);
        }
    }
    events
}

fn decode_all(buf: BytesMut) -> usize {
    decode_with(buf, |f| f.entries.len())
}

/// The forward source's per-event lookup: the `message` value of each record.
fn body_lookup(f: &EventFrame) -> usize {
    f.entries
        .iter()
        .filter(|e| record_body(&e.record).is_some())
        .count()
}

fn record_body(r: &RawMap) -> Option<&[u8]> {
    r.get(b"message").and_then(|v| v.as_bytes())
}

/// What decoding cost before records stayed raw: an owned value tree per record.
fn to_values(f: &EventFrame) -> usize {
    let mut n = 0;
    for e in &f.entries {
        std::hint::black_box(e.record.to_value());
        n += 1;
    }
    n
}

fn decode(c: &mut Criterion) {
    let inputs = [
        ("Message", message_stream()),
        ("Forward", forward_request()),
        ("PackedForward", packed_request(Compression::None)),
        ("CompressedPackedForward", packed_request(Compression::Gzip)),
    ];
    let mut group = c.benchmark_group("forward_decode");
    group.throughput(Throughput::Elements(u64::from(EVENTS)));
    for (mode, bytes) in &inputs {
        eprintln!("input {mode}: {} bytes", bytes.len());
        assert_eq!(decode_all(BytesMut::from(&bytes[..])), EVENTS as usize);
        group.bench_function(*mode, |b| {
            b.iter_batched(
                || BytesMut::from(&bytes[..]),
                decode_all,
                BatchSize::SmallInput,
            )
        });
    }
    let packed = &inputs[2].1;
    type Consumer = fn(&EventFrame) -> usize;
    let passes: [(&str, Consumer); 2] = [
        ("PackedForward+body", body_lookup),
        ("PackedForward+to_values", to_values),
    ];
    for (name, pass) in passes {
        assert_eq!(
            decode_with(BytesMut::from(&packed[..]), pass),
            EVENTS as usize
        );
        group.bench_function(name, |b| {
            b.iter_batched(
                || BytesMut::from(&packed[..]),
                |buf| decode_with(buf, pass),
                BatchSize::SmallInput,
            )
        });
    }
    // Baseline in the same run (the machine is noisy): plain rmpv decoding of the
    // Forward request into one Value tree, no protocol checks.
    let forward = &inputs[1].1;
    group.bench_function("baseline_rmpv_read_value_Forward", |b| {
        b.iter(|| rmpv::decode::read_value(&mut &forward[..]).expect("valid msgpack"))
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let records: Vec<_> = (0..EVENTS).map(|i| (time(i), record(i))).collect();
    let mut group = c.benchmark_group("forward_encode");
    for (name, compression) in [
        ("PackedForward", Compression::None),
        ("Gzip", Compression::Gzip),
    ] {
        let len = packed_request(Compression::None).len();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut builder = PackedForwardBuilder::new(TAG);
                for (t, r) in &records {
                    builder.push(*t, r);
                }
                builder.finish(Some(b"EBESExQVFhcYGRobHB0eHw=="), compression)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
