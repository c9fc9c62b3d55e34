//! Sequence numbers read from file names and checkpoints are input: a crafted
//! name or watermark near `u64::MAX` must give a clear error or be ignored,
//! never overflow (a panic in debug builds, a wrap in release).

use super::{LAZY, open_mem, payload, small_opts};
use crate::format::{
    CHECKPOINT_NAME, MAX_SEQ, SEGMENT_MAGIC, encode_checkpoint_file, encode_record, segment_name,
};
use crate::inspect::inspect_storage;
use crate::storage::{MemStorage, Storage};
use crate::{AppendError, OpenError, Wal};

/// A segment named `first` holding one valid record with seq `first`.
fn crafted_segment(st: &MemStorage, first: u64) {
    let mut bytes = SEGMENT_MAGIC.to_vec();
    encode_record(&mut bytes, first, 0, b"crafted");
    let mut f = st.create(&segment_name(first)).expect("create");
    f.write_all_at(0, &bytes).expect("write");
}

#[test]
fn a_segment_named_near_u64_max_is_refused_with_a_clear_error() {
    let st = MemStorage::new();
    crafted_segment(&st, u64::MAX);
    let err = Wal::open_storage(Box::new(st.clone()), small_opts(LAZY)).expect_err("refused");
    assert!(
        matches!(err, OpenError::SeqOutOfRange { seq: u64::MAX, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("18446744073709551615.seg"), "{msg}");
    assert!(msg.contains("move it out"), "{msg}");
    // `inspect` (read-only, for humans) reports it without overflowing.
    let report = inspect_storage(&st).expect("inspect");
    assert_eq!(report.segments.len(), 1);
    assert_eq!(report.segments[0].last_seq, Some(u64::MAX));
}

#[test]
fn a_checkpoint_near_u64_max_is_ignored_as_invalid() {
    let st = MemStorage::new();
    {
        let mut f = st.create(CHECKPOINT_NAME).expect("create");
        f.write_all_at(0, &encode_checkpoint_file(u64::MAX))
            .expect("write");
    }
    let mut wal = open_mem(&st, small_opts(LAZY));
    assert!(wal.recovery().checkpoint_invalid);
    assert_eq!(wal.recovery().checkpoint, None);
    assert_eq!(wal.append(&payload(0)).expect("append"), 0);
}

#[test]
fn appends_stop_with_an_error_at_the_last_sequence_number() {
    let st = MemStorage::new();
    {
        let mut f = st.create(&segment_name(MAX_SEQ - 2)).expect("create");
        f.write_all_at(0, &SEGMENT_MAGIC).expect("write");
    }
    let mut wal = open_mem(&st, small_opts(LAZY));
    assert_eq!(wal.append(&payload(0)).expect("append"), MAX_SEQ - 2);
    assert_eq!(wal.append(&payload(1)).expect("append"), MAX_SEQ - 1);
    let full = wal.append(&payload(2));
    assert!(
        matches!(full, Err(AppendError::SeqExhausted { next_seq }) if next_seq == MAX_SEQ),
        "{full:?}"
    );
    // A batch crossing the end is refused whole.
    assert!(wal.append_batch([payload(3), payload(4)]).is_err());
    assert_eq!(wal.next_seq(), MAX_SEQ);
}
