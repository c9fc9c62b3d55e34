//! Per-tenant accounts kept beside a disk buffer, so that for every tenant
//! "received = delivered + dropped + in the buffer" holds across a `kill -9`.
//!
//! Two files in the buffer's directory (the WAL ignores them; byte layout in
//! `accounts/format.rs`, version 2):
//!
//! ```text
//! tenants          the snapshot: "SLTACC02", u32 body length, u32 CRC-32C of
//!                  the body; body: generation u64, watermark u64, handed u64,
//!                  settled seqs (varint count, varints), rows (varint count,
//!                  each: name as varint length + UTF-8, then 11 varints:
//!                  received events, bytes, delivered events, bytes, dropped
//!                  by reason (6), re-sent events)
//! tenants.journal  what happened since: "SLTJRN02", generation u64, then entries:
//!                  u32 body length, u32 CRC-32C, body: kind u8, then
//!                  1 append  first u64, end u64, rows   (a batch stored at
//!                                                       seqs first..end)
//!                  2 cancel  first u64                  (that append failed)
//!                  3 settle  first u64, end u64, rows   (records resolved:
//!                                                       delivered, refused,
//!                                                       or dropped when full)
//!                  4 rows    rows                       (counts of a batch
//!                                                       stored nowhere)
//!                  5 handed  end u64                    (every record handed
//!                                                       to the sink is below)
//! ```
//!
//! Rule: every entry (but `handed`, below) is written (one `write(2)`, so a
//! killed process keeps it) *before* the WAL step it describes — the append,
//! the acknowledgement, the `drop_oldest` — and is fsynced with the group
//! commit, before any source hears that its batch is stored. So after a crash the journal may be ahead of
//! the WAL, never behind, and recovery ([`recover`]) brings the WAL up to it:
//! - an append whose records are all in the WAL counts; one whose records
//!   are not (the kill came between the entry and the write, or tore the
//!   write) does not, and what of it did reach the WAL is acknowledged there
//!   (discarded: its source never heard it was stored, and sends it again);
//! - a settle counts, and its records still in the WAL are acknowledged there
//!   (they were delivered: not replayed, so not delivered twice);
//! - the snapshot's watermark and settled seqs are acknowledged likewise.
//!
//! # Re-sends after a restart (`handed`)
//! The receiver raises a shared mark ([`HandOff`]) as it hands records to the
//! sink; the WAL thread journals it with its next write (woken for it when
//! nothing else is to be written), not per record, and the snapshot keeps it.
//! At open the mark recovered, `handed`, is fixed for the run as
//! `resent_below`: a record below it that the WAL still replays was handed to
//! the sink before (and not settled), so the sink may have written it already;
//! when it is delivered again, its events count as `resent` per tenant (in the
//! settle entry, so the count survives the next crash too) — unless the sink
//! said it skipped it as already at its destination
//! ([`DiskReceiver::already_delivered`](super::DiskReceiver::already_delivered):
//! the exactly-once Kafka sink's checkpoint). Records handed in the instant
//! between the last journal write and a kill are not counted (the mark may lag
//! by one wake-up of the WAL thread; a power loss may lose what was not
//! synced): the count is a lower bound of re-sends, never more than were made.
//!
//! The snapshot is written after a full WAL sync (records and checkpoint
//! durable), at most once a second and at the stop: a temporary file,
//! fsynced, renamed, the directory fsynced; then the journal restarts with the
//! snapshot's `generation`. A journal of another `generation` is already in the snapshot.
//! Names are the book's series (at most `max_tenant_series` plus `other`), so
//! the snapshot is bounded whatever ids clients send; the journal holds what
//! happened in at most a second.

mod format;

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::wal::Wal;
use tracing::{error, info, warn};

use crate::route::accounting::{Ledger, Row, TenantBook};
use format::{
    JOURNAL_HEADER, JOURNAL_MAGIC, put_entry, put_rows, put_u64, read_journal, read_snapshot,
    write_snapshot,
};
#[cfg(test)]
use format::{decode_journal, decode_snapshot, encode_snapshot};

const SNAPSHOT: &str = "tenants";
const SNAPSHOT_TMP: &str = "tenants.tmp";
const JOURNAL: &str = "tenants.journal";
/// How often a snapshot replaces the journal, at most.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    Append { first: u64, end: u64, rows: Ledger },
    Cancel { first: u64 },
    Settle { first: u64, end: u64, rows: Ledger },
    Rows(Ledger),
    Handed { end: u64 },
}

/// The snapshot's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Snapshot {
    generation: u64,
    watermark: u64,
    /// Every record handed to the sink so far is below this.
    handed: u64,
    settled: Vec<u64>,
    rows: Ledger,
}

/// What recovery counts and what it acknowledges in the WAL.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Recovered {
    pub(super) rows: Ledger,
    pub(super) to_ack: Vec<Range<u64>>,
    /// Every record handed to the sink before is below this.
    pub(super) handed: u64,
}

/// The sink's hand-offs, shared by the receiver (which raises `end`) and the
/// WAL thread (which journals it). See the module doc, "Re-sends".
#[derive(Debug, Default)]
pub(super) struct HandOff {
    /// One past the highest seq handed to the sink in this run.
    end: AtomicU64,
    /// `end` moved since the WAL thread last looked.
    moved: AtomicBool,
    /// Records below this were handed to the sink before this run: delivered
    /// again now, they are re-sends (fixed at open).
    pub(super) resent_below: u64,
}

impl HandOff {
    /// Record `seq` is being handed to the sink. True when the WAL thread
    /// should be woken to journal the mark (the first move since it looked).
    pub(super) fn handing(&self, seq: u64) -> bool {
        self.end.fetch_max(seq + 1, Ordering::AcqRel) <= seq
            && !self.moved.swap(true, Ordering::AcqRel)
    }

    /// Whether the mark moved since the WAL thread last journalled it.
    pub(super) fn moved(&self) -> bool {
        self.moved.load(Ordering::Acquire)
    }

    /// For the WAL thread: the mark now (clears `moved` first, so a move
    /// after this read wakes it again).
    fn take(&self) -> u64 {
        self.moved.store(false, Ordering::Release);
        self.end.load(Ordering::Acquire)
    }
}

/// Counts after a crash: the snapshot, the journal's entries, and the WAL's
/// state as reopened (`watermark`, `next_seq`). See the module doc.
pub(super) fn recover(snap: &Snapshot, entries: &[Entry], watermark: u64, next: u64) -> Recovered {
    let mut out = Recovered {
        rows: snap.rows.clone(),
        to_ack: Vec::new(),
        handed: snap.handed,
    };
    let mut handed = snap.handed;
    let mut ack = |r: Range<u64>| {
        let r = r.start.max(watermark)..r.end.min(next);
        if r.start < r.end {
            out.to_ack.push(r);
        }
    };
    ack(watermark..snap.watermark);
    for &s in &snap.settled {
        ack(s..s + 1);
    }
    let mut appends: Vec<Option<(u64, u64, &Ledger)>> = Vec::new();
    let mut rows = Ledger::default();
    for e in entries {
        match e {
            Entry::Append { first, end, rows } => appends.push(Some((*first, *end, rows))),
            Entry::Cancel { first } => {
                if let Some(a) = appends
                    .iter_mut()
                    .rev()
                    .find(|a| a.is_some_and(|(f, _, _)| f == *first))
                {
                    *a = None;
                }
            }
            Entry::Settle {
                first,
                end,
                rows: r,
            } => {
                rows.merge(r);
                ack(*first..*end);
            }
            Entry::Rows(r) => rows.merge(r),
            Entry::Handed { end } => handed = handed.max(*end),
        }
    }
    out.handed = handed;
    for (first, end, r) in appends.into_iter().flatten() {
        if end <= next {
            rows.merge(r);
        } else {
            ack(first..next);
        }
    }
    out.rows.merge(&rows);
    out
}

/// The open accounts of one buffer, owned by its WAL thread.
pub(super) struct Accounts {
    dir: PathBuf,
    pub(super) book: Arc<TenantBook>,
    journal: File,
    /// Length of the journal file (where the next entry goes).
    journal_len: u64,
    /// Written and not yet fsynced.
    dirty: bool,
    generation: u64,
    /// Entries encoded, not yet written.
    buf: Vec<u8>,
    /// Seqs settled at or above the WAL's watermark (acknowledged out of order).
    settled_ahead: BTreeSet<u64>,
    last_snapshot: Instant,
    /// A journal write failed (reported once).
    broken: bool,
    /// Shared with the receiver: the sink's hand-offs.
    pub(super) hand_off: Arc<HandOff>,
    /// The hand-off mark the journal (or snapshot) holds.
    handed: u64,
}

fn err_at(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl Accounts {
    /// Read the accounts beside `wal`, bring the WAL up to them, and start a
    /// new generation. With no snapshot (the first start with accounting), the
    /// counts start from zero.
    pub(super) fn open(dir: &Path, max_series: usize, wal: &mut Wal) -> io::Result<Accounts> {
        let snap = match read_snapshot(dir) {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "Per-tenant accounts unreadable; counting from zero.");
                Snapshot::default()
            }
        };
        let entries = read_journal(dir, snap.generation)?;
        let got = recover(&snap, &entries, wal.first_unacked(), wal.next_seq());
        let book = Arc::new(TenantBook::durable(max_series));
        got.rows.apply(&book);
        let mut acked = 0u64;
        let mut settled_ahead = BTreeSet::new();
        for r in &got.to_ack {
            for seq in r.clone() {
                if wal.ack(seq).is_ok() {
                    acked += 1;
                    settled_ahead.insert(seq);
                }
            }
        }
        wal.sync()
            .map_err(|e| io::Error::other(format!("syncing the buffer: {e}")))?;
        if snap.generation > 0 || !entries.is_empty() {
            let resend = got.handed.saturating_sub(wal.first_unacked());
            info!(dir = %dir.display(), journal_entries = entries.len(), acknowledged_records = acked, handed_before_below = got.handed, "Per-tenant accounts recovered.");
            if resend > 0 {
                info!(dir = %dir.display(), from = wal.first_unacked(), below = got.handed, "Records handed to the sink before the restart and not settled are sent again; their events count as re-sent per tenant (possible duplicates).");
            }
        }
        let path = dir.join(JOURNAL);
        let journal = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(err_at(&path))?;
        let mut a = Accounts {
            dir: dir.to_owned(),
            book,
            journal,
            journal_len: 0,
            dirty: false,
            generation: snap.generation,
            buf: Vec::new(),
            settled_ahead,
            last_snapshot: Instant::now(),
            broken: false,
            hand_off: Arc::new(HandOff {
                resent_below: got.handed,
                ..HandOff::default()
            }),
            handed: got.handed,
        };
        a.snapshot(wal)?;
        Ok(a)
    }

    /// Note a batch stored at `first..end` (before appending it).
    pub(super) fn append(&mut self, first: u64, end: u64, rows: &Ledger) {
        self.entry(1, |b| {
            put_u64(b, first);
            put_u64(b, end);
            put_rows(b, rows);
        });
    }

    /// Note that the append at `first` failed.
    pub(super) fn cancel(&mut self, first: u64) {
        self.entry(2, |b| put_u64(b, first));
    }

    /// Note records `seqs` resolved as `rows` say (before acknowledging them).
    pub(super) fn settle(&mut self, seqs: Range<u64>, rows: &Ledger) {
        self.settled_ahead.extend(seqs.clone());
        self.entry(3, |b| {
            put_u64(b, seqs.start);
            put_u64(b, seqs.end);
            put_rows(b, rows);
        });
    }

    /// Note counts of a batch that is stored nowhere.
    pub(super) fn rows(&mut self, rows: &Ledger) {
        self.entry(4, |b| put_rows(b, rows));
    }

    fn entry(&mut self, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
        put_entry(&mut self.buf, kind, body);
    }

    /// Note the hand-off mark if it moved past what the journal holds.
    fn note_handed(&mut self) {
        let end = self.hand_off.take();
        if end > self.handed {
            self.handed = end;
            self.entry(5, |b| put_u64(b, end));
        }
    }

    /// Write the entries noted so far (one `write(2)`), and the hand-off
    /// mark if it moved: call before the WAL step they describe.
    pub(super) fn write(&mut self) {
        self.note_handed();
        if self.buf.is_empty() {
            return;
        }
        match self.journal.write_all_at(&self.buf, self.journal_len) {
            Ok(()) => {
                self.journal_len += self.buf.len() as u64;
                self.dirty = true;
            }
            Err(e) => self.broke(&e),
        }
        self.buf.clear();
    }

    /// Make the entries written durable (with the group commit).
    pub(super) fn sync(&mut self) {
        if self.dirty {
            match self.journal.sync_data() {
                Ok(()) => self.dirty = false,
                Err(e) => self.broke(&e),
            }
        }
    }

    /// For a group commit on the sync thread: a handle on the journal to
    /// `fdatasync` there, if entries were written since the last sync (they
    /// count as synced from here on: the commit's acknowledgements wait for
    /// it). `None` when there is nothing to sync, or when no handle could be
    /// made and the journal was synced here instead.
    pub(super) fn sync_handle(&mut self) -> Option<File> {
        if !self.dirty {
            return None;
        }
        match self.journal.try_clone() {
            Ok(f) => {
                self.dirty = false;
                Some(f)
            }
            Err(_) => {
                self.sync();
                None
            }
        }
    }

    /// Syncing a handle from `sync_handle` failed.
    pub(super) fn sync_failed(&mut self, e: &io::Error) {
        let path = self.dir.join(JOURNAL);
        self.broke(&err_at(&path)(io::Error::new(e.kind(), e.to_string())));
    }

    fn broke(&mut self, e: &io::Error) {
        if !self.broken {
            self.broken = true;
            error!(dir = %self.dir.display(), error = %e, "Per-tenant accounts: writing the journal failed; the counts may not balance after a crash.");
        }
    }

    /// Whether the journal says record `seq` was settled (delivered or
    /// dropped) though the WAL still holds it unacknowledged above its
    /// watermark (after a restart): not to be read again.
    pub(super) fn is_settled(&self, seq: u64) -> bool {
        !self.settled_ahead.is_empty() && self.settled_ahead.contains(&seq)
    }

    /// Whether a snapshot is due.
    pub(super) fn due(&self) -> bool {
        self.last_snapshot.elapsed() >= SNAPSHOT_EVERY
    }

    /// After a successful full sync of `wal`: write the snapshot and restart
    /// the journal.
    pub(super) fn snapshot(&mut self, wal: &Wal) -> io::Result<()> {
        self.write();
        self.last_snapshot = Instant::now();
        let w = wal.first_unacked();
        self.settled_ahead = self.settled_ahead.split_off(&w);
        let mut rows = Ledger::default();
        for (name, c) in self.book.snapshot() {
            let row = c.row();
            if row != Row::default() {
                rows.rows.push((name, row));
            }
        }
        let snap = Snapshot {
            generation: self.generation + 1,
            watermark: w,
            handed: self.handed,
            settled: self.settled_ahead.iter().copied().collect(),
            rows,
        };
        write_snapshot(&self.dir, &snap)?;
        self.generation = snap.generation;
        let path = self.dir.join(JOURNAL);
        let mut header = JOURNAL_MAGIC.to_vec();
        header.extend_from_slice(&self.generation.to_le_bytes());
        let reset = self
            .journal
            .set_len(0)
            .and_then(|()| self.journal.write_all_at(&header, 0))
            .and_then(|()| self.journal.sync_data())
            .map_err(err_at(&path));
        if let Err(e) = reset {
            // Entries appended under the old generation would be ignored.
            self.broke(&e);
            return Err(e);
        }
        self.journal_len = JOURNAL_HEADER;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
#[path = "accounts_tests.rs"]
mod tests;
