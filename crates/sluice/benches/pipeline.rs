//! Hot-path micro benchmarks: line framing, encodings, buffer hand-off.
//! `cargo bench -p sluice --bench pipeline`

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice::ack::AckToken;
use sluice::buffer::{self, WhenFull};
use sluice::encoding::Encoding;
use sluice::event::{Event, EventBatch};
use sluice::framing::LineFramer;
use sluice::metrics::Counters;

fn input(lines: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(lines * 100);
    for i in 0..lines {
        v.extend_from_slice(format!("{i:099}\n").as_bytes());
    }
    v
}

fn framing(c: &mut Criterion) {
    let data = input(10_000);
    let mut g = c.benchmark_group("framing");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("100B_lines_256KiB_reads", |b| {
        b.iter(|| {
            let mut f = LineFramer::new(1 << 20);
            let mut n = 0usize;
            for chunk in data.chunks(256 * 1024) {
                f.buffer().extend_from_slice(chunk);
                f.drain_lines(&mut |l: Bytes| n += l.len());
            }
            black_box(n)
        })
    });
    g.finish();
}

fn encodings(c: &mut Criterion) {
    let events: Vec<Event> = (0..1000)
        .map(|i| {
            Event::new(
                Bytes::from(format!("{i:099}")),
                1_700_000_000_000_000_000,
                "app".into(),
                "s".into(),
            )
        })
        .collect();
    let mut g = c.benchmark_group("encode_1000_events");
    g.throughput(Throughput::Elements(events.len() as u64));
    for enc in [
        Encoding::Raw,
        Encoding::Json,
        Encoding::LogstashJson,
        Encoding::Msgpack,
    ] {
        let mut out = Vec::with_capacity(1 << 20);
        g.bench_function(format!("{enc:?}"), |b| {
            b.iter(|| {
                out.clear();
                for e in &events {
                    enc.encode(e, &mut out, true);
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn buffer_handoff(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ev = Event::new(Bytes::from_static(&[b'x'; 99]), 0, "t".into(), "s".into());
    let batch: Vec<Event> = vec![ev; 1000];
    let mut g = c.benchmark_group("buffer");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("send_recv_batch_of_1000", |b| {
        let (tx, mut rx) = buffer::memory(100_000, WhenFull::Block, Arc::new(Counters::default()));
        b.iter(|| {
            rt.block_on(async {
                tx.send(EventBatch::new(batch.clone(), AckToken::none()), true)
                    .await;
                let got = rx.recv().await.unwrap();
                let n = got.len();
                got.ack.resolve(sluice::ack::AckStatus::Delivered);
                black_box(n)
            })
        })
    });
    g.finish();
}

criterion_group!(benches, framing, encodings, buffer_handoff);
criterion_main!(benches);
