//! `sync_appends`, the group-commit sync: everything appended becomes durable
//! (a crash right after keeps it), the checkpoint does not move, nothing is
//! synced when nothing changed, and a failure poisons like `sync`.

use super::{LAZY, append_range, expected, open_mem, read_all, small_opts};
use crate::storage::MemStorage;

#[test]
fn sync_appends_makes_every_append_durable_across_segments() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(LAZY));
    // 128-byte segments: these records span several files, new directory
    // entries included.
    append_range(&mut wal, 0..6);
    assert!(wal.has_unsynced());
    wal.sync_appends().expect("sync_appends");
    assert!(!wal.has_unsynced());
    let crashed = st.crash();
    drop(wal);
    let mut wal = open_mem(&crashed, small_opts(LAZY));
    assert!(wal.recovery().is_clean(), "{:?}", wal.recovery());
    assert_eq!(read_all(&mut wal), expected(0..6));
}

#[test]
fn sync_appends_leaves_the_checkpoint_to_sync() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(LAZY));
    append_range(&mut wal, 0..3);
    wal.sync().expect("sync");
    append_range(&mut wal, 3..4);
    wal.ack(0).expect("ack");
    wal.ack(1).expect("ack");
    wal.sync_appends().expect("sync_appends");
    let crashed = st.crash();
    drop(wal);
    // The acknowledgements were not persisted: 0 and 1 are replayed (a
    // duplicate, never a loss); the record appended after `sync` survived.
    let mut wal = open_mem(&crashed, small_opts(LAZY));
    assert_eq!(read_all(&mut wal), expected(0..4));
}

#[test]
fn sync_appends_makes_no_system_call_when_nothing_changed() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(LAZY));
    append_range(&mut wal, 0..2);
    wal.sync_appends().expect("sync_appends");
    // Any fsync now would fail: the second call must not make one.
    st.fail_syncs(1);
    st.fail_dir_syncs(1);
    wal.sync_appends().expect("nothing to sync");
    assert!(!wal.is_poisoned());
}

#[test]
fn failed_sync_appends_poisons() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(LAZY));
    append_range(&mut wal, 0..2);
    st.fail_syncs(1);
    wal.sync_appends().expect_err("the sync fails");
    assert!(wal.is_poisoned());
    // The storage would succeed now; the lost pages stay lost.
    assert!(wal.sync_appends().is_err());
    assert!(wal.sync().is_err());
    assert!(wal.append(b"more").is_err());
}
