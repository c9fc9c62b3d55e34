//! `sync_appends`, the group-commit sync: everything appended becomes durable
//! (a crash right after keeps it), the checkpoint does not move, nothing is
//! synced when nothing changed, and a failure poisons like `sync`.

use super::{LAZY, append_range, expected, mem_segments, open_mem, payload, read_all, small_opts};
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

// `start_sync`: the same group commit run by another thread while appends go on.

#[test]
fn records_appended_while_a_sync_job_runs_are_not_covered_by_it() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(LAZY));
    append_range(&mut wal, 0..3);
    let job = wal.start_sync().expect("start").expect("something to sync");
    assert_eq!(job.upto(), 3);
    assert!(wal.sync_in_flight());
    // Appended while the job is in flight (into new segments too).
    append_range(&mut wal, 3..12);
    assert!(wal.has_unsynced(), "the new records wait for the next sync");
    assert!(wal.poll_sync().is_none(), "the job has not run yet");
    assert!(job.run());
    assert_eq!(wal.poll_sync().expect("ran").expect("synced"), 3);
    assert!(!wal.sync_in_flight());
    assert!(wal.has_unsynced(), "3..12 are still not durable");
    // A power loss now keeps what the job covered.
    let crashed = st.crash();
    let next = wal.start_sync().expect("start").expect("3..12 to sync");
    assert_eq!(next.upto(), 12);
    assert!(next.run());
    drop(wal);
    let mut reopened = open_mem(&crashed, small_opts(LAZY));
    let survived = read_all(&mut reopened);
    assert!(survived.starts_with(&expected(0..3)), "{survived:?}");
    drop(reopened);
    let mut wal = open_mem(&st.crash(), small_opts(LAZY));
    assert_eq!(read_all(&mut wal), expected(0..12));
}

#[test]
fn a_segment_closed_during_a_sync_job_is_synced_again_before_the_next_one() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(LAZY));
    append_range(&mut wal, 0..1);
    let job = wal.start_sync().expect("start").expect("something to sync");
    // The job syncs segment 0 now; more is written to it after, then it is
    // closed (128-byte segments): only a later sync makes that durable.
    assert!(job.run());
    append_range(&mut wal, 1..8);
    assert!(
        mem_segments(&st).len() > 1,
        "rotated: {:?}",
        mem_segments(&st)
    );
    assert_eq!(wal.poll_sync().expect("ran").expect("synced"), 1);
    let next = wal.start_sync().expect("start").expect("1..8 to sync");
    assert!(next.run());
    assert_eq!(wal.poll_sync().expect("ran").expect("synced"), 8);
    drop(wal);
    let mut wal = open_mem(&st.crash(), small_opts(LAZY));
    assert_eq!(read_all(&mut wal), expected(0..8));
}

#[test]
fn a_failed_sync_job_poisons_and_every_later_sync_waits_for_it() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(LAZY));
    append_range(&mut wal, 0..2);
    let job = wal.start_sync().expect("start").expect("something to sync");
    append_range(&mut wal, 2..3);
    st.fail_syncs(1);
    let runner = std::thread::spawn(move || job.run());
    // `sync` waits for the job, takes its failure and is poisoned by it
    // (the storage would sync now: a retry must not report success).
    let err = wal.sync().expect_err("the job failed");
    assert!(err.to_string().contains("sync"), "{err}");
    assert!(
        !runner.join().expect("runner"),
        "the job reports its failure"
    );
    assert!(wal.is_poisoned());
    assert!(wal.poll_sync().is_none(), "the outcome was taken by `sync`");
    assert!(wal.start_sync().is_err());
    assert!(wal.append(&payload(3)).is_err());
}

#[test]
fn a_sync_job_dropped_unrun_counts_as_failed() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(LAZY));
    append_range(&mut wal, 0..2);
    drop(wal.start_sync().expect("start").expect("something to sync"));
    assert!(wal.poll_sync().expect("outcome").is_err());
    assert!(wal.is_poisoned());
}

#[test]
fn start_sync_returns_none_when_everything_is_durable() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(LAZY));
    append_range(&mut wal, 0..2);
    wal.sync_appends().expect("sync_appends");
    st.fail_syncs(1);
    assert!(wal.start_sync().expect("nothing to sync").is_none());
    assert!(!wal.sync_in_flight());
}
