//! Per-tenant accounts kept beside a disk buffer, so that for every tenant
//! "received = delivered + dropped + in the buffer" holds across a `kill -9`.
//!
//! Two files in the buffer's directory (the WAL ignores them):
//!
//! ```text
//! tenants          the snapshot: "SLTACC01", u32 body length, u32 CRC-32C of
//!                  the body; body: generation u64, watermark u64, settled seqs
//!                  (varint count, varints), rows (varint count, each: name as
//!                  varint length + UTF-8, then 10 varints: received events,
//!                  bytes, delivered events, bytes, dropped by reason)
//! tenants.journal  what happened since: "SLTJRN01", generation u64, then entries:
//!                  u32 body length, u32 CRC-32C, body: kind u8, then
//!                  1 append  first u64, end u64, rows   (a batch stored at
//!                                                       seqs first..end)
//!                  2 cancel  first u64                  (that append failed)
//!                  3 settle  first u64, end u64, rows   (records resolved:
//!                                                       delivered, refused,
//!                                                       or dropped when full)
//!                  4 rows    rows                       (counts of a batch
//!                                                       stored nowhere)
//! ```
//!
//! Rule: every entry is written (one `write(2)`, so a killed process keeps it)
//! *before* the WAL step it describes — the append, the acknowledgement, the
//! `drop_oldest` — and is fsynced with the group commit, before any source
//! hears that its batch is stored. So after a crash the journal may be ahead of
//! the WAL, never behind, and recovery ([`recover`]) brings the WAL up to it:
//! - an append whose records are all in the WAL counts; one whose records
//!   are not (the kill came between the entry and the write, or tore the
//!   write) does not, and what of it did reach the WAL is acknowledged there
//!   (discarded: its source never heard it was stored, and sends it again);
//! - a settle counts, and its records still in the WAL are acknowledged there
//!   (they were delivered: not replayed, so not delivered twice);
//! - the snapshot's watermark and settled seqs are acknowledged likewise.
//!
//! The snapshot is written after a full WAL sync (records and checkpoint
//! durable), at most once a second and at the stop: a temporary file,
//! fsynced, renamed, the directory fsynced; then the journal restarts with the
//! snapshot's `generation`. A journal of another `generation` is already in the snapshot.
//! Names are the book's series (at most `max_tenant_series` plus `other`), so
//! the snapshot is bounded whatever ids clients send; the journal holds what
//! happened in at most a second.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::wal::Wal;
use tracing::{error, info, warn};

use crate::route::accounting::{Ledger, Reason, Row, TenantBook};

const SNAPSHOT: &str = "tenants";
const SNAPSHOT_TMP: &str = "tenants.tmp";
const JOURNAL: &str = "tenants.journal";
const SNAP_MAGIC: &[u8; 8] = b"SLTACC01";
const JOURNAL_MAGIC: &[u8; 8] = b"SLTJRN01";
const JOURNAL_HEADER: u64 = 16;
/// Longest series name read back (tenant ids are at most 64 bytes).
const MAX_NAME: usize = 255;
/// How often a snapshot replaces the journal, at most.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    Append { first: u64, end: u64, rows: Ledger },
    Cancel { first: u64 },
    Settle { first: u64, end: u64, rows: Ledger },
    Rows(Ledger),
}

/// The snapshot's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Snapshot {
    generation: u64,
    watermark: u64,
    settled: Vec<u64>,
    rows: Ledger,
}

/// What recovery counts and what it acknowledges in the WAL.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Recovered {
    pub(super) rows: Ledger,
    pub(super) to_ack: Vec<Range<u64>>,
}

/// Counts after a crash: the snapshot, the journal's entries, and the WAL's
/// state as reopened (`watermark`, `next_seq`). See the module doc.
pub(super) fn recover(snap: &Snapshot, entries: &[Entry], watermark: u64, next: u64) -> Recovered {
    let mut out = Recovered {
        rows: snap.rows.clone(),
        to_ack: Vec::new(),
    };
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
        }
    }
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
            info!(dir = %dir.display(), journal_entries = entries.len(), acknowledged_records = acked, "Per-tenant accounts recovered.");
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
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 8]);
        self.buf.push(kind);
        body(&mut self.buf);
        let len = (self.buf.len() - start - 8) as u32;
        let crc = crc32c::crc32c(&self.buf[start + 8..]);
        self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Write the entries noted so far (one `write(2)`): call before the WAL
    /// step they describe.
    pub(super) fn write(&mut self) {
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

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn put_rows(b: &mut Vec<u8>, l: &Ledger) {
    put_varint(b, l.rows.len() as u64);
    for (name, r) in &l.rows {
        put_varint(b, name.len() as u64);
        b.extend_from_slice(name.as_bytes());
        for v in [
            r.received_events,
            r.received_bytes,
            r.delivered_events,
            r.delivered_bytes,
        ]
        .into_iter()
        .chain(r.dropped)
        {
            put_varint(b, v);
        }
    }
}

/// A cursor over bytes that fails (`None`) rather than reading past the end.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.take(1)?.first()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn rows(&mut self) -> Option<Ledger> {
        let n = self.varint()?;
        // Each row takes at least 11 bytes: no reservation beyond the input.
        if n > (self.0.len() / 11) as u64 {
            return None;
        }
        let mut l = Ledger::default();
        for _ in 0..n {
            let len = self.varint()? as usize;
            if len > MAX_NAME {
                return None;
            }
            let name: Arc<str> = std::str::from_utf8(self.take(len)?).ok()?.into();
            let mut v = [0u64; 4 + Reason::ALL.len()];
            for x in &mut v {
                *x = self.varint()?;
            }
            let row = Row {
                received_events: v[0],
                received_bytes: v[1],
                delivered_events: v[2],
                delivered_bytes: v[3],
                dropped: std::array::from_fn(|i| v[4 + i]),
            };
            l.row(&name).add(&row);
        }
        Some(l)
    }
}

fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let mut body = Vec::new();
    put_u64(&mut body, s.generation);
    put_u64(&mut body, s.watermark);
    put_varint(&mut body, s.settled.len() as u64);
    for &seq in &s.settled {
        put_varint(&mut body, seq);
    }
    put_rows(&mut body, &s.rows);
    let mut out = SNAP_MAGIC.to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn decode_snapshot(bytes: &[u8]) -> Option<Snapshot> {
    let mut b = Bytes(bytes);
    if b.take(8)? != SNAP_MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(b.take(4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b.take(4)?.try_into().ok()?);
    let body = b.take(len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let mut b = Bytes(body);
    let generation = b.u64()?;
    let watermark = b.u64()?;
    let n = b.varint()?;
    if n > b.0.len() as u64 {
        return None;
    }
    let settled = (0..n).map(|_| b.varint()).collect::<Option<Vec<_>>>()?;
    let rows = b.rows()?;
    Some(Snapshot {
        generation,
        watermark,
        settled,
        rows,
    })
}

fn read_snapshot(dir: &Path) -> io::Result<Option<Snapshot>> {
    let path = dir.join(SNAPSHOT);
    match std::fs::read(&path) {
        Ok(bytes) => decode_snapshot(&bytes)
            .map(Some)
            .ok_or_else(|| io::Error::other(format!("{}: damaged", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err_at(&path)(e)),
    }
}

fn write_snapshot(dir: &Path, s: &Snapshot) -> io::Result<()> {
    let tmp = dir.join(SNAPSHOT_TMP);
    let mut f = File::create(&tmp).map_err(err_at(&tmp))?;
    f.write_all(&encode_snapshot(s))
        .and_then(|()| f.sync_data())
        .map_err(err_at(&tmp))?;
    std::fs::rename(&tmp, dir.join(SNAPSHOT)).map_err(err_at(&tmp))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err_at(dir))
}

/// The journal's entries of generation `generation`, up to the first torn or damaged
/// one (a journal of another generation is already in the snapshot).
fn read_journal(dir: &Path, generation: u64) -> io::Result<Vec<Entry>> {
    let path = dir.join(JOURNAL);
    let mut bytes = Vec::new();
    match File::open(&path) {
        Ok(mut f) => f.read_to_end(&mut bytes).map_err(err_at(&path))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err_at(&path)(e)),
    };
    Ok(decode_journal(&bytes, generation))
}

fn decode_journal(bytes: &[u8], generation: u64) -> Vec<Entry> {
    let mut b = Bytes(bytes);
    let mut out = Vec::new();
    if b.take(8) != Some(&JOURNAL_MAGIC[..]) || b.u64() != Some(generation) {
        return out;
    }
    while let Some(e) = next_entry(&mut b) {
        out.push(e);
    }
    out
}

fn next_entry(b: &mut Bytes<'_>) -> Option<Entry> {
    let len = u32::from_le_bytes(b.take(4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b.take(4)?.try_into().ok()?);
    let body = b.take(len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let mut e = Bytes(body);
    let kind = *e.take(1)?.first()?;
    Some(match kind {
        1 => Entry::Append {
            first: e.u64()?,
            end: e.u64()?,
            rows: e.rows()?,
        },
        2 => Entry::Cancel { first: e.u64()? },
        3 => Entry::Settle {
            first: e.u64()?,
            end: e.u64()?,
            rows: e.rows()?,
        },
        4 => Entry::Rows(e.rows()?),
        _ => return None,
    })
}

#[cfg(test)]
#[path = "accounts_tests.rs"]
mod tests;
