//! The WAL figure: append + read back + acknowledge through the WAL,
//! against a plain sequential `write_all` of the same payload bytes to a file
//! with the same fsync cadence, in the same process, rounds alternating which
//! goes first. Prints per configuration the median MB/s of each and the median
//! of the per-round ratios (WAL / raw; goal ≥ 0.8).
//!
//! - `interval`: `Fsync::Interval(100 ms)`, and the owner's `sync()` (data,
//!   directory, checkpoint) every 100 ms as the disk buffer's thread does; raw:
//!   `fdatasync` every 100 ms.
//! - `always`: one fdatasync per appended batch on both sides.
//!
//! Both sides start a new file every 64 MiB and delete the old one (the WAL
//! deletes acknowledged segments), so neither rewrites cached pages.
//!
//! Timed: from the first append to the end of `close` (the final sync and
//! checkpoint) for the WAL, from the first write to the final `fdatasync` for
//! raw; opening the WAL (directory, lock, first segment) is not timed. Runs
//! must span many sync periods, or the fixed cost of the final syncs
//! dominates.
//!
//! `cargo bench -p sluice-wal --bench append_read` (env: `WAL_BENCH_MB`, MiB
//! per side and round with `interval`, default 256 (an eighth of it with
//! `always`); `WAL_BENCH_ROUNDS`, default 5; `WAL_BENCH_DIR`, default the
//! system temp dir).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_wal::{Fsync, Options, Wal};

const SEGMENT_BYTES: u64 = 64 << 20;
const PERIOD: Duration = Duration::from_millis(100);

#[derive(Clone, Copy)]
struct Case {
    record: usize,
    batch: usize,
    always: bool,
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing
    // else: run a tiny smoke version then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let mb = if smoke { 1 } else { env("WAL_BENCH_MB", 256) };
    let rounds = if smoke { 1 } else { env("WAL_BENCH_ROUNDS", 5) };
    let base = std::env::var_os("WAL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let cases = [
        Case {
            record: 100,
            batch: 128,
            always: false,
        },
        Case {
            record: 1024,
            batch: 128,
            always: false,
        },
        Case {
            record: 65536,
            batch: 1,
            always: false,
        },
        Case {
            record: 1024,
            batch: 128,
            always: true,
        },
        Case {
            record: 65536,
            batch: 4,
            always: true,
        },
    ];
    println!(
        "WAL append+read vs raw write_all, {mb} MiB (interval) / {} MiB (always) per side per round, \
         medians of {rounds} rounds",
        (mb / 8).max(1)
    );
    println!(
        "{:<8} {:>7} {:>6} {:>10} {:>10} {:>8}  per-round ratios",
        "fsync", "record", "batch", "wal_MB/s", "raw_MB/s", "ratio"
    );
    for case in cases {
        let payloads: Vec<Vec<u8>> = (0..case.batch)
            .map(|i| (0..case.record).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let batch_bytes = case.record * case.batch;
        let case_mb = if case.always { (mb / 8).max(1) } else { mb };
        let batches = ((case_mb << 20) / batch_bytes).max(1);
        let bytes = (batches * batch_bytes) as f64;
        let (mut wal_mbs, mut raw_mbs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let dir = tempfile::tempdir_in(&base).expect("temp dir");
            let (w, r) = if round % 2 == 0 {
                let w = run_wal(dir.path(), &payloads, batches, case.always);
                (w, run_raw(dir.path(), &payloads, batches, case.always))
            } else {
                let r = run_raw(dir.path(), &payloads, batches, case.always);
                (run_wal(dir.path(), &payloads, batches, case.always), r)
            };
            wal_mbs.push(bytes / w.as_secs_f64() / 1e6);
            raw_mbs.push(bytes / r.as_secs_f64() / 1e6);
            ratios.push(r.as_secs_f64() / w.as_secs_f64());
        }
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{:<8} {:>7} {:>6} {:>10.0} {:>10.0} {:>7.2}x  {}",
            if case.always { "always" } else { "interval" },
            case.record,
            case.batch,
            median(&mut wal_mbs),
            median(&mut raw_mbs),
            median(&mut ratios),
            shown.join(" ")
        );
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Append each batch, read back what was appended, acknowledge it; sync on
/// the period as the disk buffer's thread does. Ends with everything synced.
fn run_wal(dir: &Path, payloads: &[Vec<u8>], batches: usize, always: bool) -> Duration {
    let opts = Options {
        fsync: if always {
            Fsync::Always
        } else {
            Fsync::Interval(PERIOD)
        },
        segment_bytes: SEGMENT_BYTES,
        max_bytes: 4 << 30,
        ..Options::default()
    };
    let mut wal = Wal::open(dir.join("wal"), opts).expect("open wal");
    let start = Instant::now();
    let mut last_sync = Instant::now();
    let mut read = 0usize;
    for _ in 0..batches {
        wal.append_batch(payloads).expect("append");
        while let Some(r) = wal.read_next().expect("read") {
            read += r.payload.len();
            wal.ack(r.seq).expect("ack");
        }
        if !always && last_sync.elapsed() >= PERIOD {
            wal.sync().expect("sync");
            last_sync = Instant::now();
        }
    }
    wal.close().expect("close");
    let t = start.elapsed();
    assert_eq!(read, batches * payloads.iter().map(Vec::len).sum::<usize>());
    t
}

/// The same bytes, one `write_all` per batch, fdatasync on the same cadence.
fn run_raw(dir: &Path, payloads: &[Vec<u8>], batches: usize, always: bool) -> Duration {
    let flat = payloads.concat();
    let path = |n: u64| dir.join(format!("raw{n}"));
    let start = Instant::now();
    let mut n = 0;
    let mut file = File::create(path(n)).expect("create raw");
    let mut written = 0u64;
    let mut last_sync = Instant::now();
    for _ in 0..batches {
        if written >= SEGMENT_BYTES {
            file.sync_data().expect("sync");
            n += 1;
            file = File::create(path(n)).expect("create raw");
            std::fs::remove_file(path(n - 1)).expect("remove raw");
            written = 0;
        }
        file.write_all(&flat).expect("write");
        written += flat.len() as u64;
        if always || last_sync.elapsed() >= PERIOD {
            file.sync_data().expect("sync");
            last_sync = Instant::now();
        }
    }
    file.sync_data().expect("sync");
    start.elapsed()
}
