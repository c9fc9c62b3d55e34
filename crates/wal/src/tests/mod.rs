//! Crash-scenario tests (one per scenario, each reopening and asserting exactly
//! which records survive) and a model-based property test.

mod crash;
mod group_commit;
mod model;
mod seq_range;
mod sync_failure;
mod version;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::format::segment_name;
use crate::storage::MemStorage;
use crate::{Fsync, Options, Wal};

#[test]
fn wal_can_move_to_a_blocking_thread() {
    fn send<T: Send>() {}
    send::<Wal>();
}

/// Small segments so a few records span several files.
fn small_opts(fsync: Fsync) -> Options {
    Options {
        fsync,
        segment_bytes: 128,
        max_bytes: 1 << 20,
        max_record_bytes: 1024,
    }
}

const LAZY: Fsync = Fsync::Interval(Duration::from_secs(3600));

fn payload(i: u64) -> Vec<u8> {
    format!("record-{i:04}").into_bytes()
}

fn open_mem(st: &MemStorage, opts: Options) -> Wal {
    Wal::open_storage(Box::new(st.clone()), opts).expect("open")
}

fn open_dir(dir: &Path, opts: Options) -> Wal {
    Wal::open(dir, opts).expect("open")
}

fn append_range(wal: &mut Wal, seqs: std::ops::Range<u64>) {
    for i in seqs {
        assert_eq!(wal.append(&payload(i)).expect("append"), i);
    }
}

/// Reads everything still to be read as (seq, payload) pairs.
fn read_all(wal: &mut Wal) -> Vec<(u64, Vec<u8>)> {
    wal.records()
        .map(|r| r.expect("read"))
        .map(|r| (r.seq, r.payload))
        .collect()
}

/// The records `seqs` with the payloads `payload` gives them.
fn expected(seqs: impl IntoIterator<Item = u64>) -> Vec<(u64, Vec<u8>)> {
    seqs.into_iter().map(|i| (i, payload(i))).collect()
}

fn seg_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(segment_name(first))
}

/// Segment first seqs present in `dir`, sorted.
fn segment_files(dir: &Path) -> Vec<u64> {
    let mut firsts: Vec<u64> = std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| crate::format::parse_segment_name(e.ok()?.file_name().to_str()?))
        .collect();
    firsts.sort_unstable();
    firsts
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read segment");
    bytes[offset as usize] ^= 0x40;
    std::fs::write(path, bytes).expect("write segment");
}

/// Segment first seqs present in an in-memory directory, sorted.
fn mem_segments(st: &MemStorage) -> Vec<u64> {
    st.names()
        .iter()
        .filter_map(|n| crate::format::parse_segment_name(n))
        .collect()
}
