//! Syslog parse throughput: 10,000 typical RFC 5424 lines (with structured data) and
//! 10,000 RFC 3164 lines (~100-150 bytes), parsed one by one; and the octet-counting
//! framer cutting the same 5424 lines out of one stream. Criterion prints messages/s
//! ("elem/s"). Every parsed message is consumed (its slices' lengths summed, its
//! structured data walked) so nothing is optimised away.
//!
//! Run: `cargo bench -p sluice-proto --bench syslog`
//! (quick look: append `-- --warm-up-time 1 --measurement-time 3`).

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sluice_proto::syslog::framing::{Framer, Framing};
use sluice_proto::syslog::{Options, parse};

const N: usize = 10_000;

fn rfc5424(i: usize) -> String {
    format!(
        "<165>1 2026-12-07T01:37:{:02}.{:06}Z web-{:02}.example.internal nginx {} ACCESS \
         [req@32473 id=\"{i:08x}\" status=\"200\"] GET /api/v1/items/{i} HTTP/1.1 200 {}",
        i % 60,
        i % 1_000_000,
        i % 16,
        1000 + i % 5000,
        512 + i % 977
    )
}

fn rfc3164(i: usize) -> String {
    format!(
        "<86>Dec {:>2} 01:37:{:02} web-{:02} sshd[{}]: Accepted publickey for deploy from 10.0.{}.{} port {} ssh2",
        1 + i % 28,
        i % 60,
        i % 16,
        1000 + i % 5000,
        i % 256,
        (i / 256) % 256,
        40_000 + i % 20_000
    )
}

fn consume(line: &[u8], options: &Options) -> usize {
    match parse(line, options) {
        Ok(m) => {
            let mut n = m.msg.len() + m.hostname.map_or(0, <[u8]>::len);
            for e in m.structured_data.elements() {
                n += e.params().map(|p| p.value.raw().len()).sum::<usize>();
            }
            n
        }
        Err(_) => 0,
    }
}

fn bench(c: &mut Criterion) {
    let options = Options {
        now_secs: 1_796_607_434,
        utc_offset_secs: 0,
    };
    let l5424: Vec<String> = (0..N).map(rfc5424).collect();
    let l3164: Vec<String> = (0..N).map(rfc3164).collect();
    let avg = |v: &[String]| v.iter().map(String::len).sum::<usize>() / v.len();
    println!(
        "syslog bench: {N} lines each; RFC 5424 avg {} B, RFC 3164 avg {} B",
        avg(&l5424),
        avg(&l3164)
    );
    let mut g = c.benchmark_group("syslog");
    g.throughput(Throughput::Elements(N as u64));
    for (name, lines) in [("parse_rfc5424", &l5424), ("parse_rfc3164", &l3164)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                lines
                    .iter()
                    .map(|l| consume(black_box(l.as_bytes()), &options))
                    .sum::<usize>()
            })
        });
    }
    let mut stream = Vec::new();
    for l in &l5424 {
        stream.extend_from_slice(format!("{} {l}", l.len()).as_bytes());
    }
    g.bench_function("frame_octet_counting_rfc5424", |b| {
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            |mut buf| {
                let mut framer = Framer::new(Framing::Auto, 65536);
                let mut n = 0;
                while let Ok(Some(f)) = framer.decode(&mut buf) {
                    n += f.bytes.len();
                }
                n
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
