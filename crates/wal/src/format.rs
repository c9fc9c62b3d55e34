//! On-disk encodings: segment header, record frame, checkpoint, file names.
//!
//! Every integer is little-endian. The layouts are described in the crate
//! documentation; this module is the only place that knows the byte offsets.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Magic bytes opening every segment file (`S`luice `W`AL `S`e`G`, format 1).
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"SLWSEG01";
/// Length of the segment header: the magic only.
pub(crate) const SEGMENT_HEADER_LEN: u64 = SEGMENT_MAGIC.len() as u64;

/// Length of a record header: crc (4) + len (4) + seq (8) + time (8).
pub(crate) const RECORD_HEADER_LEN: usize = 24;

/// Hard cap on a record payload when *reading*. Reading never trusts the
/// configured `max_record_bytes`, so lowering that option cannot turn records
/// written under a higher one into "corruption"; allocation is additionally
/// bounded by the file length, checked before any buffer grows.
pub(crate) const MAX_RECORD_BYTES_LIMIT: u32 = 1 << 30;

/// Name of the checkpoint file.
pub(crate) const CHECKPOINT_NAME: &str = "checkpoint";
/// Name the checkpoint is written under before being renamed into place.
pub(crate) const CHECKPOINT_TMP_NAME: &str = "checkpoint.tmp";
/// Name of the lock file.
pub(crate) const LOCK_NAME: &str = "lock";
/// Magic bytes opening the checkpoint file (`S`luice `W`AL `C`heckpoint, format 1).
const CHECKPOINT_MAGIC: [u8; 8] = *b"SLWCKP01";
/// Length of one checkpoint slot: magic (8) + watermark (8) + crc (4). A file
/// of exactly this length is the single-slot form written by earlier versions.
pub(crate) const CHECKPOINT_LEN: usize = 20;
/// Offset of the second checkpoint slot (its own sector, so a torn write of
/// one slot never touches the other).
pub(crate) const CHECKPOINT_SLOT2: usize = 512;
/// Length of the two-slot checkpoint file.
pub(crate) const CHECKPOINT_FILE_LEN: usize = CHECKPOINT_SLOT2 + CHECKPOINT_LEN;

const SEGMENT_SUFFIX: &str = ".seg";
const SEGMENT_DIGITS: usize = 20;

/// Why bytes of a segment could not be read as records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// The segment does not start with the segment magic.
    BadSegmentHeader,
    /// The file ends inside a record header or payload (a torn write).
    Truncated,
    /// The length field exceeds the record size limit.
    BadLength(u32),
    /// The CRC32C does not match the header and payload.
    BadChecksum,
    /// The checksum holds but the sequence number is not the next one expected.
    BadSequence {
        /// The sequence number the position requires.
        expected: u64,
        /// The sequence number found in the record.
        found: u64,
    },
    /// A valid record whose sequence number belongs to the next segment.
    Overlap(u64),
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::BadSegmentHeader => f.write_str("bad segment header"),
            Corruption::Truncated => f.write_str("truncated record"),
            Corruption::BadLength(len) => write!(f, "record length {len} over limit"),
            Corruption::BadChecksum => f.write_str("checksum mismatch"),
            Corruption::BadSequence { expected, found } => {
                write!(f, "sequence {found} where {expected} was expected")
            }
            Corruption::Overlap(seq) => write!(f, "record {seq} overlaps the next segment"),
        }
    }
}

/// A decoded record header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordHeader {
    pub crc: u32,
    pub len: u32,
    pub seq: u64,
    pub time_ns: u64,
}

impl RecordHeader {
    pub(crate) fn decode(bytes: &[u8; RECORD_HEADER_LEN]) -> Self {
        RecordHeader {
            crc: u32::from_le_bytes(array(&bytes[0..4])),
            len: u32::from_le_bytes(array(&bytes[4..8])),
            seq: u64::from_le_bytes(array(&bytes[8..16])),
            time_ns: u64::from_le_bytes(array(&bytes[16..24])),
        }
    }
}

/// CRC32C of a frame without its crc field: len, seq, time, payload.
pub(crate) fn record_crc(frame_after_crc: &[u8]) -> u32 {
    crc32c::crc32c(frame_after_crc)
}

/// Appends one framed record to `out`.
pub(crate) fn encode_record(out: &mut Vec<u8>, seq: u64, time_ns: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payload length checked against the cap");
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&time_ns.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = record_crc(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Encodes the checkpoint file content.
pub(crate) fn encode_checkpoint(watermark: u64) -> [u8; CHECKPOINT_LEN] {
    let mut out = [0; CHECKPOINT_LEN];
    out[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
    out[8..16].copy_from_slice(&watermark.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The two-slot checkpoint file holding `watermark` in both slots.
pub(crate) fn encode_checkpoint_file(watermark: u64) -> [u8; CHECKPOINT_FILE_LEN] {
    let mut out = [0; CHECKPOINT_FILE_LEN];
    let slot = encode_checkpoint(watermark);
    out[..CHECKPOINT_LEN].copy_from_slice(&slot);
    out[CHECKPOINT_SLOT2..].copy_from_slice(&slot);
    out
}

/// Decodes a checkpoint file: the single-slot form, or the two-slot form
/// (the higher watermark of the valid slots: the watermark never decreases,
/// and a slot torn by a crash mid-write fails its CRC). `None` when no slot is
/// valid or the length is neither.
pub(crate) fn decode_checkpoint(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        CHECKPOINT_LEN => decode_slot(bytes),
        CHECKPOINT_FILE_LEN => {
            let a = decode_slot(&bytes[..CHECKPOINT_LEN]);
            let b = decode_slot(&bytes[CHECKPOINT_SLOT2..]);
            a.max(b)
        }
        _ => None,
    }
}

fn decode_slot(bytes: &[u8]) -> Option<u64> {
    if bytes[0..8] != CHECKPOINT_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(array(&bytes[16..20]));
    (crc32c::crc32c(&bytes[0..16]) == crc).then(|| u64::from_le_bytes(array(&bytes[8..16])))
}

/// File name of the segment whose first record has sequence number `first_seq`.
pub(crate) fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:0SEGMENT_DIGITS$}{SEGMENT_SUFFIX}")
}

/// The largest sequence number a segment name, a checkpoint or an append may
/// reach: 2^62, so that `seq + records` never overflows in any computation (at
/// a billion records a second it lasts 146 years). A name or checkpoint beyond
/// it was not written by a `Wal`: `open` refuses the name and ignores the
/// checkpoint, appends past it fail.
pub(crate) const MAX_SEQ: u64 = 1 << 62;

/// Parses a segment file name; `None` for any other file.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Nanoseconds since the Unix epoch, 0 for a clock set before it.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Converts a header time back to a `SystemTime`.
pub(crate) fn time_from_ns(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    bytes.try_into().expect("slice length fixed by the caller")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort() {
        assert_eq!(segment_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_segment_name("99999999999999999999.seg"), None);
        assert!(segment_name(9) < segment_name(10));
    }

    #[test]
    fn checkpoint_round_trips_and_rejects_damage() {
        let mut bytes = encode_checkpoint(7);
        assert_eq!(decode_checkpoint(&bytes), Some(7));
        bytes[9] ^= 1;
        assert_eq!(decode_checkpoint(&bytes), None);
        assert_eq!(decode_checkpoint(&bytes[..19]), None);
    }

    #[test]
    fn record_frame_layout() {
        let mut out = Vec::new();
        encode_record(&mut out, 3, 5, b"abc");
        assert_eq!(out.len(), RECORD_HEADER_LEN + 3);
        let header = RecordHeader::decode(out[..RECORD_HEADER_LEN].try_into().unwrap());
        assert_eq!((header.len, header.seq, header.time_ns), (3, 3, 5));
        assert_eq!(header.crc, crc32c::crc32c(&out[4..]));
    }
}
