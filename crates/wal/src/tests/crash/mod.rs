//! One test per crash or damage scenario. Layout used for offsets: payloads
//! are 11 bytes, so a frame is 35 bytes, a segment (8-byte header) holds three
//! records, and record `k` of a segment starts at `8 + 35 * k`.

use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader};
use std::process::{Command, Stdio};

use tempfile::TempDir;

use super::*;
use crate::{AckError, AppendError, Corruption, Damage, Dropped, OpenError, ReadError, inspect};

mod acks;
mod api;
mod checkpoint;
mod damage;
mod full;
mod power_loss;

const FRAME: u64 = 35;
const HEADER: u64 = 8;

fn record_offset(k: u64) -> u64 {
    HEADER + FRAME * k
}

#[test]
fn layout_assumed_by_these_tests() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(Fsync::Always));
    append_range(&mut wal, 0..4);
    assert_eq!(wal.disk_bytes(), HEADER + 3 * FRAME + HEADER + FRAME);
    assert_eq!(mem_segments(&st), [0, 3]);
}
