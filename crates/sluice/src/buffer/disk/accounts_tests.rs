//! The accounts' file formats and recovery rules, one crash scenario per test.

use super::*;
use crate::route::accounting::Reason;

fn row(received: u64, delivered: u64, rate_limited: u64) -> Row {
    let mut r = Row {
        received_events: received,
        received_bytes: received * 10,
        delivered_events: delivered,
        delivered_bytes: delivered * 10,
        ..Row::default()
    };
    r.dropped[Reason::RateLimit as usize] = rate_limited;
    r
}

fn ledger(rows: &[(&str, Row)]) -> Ledger {
    Ledger {
        rows: rows.iter().map(|(n, r)| (Arc::from(*n), *r)).collect(),
    }
}

fn get(l: &Ledger, name: &str) -> Row {
    l.rows
        .iter()
        .filter(|(n, _)| &**n == name)
        .fold(Row::default(), |mut acc, (_, r)| {
            acc.add(r);
            acc
        })
}

#[test]
fn snapshot_and_journal_round_trip_and_stop_at_a_torn_entry() {
    let mut resent = row(5, 3, 1);
    resent.resent_events = 2;
    let snap = Snapshot {
        generation: 7,
        watermark: 40,
        handed: 47,
        settled: vec![42, 45],
        rows: ledger(&[("a", resent), ("other", row(2, 2, 0))]),
    };
    assert_eq!(decode_snapshot(&encode_snapshot(&snap)), Some(snap.clone()));
    let mut bytes = encode_snapshot(&snap);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(
        decode_snapshot(&bytes),
        None,
        "a flipped byte fails the CRC"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), ::wal::Options::default()).unwrap();
    let mut a = Accounts::open(dir.path(), 10, &mut wal).unwrap();
    let rows = ledger(&[("a", row(3, 0, 1))]);
    a.append(0, 2, &rows);
    a.cancel(0);
    a.settle(0..1, &ledger(&[("a", row(0, 2, 0))]));
    a.rows(&rows);
    a.write();
    let generation = a.generation;
    let mut bytes = std::fs::read(dir.path().join(JOURNAL)).unwrap();
    let entries = decode_journal(&bytes, generation);
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[1], Entry::Cancel { first: 0 });
    assert!(
        decode_journal(&bytes, generation + 1).is_empty(),
        "another generation"
    );
    // A write torn by the crash: the entries before it stand.
    bytes.truncate(bytes.len() - 3);
    assert_eq!(decode_journal(&bytes, generation).len(), 3);
}

#[test]
fn appends_count_only_when_their_records_are_in_the_wal() {
    let snap = Snapshot::default();
    let one = ledger(&[("a", row(4, 0, 1))]);
    let entries = vec![
        Entry::Append {
            first: 0,
            end: 2,
            rows: one.clone(),
        },
        Entry::Append {
            first: 2,
            end: 5,
            rows: one.clone(),
        },
    ];
    // The WAL kept records 0..3: the second append was torn after one record.
    let got = recover(&snap, &entries, 0, 3);
    assert_eq!(
        get(&got.rows, "a"),
        row(4, 0, 1),
        "only the whole append counts"
    );
    assert_eq!(
        got.to_ack,
        vec![2..3],
        "the torn append's record is discarded"
    );
    // A cancelled append (the WAL refused it) never counts, even if its seqs
    // were later used by another append.
    let entries = vec![
        Entry::Append {
            first: 0,
            end: 2,
            rows: one.clone(),
        },
        Entry::Cancel { first: 0 },
        Entry::Append {
            first: 0,
            end: 1,
            rows: ledger(&[("b", row(1, 0, 0))]),
        },
    ];
    let got = recover(&snap, &entries, 0, 1);
    assert_eq!(get(&got.rows, "a"), Row::default());
    assert_eq!(get(&got.rows, "b"), row(1, 0, 0));
    assert!(got.to_ack.is_empty());
}

#[test]
fn settles_count_and_acknowledge_what_the_wal_would_replay() {
    let snap = Snapshot {
        generation: 1,
        watermark: 10,
        handed: 0,
        settled: vec![12, 3],
        rows: ledger(&[("a", row(20, 10, 0))]),
    };
    let entries = vec![
        Entry::Settle {
            first: 11,
            end: 12,
            rows: ledger(&[("a", row(0, 1, 0))]),
        },
        Entry::Rows(ledger(&[("a", row(1, 0, 1))])),
    ];
    // The WAL's checkpoint lagged the snapshot (8 < 10).
    let got = recover(&snap, &entries, 8, 30);
    assert_eq!(get(&got.rows, "a"), row(21, 11, 1));
    assert_eq!(got.to_ack, vec![8..10, 12..13, 11..12]);
}

#[test]
fn recovery_acknowledges_settled_records_so_they_are_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ::wal::Options {
        fsync: ::wal::Fsync::Interval(Duration::from_secs(3600)),
        ..::wal::Options::default()
    };
    {
        let mut wal = Wal::open(dir.path(), opts.clone()).unwrap();
        let mut a = Accounts::open(dir.path(), 10, &mut wal).unwrap();
        a.append(0, 3, &ledger(&[("a", row(3, 0, 0))]));
        a.write();
        wal.append_batch([b"x", b"y", b"z"]).unwrap();
        // Record 1 delivered out of order: journalled, then acknowledged in
        // memory only (the checkpoint keeps the watermark, 0). Then the
        // process dies before the next snapshot.
        a.settle(1..2, &ledger(&[("a", row(0, 1, 0))]));
        a.write();
        wal.ack(1).unwrap();
        drop(wal);
    }
    let mut wal = Wal::open(dir.path(), opts).unwrap();
    let a = Accounts::open(dir.path(), 10, &mut wal).unwrap();
    let c = a.book.tenant("a");
    assert_eq!(c.row(), row(3, 1, 0));
    assert_eq!(c.pending(), 2, "two records in the buffer");
    let seqs: Vec<u64> = wal
        .records()
        .map(|r| r.unwrap().seq)
        .filter(|&s| !a.is_settled(s))
        .collect();
    assert_eq!(seqs, [0, 2], "the delivered record is not replayed");
    assert_eq!(wal.unacked_records(), 2);
}

#[test]
fn the_snapshot_stays_bounded_by_the_series_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), ::wal::Options::default()).unwrap();
    let mut a = Accounts::open(dir.path(), 100, &mut wal).unwrap();
    for i in 0..100_000 {
        let name = a.book.series(&format!("tenant-{i}"));
        a.book.apply(&name, &row(1, 0, 1));
    }
    a.snapshot(&wal).unwrap();
    let len = std::fs::metadata(dir.path().join(SNAPSHOT)).unwrap().len();
    assert!(len < 100 * 64, "{len} bytes for 101 series");
    let snap = read_snapshot(dir.path()).unwrap().unwrap();
    assert_eq!(snap.rows.rows.len(), 101);
    assert_eq!(get(&snap.rows, "other").received_events, 100_000 - 100);
}

#[test]
fn version_1_files_read_as_without_hand_offs_or_re_sends() {
    use super::format::{put_rows, put_u64, put_varint};
    // A version 1 row: 10 varints, no re-sent count.
    let v1_rows = |b: &mut Vec<u8>| {
        put_varint(b, 1);
        put_varint(b, 1);
        b.push(b'a');
        for v in [5u64, 50, 3, 30, 0, 1, 0, 0, 0, 0] {
            put_varint(b, v);
        }
    };
    let mut body = Vec::new();
    put_u64(&mut body, 3);
    put_u64(&mut body, 9);
    put_varint(&mut body, 1);
    put_varint(&mut body, 11);
    v1_rows(&mut body);
    let mut bytes = b"SLTACC01".to_vec();
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    let snap = decode_snapshot(&bytes).expect("a version 1 snapshot");
    assert_eq!((snap.generation, snap.watermark, snap.handed), (3, 9, 0));
    assert_eq!(snap.settled, [11]);
    assert_eq!(get(&snap.rows, "a"), row(5, 3, 1));

    let mut j = b"SLTJRN01".to_vec();
    j.extend_from_slice(&3u64.to_le_bytes());
    put_entry(&mut j, 4, v1_rows);
    // Kind 5 did not exist in version 1: read as damage, the end.
    put_entry(&mut j, 5, |b| put_u64(b, 20));
    put_entry(&mut j, 4, v1_rows);
    assert_eq!(
        decode_journal(&j, 3),
        [Entry::Rows(ledger(&[("a", row(5, 3, 1))]))]
    );
    // The same in version 2 reads every entry.
    let mut j = JOURNAL_MAGIC.to_vec();
    j.extend_from_slice(&3u64.to_le_bytes());
    put_entry(&mut j, 5, |b| put_u64(b, 20));
    put_entry(&mut j, 4, |b| put_rows(b, &ledger(&[("a", row(1, 0, 0))])));
    assert_eq!(decode_journal(&j, 3).len(), 2);
}

#[test]
fn recovery_keeps_the_highest_hand_off_mark() {
    let snap = Snapshot {
        handed: 12,
        ..Snapshot::default()
    };
    let got = recover(&snap, &[], 0, 30);
    assert_eq!(got.handed, 12, "the snapshot's");
    let entries = [Entry::Handed { end: 15 }, Entry::Handed { end: 14 }];
    assert_eq!(recover(&snap, &entries, 0, 30).handed, 15);
}

#[test]
fn the_hand_off_mark_is_journalled_cheaply_and_survives_a_kill_and_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ::wal::Options {
        fsync: ::wal::Fsync::Interval(Duration::from_secs(3600)),
        ..::wal::Options::default()
    };
    let journal_len = || std::fs::metadata(dir.path().join(JOURNAL)).unwrap().len();
    {
        let mut wal = Wal::open(dir.path(), opts.clone()).unwrap();
        let mut a = Accounts::open(dir.path(), 10, &mut wal).unwrap();
        assert_eq!(
            a.hand_off.resent_below, 0,
            "a new buffer: nothing handed before"
        );
        a.append(0, 4, &ledger(&[("a", row(4, 0, 0))]));
        a.write();
        wal.append_batch([b"w", b"x", b"y", b"z"]).unwrap();
        let before = journal_len();
        // The receiver hands records 0..3: only the first move asks for a wake-up.
        assert!(a.hand_off.handing(0));
        assert!(!a.hand_off.handing(1));
        assert!(!a.hand_off.handing(2));
        assert!(a.hand_off.moved());
        a.write();
        assert!(!a.hand_off.moved());
        assert_eq!(
            journal_len(),
            before + 8 + 1 + 8,
            "one entry for three records"
        );
        a.write();
        assert_eq!(journal_len(), before + 17, "nothing new: nothing written");
        // A re-send of a lower record does not move the mark.
        assert!(!a.hand_off.handing(1));
        assert!(!a.hand_off.moved());
        drop(wal); // killed: no snapshot
    }
    let mut wal = Wal::open(dir.path(), opts.clone()).unwrap();
    let a = Accounts::open(dir.path(), 10, &mut wal).unwrap();
    assert_eq!(a.hand_off.resent_below, 3, "from the journal");
    // Opening wrote a snapshot (the journal restarted): the mark is in it.
    drop(a);
    drop(wal);
    let mut wal = Wal::open(dir.path(), opts).unwrap();
    let a = Accounts::open(dir.path(), 10, &mut wal).unwrap();
    assert_eq!(a.hand_off.resent_below, 3, "from the snapshot");
    assert_eq!(read_snapshot(dir.path()).unwrap().unwrap().handed, 3);
}
