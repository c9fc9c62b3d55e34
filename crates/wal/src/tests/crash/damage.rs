//! Damaged bytes in a segment: at open (the last segment is cut, an older one
//! skipped from the bad record) and after open (the reader skips it).

use super::*;

/// Appends 0..6 (segments 0 and 3), damages record 4 (the second record of the
/// last segment) with `damage`, and checks that exactly 0..4 survive.
fn last_segment_damage_cuts_from_the_bad_record(
    damage: impl FnOnce(&Path),
    corruption: Corruption,
) {
    let tmp = TempDir::new().expect("tempdir");
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    append_range(&mut wal, 0..6);
    drop(wal);
    let path = seg_path(tmp.path(), 3);
    damage(&path);
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    let expected_damage = Damage {
        path,
        offset: record_offset(1),
        bytes: 2 * FRAME,
        corruption,
    };
    assert_eq!(wal.recovery().truncated, Some(expected_damage));
    assert_eq!(read_all(&mut wal), expected(0..4));
    assert_eq!(wal.next_seq(), 4);
}

#[test]
fn flipped_header_byte_cuts_last_segment_at_that_record() {
    // A bit of the seq field: the CRC covers the header.
    let flip = |p: &Path| flip_byte(p, record_offset(1) + 9);
    last_segment_damage_cuts_from_the_bad_record(flip, Corruption::BadChecksum);
}

#[test]
fn flipped_payload_byte_cuts_last_segment_at_that_record() {
    let flip = |p: &Path| flip_byte(p, record_offset(1) + 24 + 3);
    last_segment_damage_cuts_from_the_bad_record(flip, Corruption::BadChecksum);
}

#[test]
fn garbage_length_is_rejected_before_allocating() {
    let garble = |p: &Path| {
        let mut bytes = std::fs::read(p).expect("read");
        let at = (record_offset(1) + 4) as usize;
        bytes[at..at + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        std::fs::write(p, bytes).expect("write");
    };
    last_segment_damage_cuts_from_the_bad_record(garble, Corruption::BadLength(0xFFFF_FFF0));
}

#[test]
fn corrupt_record_in_older_segment_skips_rest_of_that_segment() {
    let tmp = TempDir::new().expect("tempdir");
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    append_range(&mut wal, 0..9);
    drop(wal);
    let path = seg_path(tmp.path(), 0);
    flip_byte(&path, record_offset(1) + 24 + 1);

    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    let report = wal.recovery().clone();
    assert_eq!(report.truncated, None);
    let damage = Damage {
        path,
        offset: record_offset(1),
        bytes: 2 * FRAME,
        corruption: Corruption::BadChecksum,
    };
    assert_eq!(report.skipped, vec![damage]);
    assert_eq!(read_all(&mut wal), expected([0, 3, 4, 5, 6, 7, 8]));
    // Records 1 and 2 are gone, so acking 0 completes segment 0.
    wal.ack(0).expect("ack");
    assert_eq!(wal.first_unacked(), 3);
    assert_eq!(segment_files(tmp.path()), [3, 6]);
}

#[test]
fn reader_skips_a_segment_damaged_after_open() {
    let tmp = TempDir::new().expect("tempdir");
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    append_range(&mut wal, 0..6);
    flip_byte(&seg_path(tmp.path(), 0), record_offset(1) + 30);
    // Records just appended are served from memory; read the file.
    wal.forget_tail();
    let mut seen = Vec::new();
    let mut errors = 0;
    for r in wal.records() {
        match r {
            Ok(r) => seen.push(r.seq),
            Err(ReadError::Corrupt { offset, .. }) => {
                assert_eq!(offset, record_offset(1));
                errors += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((seen, errors), (vec![0, 3, 4, 5], 1));
}
