//! Acknowledgements in any order, segment deletion, `drop_oldest`, reopening
//! and the reader running ahead of acks.

use super::*;

#[test]
fn out_of_order_acks_advance_a_contiguous_watermark() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(Fsync::Always));
    append_range(&mut wal, 0..6);
    assert_eq!(read_all(&mut wal), expected(0..6));
    for seq in [3, 1, 2] {
        wal.ack(seq).expect("ack");
    }
    assert_eq!(wal.first_unacked(), 0);
    assert_eq!(wal.unacked_records(), 3);
    wal.ack(0).expect("ack");
    assert_eq!(wal.first_unacked(), 4);
    wal.ack(5).expect("ack");
    assert_eq!(wal.first_unacked(), 4);
    assert_eq!(wal.unacked_records(), 1);
    wal.ack(0).expect("duplicate ack is a no-op");
    assert!(matches!(
        wal.ack(6),
        Err(AckError::NotAppended {
            seq: 6,
            next_seq: 6
        })
    ));
    drop(wal);

    // Only the contiguous watermark is persisted: 5 is replayed.
    let mut wal = open_mem(&st, small_opts(Fsync::Always));
    assert_eq!(read_all(&mut wal), expected(4..6));
}

#[test]
fn segment_is_deleted_only_when_every_record_in_it_is_acked() {
    let tmp = TempDir::new().expect("tempdir");
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    append_range(&mut wal, 0..9);
    assert_eq!(segment_files(tmp.path()), [0, 3, 6]);
    let steps: [(&[u64], &[u64]); 5] = [
        (&[0, 1], &[0, 3, 6]),
        (&[2], &[3, 6]),
        (&[4, 5], &[3, 6]),
        (&[3], &[6]),
        (&[6, 7, 8], &[6]), // the active segment stays
    ];
    for (acks, files) in steps {
        for &seq in acks {
            wal.ack(seq).expect("ack");
        }
        assert_eq!(segment_files(tmp.path()), files, "after acking {acks:?}");
    }
    // The next rotation retires the fully acked active segment.
    append_range(&mut wal, 9..10);
    assert_eq!(segment_files(tmp.path()), [9]);
}

#[test]
fn drop_oldest_discards_oldest_segment_and_counts_unacked_records() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(Fsync::Always));
    append_range(&mut wal, 0..8);
    wal.ack(1).expect("ack");
    let dropped = wal.drop_oldest().expect("drop");
    assert_eq!(
        dropped,
        Some(Dropped {
            seqs: 0..3,
            records: 2
        })
    );
    assert_eq!(wal.first_unacked(), 3);
    assert_eq!(mem_segments(&st), [3, 6]);
    assert_eq!(read_all(&mut wal), expected(3..8));
    drop(wal);

    let mut wal = open_mem(&st, small_opts(Fsync::Always));
    assert_eq!(read_all(&mut wal), expected(3..8));
    wal.ack(4).expect("ack");
    assert_eq!(
        wal.drop_oldest().expect("drop"),
        Some(Dropped {
            seqs: 3..6,
            records: 2
        })
    );
    // Only the active segment is left: it is emptied in place.
    assert_eq!(
        wal.drop_oldest().expect("drop"),
        Some(Dropped {
            seqs: 6..8,
            records: 2
        })
    );
    assert_eq!(mem_segments(&st), [8]);
    assert_eq!(wal.drop_oldest().expect("drop"), None);
    assert_eq!(wal.append(&payload(8)).expect("append"), 8);
    drop(wal);
    let mut wal = open_mem(&st, small_opts(Fsync::Always));
    assert!(wal.recovery().is_clean());
    assert_eq!(read_all(&mut wal), expected([8]));
}

#[test]
fn reopen_continues_sequence_numbers() {
    let tmp = TempDir::new().expect("tempdir");
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    append_range(&mut wal, 0..4);
    for seq in 0..4 {
        wal.ack(seq).expect("ack");
    }
    wal.close().expect("close");
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    assert_eq!((wal.next_seq(), wal.first_unacked()), (4, 4));
    assert_eq!(read_all(&mut wal), []);
    assert_eq!(wal.append(&payload(4)).expect("append"), 4);
    wal.ack(4).expect("ack");
    wal.close().expect("close");
    // Even with every segment gone, the checkpoint carries the sequence.
    for first in segment_files(tmp.path()) {
        std::fs::remove_file(seg_path(tmp.path(), first)).expect("rm");
    }
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    assert_eq!(wal.append(&payload(5)).expect("append"), 5);
}

#[test]
fn reader_reads_ahead_of_acks_and_rewinds_to_first_unacked() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(Fsync::Always));
    let before = std::time::SystemTime::now();
    append_range(&mut wal, 0..5);
    let first = wal.read_next().expect("read").expect("record");
    assert_eq!((first.seq, first.payload), (0, payload(0)));
    assert!(first.appended_at >= before);
    assert_eq!(read_all(&mut wal), expected(1..5));
    assert_eq!(wal.read_next().expect("read"), None);
    append_range(&mut wal, 5..6);
    assert_eq!(read_all(&mut wal), expected([5]));
    wal.ack(0).expect("ack");
    wal.ack(2).expect("ack");
    wal.rewind();
    assert_eq!(read_all(&mut wal), expected(1..6));
}
