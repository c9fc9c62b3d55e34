//! A failed fsync poisons the `Wal`: Linux reports a writeback error once and
//! may drop the dirty pages, so a retried `fdatasync` that returns 0 proves
//! nothing. The storage here fails the next sync once, then succeeds, as the
//! kernel does; every later sync and append must still fail.

use std::time::Duration;

use super::{LAZY, append_range, expected, open_mem, payload, read_all, small_opts};
use crate::storage::MemStorage;
use crate::{AppendError, Fsync};

/// Every append is at least this long after the last sync: each one syncs inline.
const EAGER: Fsync = Fsync::Interval(Duration::from_nanos(1));

#[test]
fn failed_inline_interval_sync_is_returned_by_every_later_sync() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(EAGER));
    append_range(&mut wal, 0..2);
    st.fail_syncs(1);
    // The inline sync fails; the records are appended all the same.
    assert_eq!(wal.append(&payload(2)).expect("append"), 2);
    assert!(wal.is_poisoned());
    // The storage would sync now, but the lost pages stay lost: no success.
    let err = wal.sync().expect_err("the failed sync is kept");
    assert!(err.to_string().contains("sync"), "{err}");
    assert!(wal.sync().is_err(), "still failing on the second try");
    let appended = wal.append(&payload(3));
    assert!(matches!(appended, Err(AppendError::Io(_))), "{appended:?}");
    assert!(wal.drop_oldest().is_err());
}

#[test]
fn failed_periodic_sync_poisons_and_reopen_recovers_what_is_on_disk() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(LAZY));
    append_range(&mut wal, 0..3);
    wal.sync().expect("first sync");
    append_range(&mut wal, 3..5);
    st.fail_syncs(1);
    assert!(wal.sync().is_err());
    assert!(wal.sync().is_err(), "a retry must not report success");
    assert!(wal.append(&payload(5)).is_err());
    drop(wal);
    // Reopened, the buffer works again and replays what survived.
    let mut wal = open_mem(&st.crash(), small_opts(LAZY));
    assert!(!wal.is_poisoned());
    let survived = read_all(&mut wal);
    assert!(survived.starts_with(&expected(0..3)), "{survived:?}");
    wal.append(&payload(9)).expect("append after reopen");
    wal.sync().expect("sync after reopen");
}

#[test]
fn failed_sync_with_fsync_always_fails_the_append_and_every_later_one() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(Fsync::Always));
    append_range(&mut wal, 0..2);
    st.fail_syncs(1);
    assert!(matches!(wal.append(&payload(2)), Err(AppendError::Io(_))));
    assert!(wal.is_poisoned());
    assert!(wal.append(&payload(2)).is_err(), "the sync would pass now");
    assert!(wal.sync().is_err());
    // What was synced before the failure is still there after a power loss.
    drop(wal);
    let mut wal = open_mem(&st.crash(), small_opts(Fsync::Always));
    assert_eq!(read_all(&mut wal), expected(0..2));
}

#[test]
fn failed_directory_sync_poisons() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(LAZY));
    // Enough records to rotate: the next sync has a directory to sync too.
    append_range(&mut wal, 0..20);
    wal.sync().expect("sync");
    append_range(&mut wal, 20..40);
    // The data syncs pass, the directory's fails.
    st.fail_dir_syncs(1);
    assert!(wal.sync().is_err());
    assert!(wal.is_poisoned());
    assert!(wal.sync().is_err());
    assert!(wal.append(&payload(40)).is_err());
}
