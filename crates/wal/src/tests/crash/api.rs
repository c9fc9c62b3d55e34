//! The lock against a second writer, `inspect`, all-or-nothing batches and
//! options refused at open.

use super::*;

#[test]
fn second_writer_is_refused_while_the_first_holds_the_lock() {
    let tmp = TempDir::new().expect("tempdir");
    let mut first = open_dir(tmp.path(), small_opts(Fsync::Always));
    append_range(&mut first, 0..2);
    match Wal::open(tmp.path(), small_opts(Fsync::Always)) {
        Err(OpenError::Locked { path }) => assert_eq!(path, tmp.path().join("lock")),
        other => panic!("expected Locked, got {other:?}"),
    }
    // Inspection needs no lock.
    assert_eq!(inspect(tmp.path()).expect("inspect").total_records, 2);
    drop(first);
    let mut second = open_dir(tmp.path(), small_opts(Fsync::Always));
    assert_eq!(read_all(&mut second), expected(0..2));
}

#[test]
fn inspect_reports_segments_watermark_times_and_damage() {
    let tmp = TempDir::new().expect("tempdir");
    let before = std::time::SystemTime::now();
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    append_range(&mut wal, 0..8);
    for seq in 0..4 {
        wal.ack(seq).expect("ack");
    }
    wal.sync().expect("sync");
    let live = inspect(tmp.path()).expect("inspect");
    assert_eq!(live.checkpoint, Some(4));
    assert_eq!((live.total_records, live.unacked_records), (5, 4));
    assert_eq!(live.total_bytes, wal.disk_bytes());
    let summary: Vec<_> = live
        .segments
        .iter()
        .map(|s| {
            (
                s.first_seq,
                s.last_seq,
                s.records,
                s.bytes,
                s.damage.is_some(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Some(3), Some(5), 3, 113, false),
            (Some(6), Some(7), 2, 78, false)
        ]
    );
    let oldest = live.oldest_record_time.expect("time");
    assert!(before <= oldest && oldest <= live.oldest_unacked_time.expect("time"));
    drop(wal);

    let path = seg_path(tmp.path(), 3);
    flip_byte(&path, record_offset(1) + 30);
    let damaged = inspect(tmp.path()).expect("inspect");
    let seg = &damaged.segments[0];
    assert_eq!((seg.records, seg.last_seq), (1, Some(3)));
    let damage = Damage {
        path,
        offset: record_offset(1),
        bytes: 2 * FRAME,
        corruption: Corruption::BadChecksum,
    };
    assert_eq!(seg.damage, Some(damage));
}

#[test]
fn batches_are_all_or_nothing() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(Fsync::Always));
    assert_eq!(
        wal.append_batch([payload(0), payload(1), payload(2)])
            .expect("batch"),
        0..3
    );
    assert_eq!(
        wal.append_batch(Vec::<Vec<u8>>::new()).expect("empty"),
        3..3
    );
    let too_big = vec![0; 1025];
    match wal.append_batch([&payload(3)[..], &too_big]) {
        Err(AppendError::TooLarge {
            len: 1025,
            max: 1024,
        }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(wal.append(&payload(3)).expect("append"), 3);
    assert_eq!(read_all(&mut wal), expected(0..4));
}

#[test]
fn options_that_cannot_hold_one_record_are_rejected() {
    let opts = Options {
        max_bytes: 100,
        max_record_bytes: 100,
        ..small_opts(Fsync::Always)
    };
    let st = MemStorage::new();
    assert!(matches!(
        Wal::open_storage(Box::new(st), opts),
        Err(OpenError::InvalidOptions(_))
    ));
}
