//! Entries and times: `[time, record]`, `[[time, metadata], record]` (v1.5), and the
//! time forms (integer, EventTime ext 0 of 8 bytes, float).
//!
//! Invariants: a record is always a map; EventTime seconds are unsigned 32-bit and
//! nanoseconds below 1e9; Fluent Bit group markers (EventTime seconds `0xFFFFFFFF` /
//! `0xFFFFFFFE`) are consumed and reported as `None`, never as events. Records and
//! metadata are validated in place with the caller's depth budget and reported as
//! spans of the walked slice; nothing is allocated per entry.

use bytes::Bytes;

use super::decode::read_error;
use super::error::{DecodeErrorKind, TimeError};
use super::msgpack::{Header, Reader};
use super::raw::MapSpan;
use super::{Entry, EventTime};

/// A validated entry, as positions in the slice its reader walked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntrySpan {
    pub(crate) time: EventTime,
    pub(crate) record: MapSpan,
    pub(crate) metadata: Option<MapSpan>,
}

impl EntrySpan {
    /// The entry as slices of `backing`, where the walked slice began at `base`.
    pub(crate) fn to_entry(self, backing: &Bytes, base: usize) -> Entry {
        Entry {
            time: self.time,
            record: self.record.to_raw(backing, base),
            metadata: self.metadata.map(|m| m.to_raw(backing, base)),
        }
    }
}

/// Parses `[time, record]` or `[[time, metadata], record]`. `Ok(None)` for a Fluent
/// Bit group marker, which is consumed but is not an event.
pub(crate) fn parse_entry(
    r: &mut Reader<'_>,
    depth: usize,
) -> Result<Option<EntrySpan>, DecodeErrorKind> {
    // Fast path for what Fluentd, Fluent Bit and sluice send: fixarray(2), EventTime
    // (fixext8 type 0), then a map record. Same checks as the general path below.
    if let Some(&[0x92, 0xd7, 0x00, s0, s1, s2, s3, n0, n1, n2, n3, m, ..]) = r.rest().get(..12)
        && matches!(m, 0x80..=0x8f | 0xde | 0xdf)
    {
        r.advance(11);
        let secs = u32::from_be_bytes([s0, s1, s2, s3]);
        let nanos = u32::from_be_bytes([n0, n1, n2, n3]);
        let time = if GROUP_MARKERS.contains(&secs) {
            None
        } else if nanos >= 1_000_000_000 {
            return Err(time_error(TimeError::Nanos(nanos)));
        } else {
            Some(EventTime {
                secs: i64::from(secs),
                nanos,
            })
        };
        let record = parse_record(r, depth)?;
        return Ok(time.map(|time| EntrySpan {
            time,
            record,
            metadata: None,
        }));
    }
    match r.header().map_err(read_error)? {
        Header::Array(2) => {}
        Header::Array(_) => {
            return Err(DecodeErrorKind::InvalidEntry {
                reason: "entry is not a 2-element array",
            });
        }
        _ => {
            return Err(DecodeErrorKind::InvalidEntry {
                reason: "entry is not an array",
            });
        }
    }
    let (time, metadata) = match r.header().map_err(read_error)? {
        Header::Array(n @ 1..=2) => {
            let header = r.header().map_err(read_error)?;
            let time = parse_time(r, header)?;
            let metadata = if n == 2 {
                match r.header().map_err(read_error)? {
                    Header::Nil => None,
                    Header::Map(n) => Some(MapSpan::read(r, n, depth).map_err(read_error)?),
                    _ => {
                        return Err(DecodeErrorKind::InvalidEntry {
                            reason: "event metadata is not a map",
                        });
                    }
                }
            } else {
                None
            };
            (time, metadata)
        }
        Header::Array(_) => {
            return Err(DecodeErrorKind::InvalidEntry {
                reason: "time slot array is not [time, metadata]",
            });
        }
        header => (parse_time(r, header)?, None),
    };
    let record = parse_record(r, depth)?;
    Ok(time.map(|time| EntrySpan {
        time,
        record,
        metadata,
    }))
}

pub(crate) fn parse_record(r: &mut Reader<'_>, depth: usize) -> Result<MapSpan, DecodeErrorKind> {
    match r.header().map_err(read_error)? {
        Header::Map(n) => MapSpan::read(r, n, depth).map_err(read_error),
        other => Err(DecodeErrorKind::RecordNotMap {
            found: other.type_name(),
        }),
    }
}

/// EventTime seconds Fluent Bit uses for group start / end markers.
const GROUP_MARKERS: [u32; 2] = [0xffff_ffff, 0xffff_fffe];

/// Decodes a time whose header was just read. `Ok(None)` for a group marker.
pub(crate) fn parse_time(
    r: &mut Reader<'_>,
    header: Header,
) -> Result<Option<EventTime>, DecodeErrorKind> {
    let time = match header {
        Header::Uint(secs) => EventTime {
            secs: i64::try_from(secs).map_err(|_| time_error(TimeError::OutOfRange))?,
            nanos: 0,
        },
        Header::Int(secs) => EventTime { secs, nanos: 0 },
        Header::F64(t) => float_time(t)?,
        Header::F32(t) => float_time(f64::from(t))?,
        Header::Ext(0, 8) => {
            let b = r.bytes(8).map_err(read_error)?;
            let secs = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            let nanos = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            if GROUP_MARKERS.contains(&secs) {
                return Ok(None);
            }
            if nanos >= 1_000_000_000 {
                return Err(time_error(TimeError::Nanos(nanos)));
            }
            EventTime {
                secs: i64::from(secs),
                nanos,
            }
        }
        Header::Ext(0, len) => return Err(time_error(TimeError::ExtLen(len))),
        Header::Ext(ty, _) => return Err(time_error(TimeError::ExtType(ty))),
        other => return Err(time_error(TimeError::WrongType(other.type_name()))),
    };
    Ok(Some(time))
}

fn time_error(e: TimeError) -> DecodeErrorKind {
    DecodeErrorKind::InvalidTime(e)
}

/// Float seconds (fluent-logger-python without nanosecond precision): whole seconds
/// plus the fraction rounded to the nearest nanosecond.
pub(crate) fn float_time(t: f64) -> Result<EventTime, DecodeErrorKind> {
    // 2^63 as f64; every finite f64 below it and >= -2^63 floors into an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if !t.is_finite() || !(-LIMIT..LIMIT).contains(&t) {
        return Err(time_error(TimeError::OutOfRange));
    }
    let secs = t.floor();
    let nanos = ((t - secs) * 1e9).round() as u32;
    Ok(EventTime::new(secs as i64, nanos))
}
