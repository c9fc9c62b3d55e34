//! The checkpoint file: stale, damaged, torn, or written by an earlier version.

use super::*;

#[test]
fn stale_checkpoint_redelivers_acked_records_and_loses_none() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(Fsync::Always));
    append_range(&mut wal, 0..10);
    for seq in 0..5 {
        wal.ack(seq).expect("ack");
    }
    wal.sync().expect("sync"); // checkpoint says 5
    for seq in 5..8 {
        wal.ack(seq).expect("ack");
    }
    assert_eq!(wal.first_unacked(), 8);
    let crashed = st.crash(); // before the checkpoint for 8 is written
    drop(wal);

    let mut wal = open_mem(&crashed, small_opts(Fsync::Always));
    assert_eq!(wal.recovery().checkpoint, Some(5));
    assert_eq!(wal.first_unacked(), 5);
    assert_eq!(read_all(&mut wal), expected(5..10));
}

#[test]
fn damaged_checkpoint_is_ignored_and_replay_starts_at_oldest_segment() {
    let tmp = TempDir::new().expect("tempdir");
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    append_range(&mut wal, 0..6);
    for seq in 0..4 {
        wal.ack(seq).expect("ack");
    }
    wal.close().expect("close");
    // Both slots damaged.
    flip_byte(&tmp.path().join("checkpoint"), 10);
    flip_byte(&tmp.path().join("checkpoint"), 512 + 10);

    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    assert!(wal.recovery().checkpoint_invalid);
    assert_eq!(wal.recovery().checkpoint, None);
    // Segment 0 was deleted; 3 was acked but is replayed: a duplicate, not a loss.
    assert_eq!(read_all(&mut wal), expected(3..6));
}

#[test]
fn torn_checkpoint_slot_falls_back_to_the_other_slot() {
    let tmp = TempDir::new().expect("tempdir");
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    append_range(&mut wal, 0..10);
    wal.ack(0).expect("ack");
    wal.sync().expect("sync"); // new file: both slots say 1
    wal.ack(1).expect("ack");
    wal.sync().expect("sync"); // slot A says 2
    wal.ack(2).expect("ack");
    wal.sync().expect("sync"); // slot B says 3
    wal.ack(3).expect("ack");
    wal.sync().expect("sync"); // slot A says 4
    drop(wal);
    let path = tmp.path().join("checkpoint");
    assert_eq!(std::fs::metadata(&path).expect("checkpoint").len(), 532);
    // A crash tore slot A while it was being written with 4 (or later).
    flip_byte(&path, 10);
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    assert!(!wal.recovery().checkpoint_invalid);
    assert_eq!(wal.recovery().checkpoint, Some(3), "slot B's watermark");
    assert_eq!(read_all(&mut wal), expected(3..10));
}

#[test]
fn single_slot_checkpoint_of_earlier_versions_is_read() {
    let tmp = TempDir::new().expect("tempdir");
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    append_range(&mut wal, 0..6);
    wal.close().expect("close");
    let mut old = Vec::from(*b"SLWCKP01");
    old.extend_from_slice(&2u64.to_le_bytes());
    let crc = crc32c::crc32c(&old);
    old.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(tmp.path().join("checkpoint"), &old).expect("write");
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    assert_eq!(wal.recovery().checkpoint, Some(2));
    assert_eq!(read_all(&mut wal), expected(2..6));
}
