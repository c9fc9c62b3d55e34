//! The accounts' two files, byte for byte (see the parent module's doc):
//! encoding, and decoding that fails (`None`) rather than trusts a length.
//!
//! Version 2 (`SLTACC02`, `SLTJRN02`) adds the hand-off mark: a `handed`
//! field in the snapshot, entry kind 5 in the journal, and a re-sent count
//! (`resent_events`) at the end of every row. Version 1 files (written before
//! it) are read as having no mark and no re-sends; files are always written in
//! version 2.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use super::{Entry, JOURNAL, SNAPSHOT, SNAPSHOT_TMP, Snapshot, err_at};
use crate::route::accounting::{Ledger, Reason, Row};

const SNAP_MAGIC: &[u8; 8] = b"SLTACC02";
const SNAP_MAGIC_V1: &[u8; 8] = b"SLTACC01";
pub(super) const JOURNAL_MAGIC: &[u8; 8] = b"SLTJRN02";
const JOURNAL_MAGIC_V1: &[u8; 8] = b"SLTJRN01";
/// Magic and generation.
pub(super) const JOURNAL_HEADER: u64 = 16;
/// Longest series name read back (tenant ids are at most 64 bytes).
const MAX_NAME: usize = 255;

pub(super) fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

pub(super) fn put_varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

pub(super) fn put_rows(b: &mut Vec<u8>, l: &Ledger) {
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
        .chain([r.resent_events])
        {
            put_varint(b, v);
        }
    }
}

/// Append one journal entry to `buf`: u32 body length, u32 CRC-32C, body
/// (`kind`, then what `body` writes).
pub(super) fn put_entry(buf: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    buf.push(kind);
    body(buf);
    let len = (buf.len() - start - 8) as u32;
    let crc = crc32c::crc32c(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
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

    /// Rows of format `version` (1: without `resent_events`).
    fn rows(&mut self, version: u8) -> Option<Ledger> {
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
            let mut v = [0u64; 5 + Reason::ALL.len()];
            let count = if version == 1 { v.len() - 1 } else { v.len() };
            for x in &mut v[..count] {
                *x = self.varint()?;
            }
            let row = Row {
                received_events: v[0],
                received_bytes: v[1],
                delivered_events: v[2],
                delivered_bytes: v[3],
                dropped: std::array::from_fn(|i| v[4 + i]),
                resent_events: v[4 + Reason::ALL.len()],
            };
            l.row(&name).add(&row);
        }
        Some(l)
    }
}

pub(super) fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let mut body = Vec::new();
    put_u64(&mut body, s.generation);
    put_u64(&mut body, s.watermark);
    put_u64(&mut body, s.handed);
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

pub(super) fn decode_snapshot(bytes: &[u8]) -> Option<Snapshot> {
    let mut b = Bytes(bytes);
    let version = match b.take(8)? {
        m if m == SNAP_MAGIC => 2,
        m if m == SNAP_MAGIC_V1 => 1,
        _ => return None,
    };
    let len = u32::from_le_bytes(b.take(4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b.take(4)?.try_into().ok()?);
    let body = b.take(len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let mut b = Bytes(body);
    let generation = b.u64()?;
    let watermark = b.u64()?;
    let handed = if version == 1 { 0 } else { b.u64()? };
    let n = b.varint()?;
    if n > b.0.len() as u64 {
        return None;
    }
    let settled = (0..n).map(|_| b.varint()).collect::<Option<Vec<_>>>()?;
    let rows = b.rows(version)?;
    Some(Snapshot {
        generation,
        watermark,
        handed,
        settled,
        rows,
    })
}

pub(super) fn read_snapshot(dir: &Path) -> io::Result<Option<Snapshot>> {
    let path = dir.join(SNAPSHOT);
    match std::fs::read(&path) {
        Ok(bytes) => decode_snapshot(&bytes)
            .map(Some)
            .ok_or_else(|| io::Error::other(format!("{}: damaged", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err_at(&path)(e)),
    }
}

pub(super) fn write_snapshot(dir: &Path, s: &Snapshot) -> io::Result<()> {
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
pub(super) fn read_journal(dir: &Path, generation: u64) -> io::Result<Vec<Entry>> {
    let path = dir.join(JOURNAL);
    let mut bytes = Vec::new();
    match File::open(&path) {
        Ok(mut f) => f.read_to_end(&mut bytes).map_err(err_at(&path))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err_at(&path)(e)),
    };
    Ok(decode_journal(&bytes, generation))
}

pub(super) fn decode_journal(bytes: &[u8], generation: u64) -> Vec<Entry> {
    let mut b = Bytes(bytes);
    let mut out = Vec::new();
    let version = match b.take(8) {
        Some(m) if m == JOURNAL_MAGIC => 2,
        Some(m) if m == JOURNAL_MAGIC_V1 => 1,
        _ => return out,
    };
    if b.u64() != Some(generation) {
        return out;
    }
    while let Some(e) = next_entry(&mut b, version) {
        out.push(e);
    }
    out
}

fn next_entry(b: &mut Bytes<'_>, version: u8) -> Option<Entry> {
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
            rows: e.rows(version)?,
        },
        2 => Entry::Cancel { first: e.u64()? },
        3 => Entry::Settle {
            first: e.u64()?,
            end: e.u64()?,
            rows: e.rows(version)?,
        },
        4 => Entry::Rows(e.rows(version)?),
        5 if version >= 2 => Entry::Handed { end: e.u64()? },
        _ => return None,
    })
}
