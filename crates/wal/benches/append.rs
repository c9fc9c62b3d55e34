//! Append throughput over a record-size × batch-size matrix, `Fsync::Interval`
//! (1 s), each batch acknowledged right away so the directory stays small.
//! `raw_write_all` is the baseline in the same run: the same payload bytes,
//! one `write_all` per batch to a plain file, `fdatasync` once a second, and
//! every 64 MiB a new file with the old one deleted (as the WAL does with acked
//! segments; truncating in place would drop dirty pages and flatter the
//! baseline). Compare the two lines of a size/batch pair.

use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_wal::{Fsync, Options, Wal};

const RECORD_SIZES: [usize; 3] = [100, 1024, 64 * 1024];
const BATCH_SIZES: [usize; 3] = [1, 16, 128];
const SYNC_PERIOD: Duration = Duration::from_secs(1);
const SEGMENT_BYTES: u64 = 64 << 20;

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for size in RECORD_SIZES {
        for batch in BATCH_SIZES {
            let payloads: Vec<Vec<u8>> = (0..batch).map(|i| vec![i as u8; size]).collect();
            let id = format!("{size}B_x{batch}");
            group.throughput(Throughput::Bytes((size * batch) as u64));
            let dir = tempfile::tempdir().expect("tempdir");

            let opts = Options {
                fsync: Fsync::Interval(SYNC_PERIOD),
                segment_bytes: SEGMENT_BYTES,
                ..Options::default()
            };
            let mut wal = Wal::open(dir.path().join("wal"), opts).expect("open wal");
            group.bench_function(BenchmarkId::new("wal", &id), |b| {
                b.iter(|| {
                    let seqs = wal.append_batch(&payloads).expect("append");
                    for seq in seqs {
                        wal.ack(seq).expect("ack");
                    }
                })
            });
            wal.close().expect("close");

            let flat = payloads.concat();
            let raw = |n: u64| dir.path().join(format!("raw{n}"));
            let mut file_no = 0;
            let mut file = File::create(raw(file_no)).expect("create raw");
            let mut written = 0u64;
            let mut last_sync = Instant::now();
            group.bench_function(BenchmarkId::new("raw_write_all", &id), |b| {
                b.iter(|| {
                    if written >= SEGMENT_BYTES {
                        file_no += 1;
                        file = File::create(raw(file_no)).expect("create raw");
                        std::fs::remove_file(raw(file_no - 1)).expect("remove raw");
                        written = 0;
                    }
                    file.write_all(&flat).expect("write");
                    written += flat.len() as u64;
                    if last_sync.elapsed() >= SYNC_PERIOD {
                        file.sync_data().expect("sync");
                        last_sync = Instant::now();
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
