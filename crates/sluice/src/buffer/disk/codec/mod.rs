//! The disk buffer's record payload: one serialized run of events.
//!
//! A batch becomes one WAL record, or several when it would exceed the record
//! cap (the WAL never splits a record; this codec splits the batch between
//! events). The WAL frames and checksums records; this layout is inside.
//!
//! # Byte layout (integers little-endian; `varint` is unsigned LEB128)
//! ```text
//! record   0   1  version: 1, or 2 when a chunk label trailer follows the
//!                 events ([`label`])
//!          1   4  event count n (u32)
//!          5   …  n events
//! event    flags (u8), then in this order:
//!            time_ns        i64
//!            body           varint len, bytes
//!            tag            string, absent when flags & SAME_TAG
//!            source         string, absent when flags & SAME_SOURCE
//!            tenant         string, when flags & TENANT and not & SAME_TENANT
//!            bucket         varint, when flags & BUCKET
//!            fields         when flags & FIELDS and not & SAME_FIELDS:
//!                           varint pair count, then msgpack key, msgpack value
//!                           (a raw forward record's pair bytes are copied as
//!                           they are: the same layout)
//!            origin         when flags & ORIGIN: u8 0 = same as the previous
//!                           event's, 1 = new: u16 presence bits, then each
//!                           present member in declaration order
//! string   varint len, UTF-8 bytes
//! ```
//! "Same as the previous event" refers to the previous event of the same
//! record, so each record decodes alone; decoded events share one record for
//! such runs, and bodies and fields are slices of the record's buffer (no copy):
//! fields come back as a raw map ([`Record::Raw`]) validated in place, whichever
//! form they were written from.
//!
//! Decoding never panics and allocates at most in proportion to the input
//! (counts are checked against the bytes left before any reservation); the
//! WAL's CRC already rejects torn or flipped bytes, this guards against bugs
//! and foreign files.

use std::sync::Arc;

use bytes::Bytes;

use crate::ack::ChunkLabel;
use crate::event::{Event, Origin, RawMap, Record};

mod label;
pub use label::StoredLabel;

const VERSION: u8 = 1;
/// Version 1 plus a chunk label trailer.
const VERSION_LABELLED: u8 = 2;
/// Nesting allowed in a stored record (below its map): forward records are capped
/// far lower at decode; this bounds what recursive readers see.
const MAX_FIELD_DEPTH: usize = 512;
/// Bytes before the first event.
pub const HEADER_LEN: usize = 5;
/// Smallest encoded event: flags, time, empty body.
const MIN_EVENT_LEN: usize = 1 + 8 + 1;

const SAME_TAG: u8 = 0x01;
const SAME_SOURCE: u8 = 0x02;
const TENANT: u8 = 0x04;
const SAME_TENANT: u8 = 0x08;
const BUCKET: u8 = 0x10;
const FIELDS: u8 = 0x20;
const SAME_FIELDS: u8 = 0x40;
const ORIGIN: u8 = 0x80;

/// Why a payload does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a version this build reads.
    #[error("unknown record version {0}")]
    Version(u8),
    /// Ended inside an event.
    #[error("record ends inside event {0}")]
    Truncated(u32),
    /// A string is not UTF-8.
    #[error("event {0}: a string is not UTF-8")]
    Utf8(u32),
    /// A structured field is not valid msgpack.
    #[error("event {0}: invalid msgpack field")]
    Msgpack(u32),
    /// A "same as previous" flag on the first event.
    #[error("event {0}: refers to a previous event that does not exist")]
    NoPrevious(u32),
    /// Bytes after the last event.
    #[error("{0} bytes after the last event")]
    Trailing(usize),
}

/// Number of events in a payload, from its header alone.
pub fn event_count(payload: &[u8]) -> Option<u32> {
    if payload.len() < HEADER_LEN || !matches!(payload[0], VERSION | VERSION_LABELLED) {
        return None;
    }
    Some(u32::from_le_bytes([
        payload[1], payload[2], payload[3], payload[4],
    ]))
}

/// Serialize `events` into records of at most `max_record` bytes each. An event
/// that does not fit alone gets a record of its own of up to `max_alone` bytes
/// (the largest record the buffer can hold); one larger still is left out and
/// its index pushed to `oversize`. With a `label` (a client chunk), every
/// record carries it in a trailer (counted in the sizes).
pub fn encode(
    events: &[Event],
    label: Option<&ChunkLabel>,
    max_record: usize,
    max_alone: usize,
    records: &mut Vec<Vec<u8>>,
    oversize: &mut Vec<usize>,
) {
    let trailer = label::trailer(label);
    let max_record = max_record.saturating_sub(trailer.len()).max(HEADER_LEN + 1);
    let max_alone = max_alone.saturating_sub(trailer.len()).max(HEADER_LEN + 1);
    let estimate: usize = events.iter().map(|e| e.body.len() + 16).sum::<usize>() + HEADER_LEN;
    let mut buf = Vec::with_capacity(estimate.min(max_record));
    let mut count = 0u32;
    let mut prev: Option<&Event> = None;
    start(&mut buf);
    for (i, e) in events.iter().enumerate() {
        let mark = buf.len();
        encode_event(e, prev, &mut buf);
        if buf.len() <= max_record {
            count += 1;
            prev = Some(e);
            continue;
        }
        buf.truncate(mark);
        // It does not fit: close the current record, then try it alone.
        if count > 0 {
            finish(&mut buf, count, &trailer);
            records.push(std::mem::replace(
                &mut buf,
                Vec::with_capacity(max_record.min(estimate)),
            ));
            start(&mut buf);
            count = 0;
        }
        encode_event(e, None, &mut buf);
        // Over `max_record` but within `max_alone`: the next event finds the
        // record full and closes it, so it stays alone.
        if buf.len() > max_alone.max(max_record) {
            buf.truncate(HEADER_LEN);
            oversize.push(i);
            prev = None;
        } else {
            count = 1;
            prev = Some(e);
        }
    }
    if count > 0 {
        finish(&mut buf, count, &trailer);
        records.push(buf);
    }
}

fn start(buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&[VERSION, 0, 0, 0, 0]);
}

fn finish(buf: &mut Vec<u8>, count: u32, trailer: &[u8]) {
    buf[1..HEADER_LEN].copy_from_slice(&count.to_le_bytes());
    if !trailer.is_empty() {
        buf[0] = VERSION_LABELLED;
        buf.extend_from_slice(trailer);
    }
}

/// The chunk label of a record, read from its end without decoding events.
pub fn chunk_label(payload: &[u8]) -> Option<StoredLabel<'_>> {
    if payload.first() != Some(&VERSION_LABELLED) {
        return None;
    }
    label::split(payload, HEADER_LEN).map(|(_, l)| l)
}

fn encode_event(e: &Event, prev: Option<&Event>, out: &mut Vec<u8>) {
    let mut flags = 0u8;
    let same_tag = prev.is_some_and(|p| Arc::ptr_eq(&p.tag, &e.tag) || p.tag == e.tag);
    let same_source =
        prev.is_some_and(|p| Arc::ptr_eq(&p.source, &e.source) || p.source == e.source);
    if same_tag {
        flags |= SAME_TAG;
    }
    if same_source {
        flags |= SAME_SOURCE;
    }
    if let Some(t) = &e.tenant {
        flags |= TENANT;
        if prev
            .and_then(|p| p.tenant.as_ref())
            .is_some_and(|pt| pt == t)
        {
            flags |= SAME_TENANT;
        }
    }
    if e.bucket.is_some() {
        flags |= BUCKET;
    }
    if let Some(f) = &e.fields {
        flags |= FIELDS;
        if prev
            .and_then(|p| p.fields.as_ref())
            .is_some_and(|pf| pf.same_as(f))
        {
            flags |= SAME_FIELDS;
        }
    }
    if e.origin.is_some() {
        flags |= ORIGIN;
    }
    out.push(flags);
    out.extend_from_slice(&e.time_ns.to_le_bytes());
    put_bytes(out, &e.body);
    if !same_tag {
        put_bytes(out, e.tag.as_bytes());
    }
    if !same_source {
        put_bytes(out, e.source.as_bytes());
    }
    if flags & (TENANT | SAME_TENANT) == TENANT {
        put_bytes(out, e.tenant.as_deref().unwrap_or_default().as_bytes());
    }
    if let Some(b) = e.bucket {
        put_varint(out, u64::from(b));
    }
    if flags & (FIELDS | SAME_FIELDS) == FIELDS {
        match &e.fields {
            Some(Record::Raw(m)) => {
                put_varint(out, m.len() as u64);
                out.extend_from_slice(m.pairs_bytes());
            }
            Some(Record::Decoded(fields)) => {
                put_varint(out, fields.len() as u64);
                for (k, v) in fields.iter() {
                    // Writing into a Vec cannot fail.
                    let _ = rmpv::encode::write_value(out, k);
                    let _ = rmpv::encode::write_value(out, v);
                }
            }
            None => put_varint(out, 0),
        }
    }
    if let Some(o) = &e.origin {
        if prev
            .and_then(|p| p.origin.as_ref())
            .is_some_and(|po| Arc::ptr_eq(po, o))
        {
            out.push(0);
        } else {
            out.push(1);
            encode_origin(o, out);
        }
    }
}

fn encode_origin(o: &Origin, out: &mut Vec<u8>) {
    let present = [
        o.path.is_some(),
        o.pid.is_some(),
        o.uid.is_some(),
        o.gid.is_some(),
        o.user.is_some(),
        o.group.is_some(),
        o.command.is_some(),
        o.host.is_some(),
        o.offset.is_some(),
        o.static_fields.is_some(),
        o.static_tags.is_some(),
    ];
    let bits = present
        .iter()
        .enumerate()
        .fold(0u16, |acc, (i, p)| acc | (u16::from(*p) << i));
    out.extend_from_slice(&bits.to_le_bytes());
    for s in [&o.path].into_iter().flatten() {
        put_bytes(out, s.as_bytes());
    }
    for n in [o.pid, o.uid, o.gid].into_iter().flatten() {
        put_varint(out, u64::from(n));
    }
    for s in [&o.user, &o.group, &o.command, &o.host]
        .into_iter()
        .flatten()
    {
        put_bytes(out, s.as_bytes());
    }
    if let Some(n) = o.offset {
        put_varint(out, n);
    }
    if let Some(f) = &o.static_fields {
        put_varint(out, f.len() as u64);
        for (k, v) in f.iter() {
            put_bytes(out, k.as_bytes());
            put_bytes(out, v.as_bytes());
        }
    }
    if let Some(t) = &o.static_tags {
        put_varint(out, t.len() as u64);
        for s in t.iter() {
            put_bytes(out, s.as_bytes());
        }
    }
}

#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Decode a record's payload into its events; bodies borrow `payload`.
pub fn decode(payload: Bytes) -> Result<Vec<Event>, DecodeError> {
    let end = match payload.first() {
        Some(&VERSION) => payload.len(),
        Some(&VERSION_LABELLED) => label::split(&payload, HEADER_LEN)
            .map(|(end, _)| end)
            .ok_or(DecodeError::Truncated(0))?,
        v => return Err(DecodeError::Version(v.copied().unwrap_or(0))),
    };
    let n = event_count(&payload).ok_or(DecodeError::Truncated(0))?;
    let mut r = Reader {
        buf: &payload[..end],
        pos: HEADER_LEN,
        payload: &payload,
        index: 0,
    };
    let room = (end - HEADER_LEN) / MIN_EVENT_LEN;
    let mut events: Vec<Event> = Vec::with_capacity((n as usize).min(room));
    for i in 0..n {
        r.index = i;
        let e = r.event(events.last())?;
        events.push(e);
    }
    if r.pos != end {
        return Err(DecodeError::Trailing(end - r.pos));
    }
    Ok(events)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    payload: &'a Bytes,
    index: u32,
}

impl Reader<'_> {
    fn truncated(&self) -> DecodeError {
        DecodeError::Truncated(self.index)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| self.truncated())?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.truncated())
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.buf.len() - self.pos)
            .ok_or_else(|| self.truncated())
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.len()?;
        let start = self.pos;
        self.take(n)?;
        Ok(self.payload.slice(start..start + n))
    }

    fn str(&mut self) -> Result<&str, DecodeError> {
        let n = self.len()?;
        let index = self.index;
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::Utf8(index))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(str::to_owned)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.varint()?).map_err(|_| self.truncated())
    }

    /// `n` msgpack pairs, validated and kept as a slice of the payload.
    fn raw_map(&mut self, n: usize) -> Result<RawMap, DecodeError> {
        let n = u32::try_from(n).map_err(|_| self.truncated())?;
        let rest = self.payload.slice(self.pos..);
        let (map, used) = RawMap::parse_prefix(&rest, n, MAX_FIELD_DEPTH)
            .map_err(|_| DecodeError::Msgpack(self.index))?;
        self.pos += used;
        Ok(map)
    }

    fn event(&mut self, prev: Option<&Event>) -> Result<Event, DecodeError> {
        let flags = self.u8()?;
        let time_ns = i64::from_le_bytes(self.take(8)?.try_into().map_err(|_| self.truncated())?);
        let body = self.bytes()?;
        let no_prev = DecodeError::NoPrevious(self.index);
        let tag: Arc<str> = if flags & SAME_TAG != 0 {
            prev.ok_or(no_prev.clone())?.tag.clone()
        } else {
            self.str()?.into()
        };
        let source: Arc<str> = if flags & SAME_SOURCE != 0 {
            prev.ok_or(no_prev.clone())?.source.clone()
        } else {
            self.str()?.into()
        };
        let tenant = match (flags & TENANT != 0, flags & SAME_TENANT != 0) {
            (false, _) => None,
            (true, true) => Some(prev.and_then(|p| p.tenant.clone()).ok_or(no_prev.clone())?),
            (true, false) => Some(self.str()?.into()),
        };
        let bucket = if flags & BUCKET != 0 {
            Some(self.u32()?)
        } else {
            None
        };
        let fields = match (flags & FIELDS != 0, flags & SAME_FIELDS != 0) {
            (false, _) => None,
            (true, true) => Some(prev.and_then(|p| p.fields.clone()).ok_or(no_prev.clone())?),
            (true, false) => {
                let n = self.len()?;
                Some(Record::Raw(self.raw_map(n)?))
            }
        };
        let origin = if flags & ORIGIN != 0 {
            match self.u8()? {
                0 => Some(prev.and_then(|p| p.origin.clone()).ok_or(no_prev)?),
                _ => Some(Arc::new(self.origin()?)),
            }
        } else {
            None
        };
        Ok(Event {
            time_ns,
            body,
            tag,
            source,
            tenant,
            fields,
            origin,
            bucket,
        })
    }

    fn origin(&mut self) -> Result<Origin, DecodeError> {
        let bits = u16::from_le_bytes(self.take(2)?.try_into().map_err(|_| self.truncated())?);
        let has = |i: u32| bits & (1 << i) != 0;
        let mut o = Origin::default();
        if has(0) {
            o.path = Some(self.string()?);
        }
        if has(1) {
            o.pid = Some(self.u32()?);
        }
        if has(2) {
            o.uid = Some(self.u32()?);
        }
        if has(3) {
            o.gid = Some(self.u32()?);
        }
        if has(4) {
            o.user = Some(self.string()?);
        }
        if has(5) {
            o.group = Some(self.string()?);
        }
        if has(6) {
            o.command = Some(self.string()?);
        }
        if has(7) {
            o.host = Some(self.string()?);
        }
        if has(8) {
            o.offset = Some(self.varint()?);
        }
        if has(9) {
            let n = self.len()?;
            let mut f = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                f.push((self.string()?, self.string()?));
            }
            o.static_fields = Some(Arc::new(f));
        }
        if has(10) {
            let n = self.len()?;
            let mut t = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                t.push(self.string()?);
            }
            o.static_tags = Some(Arc::new(t));
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests;
