//! Forward decode throughput per mode (wire bytes per second), plus PackedForward
//! encoding. Each input carries the same 1 000 typical log events, so the modes'
//! figures compare directly (events/s = 1 000 / time per iteration). A plain
//! `rmpv::decode::read_value` of the Forward request runs alongside as a baseline.
//!
//! Run: `cargo bench -p sluice-proto --bench decode`
//! (quick look: append `-- --warm-up-time 1 --measurement-time 3`).

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rmpv::Value;
use sluice_proto::forward::{Compression, Decoder, EventTime, PackedForwardBuilder, Request};

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

/// Decodes every request in `bytes`; returns the number of events.
fn decode_all(mut buf: BytesMut) -> usize {
    let mut decoder = Decoder::default();
    let mut events = 0;
    while let Some(request) = decoder.decode(&mut buf).expect("bench input is valid") {
        if let Request::Events(frame) = request {
            events += frame.entries.len();
        }
    }
    events
}

fn decode(c: &mut Criterion) {
    let inputs = [
        ("Message", message_stream()),
        ("Forward", forward_request()),
        ("PackedForward", packed_request(Compression::None)),
        ("CompressedPackedForward", packed_request(Compression::Gzip)),
    ];
    let mut group = c.benchmark_group("forward_decode");
    for (mode, bytes) in &inputs {
        assert_eq!(decode_all(BytesMut::from(&bytes[..])), EVENTS as usize);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(*mode, |b| {
            b.iter_batched(
                || BytesMut::from(&bytes[..]),
                decode_all,
                BatchSize::SmallInput,
            )
        });
    }
    // Baseline in the same run (the machine is noisy): plain rmpv decoding of the
    // Forward request into one Value tree, no protocol checks.
    let forward = &inputs[1].1;
    group.throughput(Throughput::Bytes(forward.len() as u64));
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
