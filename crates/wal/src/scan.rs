//! Reading segments: a buffered positional reader, the record parser shared by
//! recovery, the replay cursor and `inspect`, and a whole-segment scan.

use std::io;

use crate::format::{
    CHECKPOINT_FILE_LEN, CHECKPOINT_NAME, Corruption, MAX_RECORD_BYTES_LIMIT, RECORD_HEADER_LEN,
    RecordHeader, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, decode_checkpoint, record_crc,
};
use crate::storage::{ReadFile, Storage, read_exact_at};

/// Read-ahead size: small records cost one `pread` per chunk, not two per record.
const CHUNK: usize = 256 * 1024;

/// A window of file bytes `[start, start + buf.len())`, refilled on demand.
///
/// Bytes below a segment's valid length never change once written, so the
/// window stays correct while the writer appends behind it.
#[derive(Default)]
pub(crate) struct ChunkReader {
    buf: Vec<u8>,
    start: u64,
}

impl ChunkReader {
    /// Forgets the window; call when switching files.
    pub(crate) fn reset(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    /// Bytes `[offset, offset + n)`, or `None` if `limit` or the file ends first.
    fn get(
        &mut self,
        file: &mut dyn ReadFile,
        offset: u64,
        n: usize,
        limit: u64,
    ) -> io::Result<Option<&[u8]>> {
        let end = offset + n as u64;
        if end > limit {
            return Ok(None);
        }
        let buf_end = self.start + self.buf.len() as u64;
        if offset < self.start || end > buf_end {
            // `end <= limit`, so the allocation is bounded by what the caller
            // already knows to be inside the file.
            let want = usize::try_from((n.max(CHUNK) as u64).min(limit - offset))
                .expect("bounded by a usize");
            if self.buf.capacity() > 4 * CHUNK && want <= CHUNK {
                self.buf = Vec::new(); // give back the memory of one huge record
            }
            self.buf.resize(want, 0);
            self.start = offset;
            let got = read_up_to(file, offset, &mut self.buf)?;
            self.buf.truncate(got);
            if got < n {
                return Ok(None);
            }
        }
        let at = usize::try_from(offset - self.start).expect("inside the window");
        Ok(Some(&self.buf[at..at + n]))
    }
}

fn read_up_to(file: &mut dyn ReadFile, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(offset + done as u64, &mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Outcome of parsing at one offset.
pub(crate) enum Parsed<'a> {
    /// `offset == limit`: a clean end.
    End,
    /// A valid record and its payload.
    Record(RecordHeader, &'a [u8]),
    /// Bytes at `offset` are not a valid record.
    Corrupt(Corruption),
}

/// Parses the record at `offset`, reading no byte at or past `limit`.
///
/// `expected` is the sequence number the record must carry; every length is
/// checked against the hard cap and `limit` before anything is allocated.
pub(crate) fn parse_record<'a>(
    chunk: &'a mut ChunkReader,
    file: &mut dyn ReadFile,
    offset: u64,
    limit: u64,
    expected: u64,
) -> io::Result<Parsed<'a>> {
    if offset >= limit {
        return Ok(Parsed::End);
    }
    let Some(bytes) = chunk.get(file, offset, RECORD_HEADER_LEN, limit)? else {
        return Ok(Parsed::Corrupt(Corruption::Truncated));
    };
    let header = RecordHeader::decode(bytes.try_into().expect("header length"));
    if header.len > MAX_RECORD_BYTES_LIMIT {
        return Ok(Parsed::Corrupt(Corruption::BadLength(header.len)));
    }
    let total = RECORD_HEADER_LEN + header.len as usize;
    let Some(bytes) = chunk.get(file, offset, total, limit)? else {
        return Ok(Parsed::Corrupt(Corruption::Truncated));
    };
    let payload = &bytes[RECORD_HEADER_LEN..];
    if record_crc(&bytes[4..]) != header.crc {
        return Ok(Parsed::Corrupt(Corruption::BadChecksum));
    }
    if header.seq != expected {
        return Ok(Parsed::Corrupt(Corruption::BadSequence {
            expected,
            found: header.seq,
        }));
    }
    Ok(Parsed::Record(header, payload))
}

/// What a full pass over one segment found.
#[derive(Debug, Clone, Default)]
pub(crate) struct SegmentScan {
    /// Length of the file when the scan started.
    pub file_len: u64,
    /// Offset just past the last valid record (the segment header length when
    /// there is none, including when the header itself is bad).
    pub valid_len: u64,
    /// Number of valid records; they carry `first_seq..first_seq + records`.
    pub records: u64,
    /// First damage found and its offset; nothing after it is read.
    pub corruption: Option<(u64, Corruption)>,
    /// Append time of the first and last valid records, ns since the epoch.
    pub first_time_ns: Option<u64>,
    /// Append time of the last valid record.
    pub last_time_ns: Option<u64>,
    /// Append time of the first record whose seq is `>= from_seq`.
    pub from_time_ns: Option<u64>,
}

/// Scans a whole segment. Records must carry consecutive sequence numbers from
/// `first_seq`, and stay below `bound` (the next segment's first) when given.
pub(crate) fn scan_segment(
    storage: &dyn Storage,
    name: &str,
    first_seq: u64,
    bound: Option<u64>,
    from_seq: u64,
) -> io::Result<SegmentScan> {
    let mut file = storage.open_read(name)?;
    let file = file.as_mut();
    let mut scan = SegmentScan {
        file_len: file.len()?,
        valid_len: SEGMENT_HEADER_LEN,
        ..SegmentScan::default()
    };
    let mut magic = [0; SEGMENT_MAGIC.len()];
    if scan.file_len < SEGMENT_HEADER_LEN || !read_exact_at(file, 0, &mut magic)? {
        scan.corruption = Some((0, Corruption::Truncated));
        return Ok(scan);
    }
    if magic != SEGMENT_MAGIC {
        // Another format version ("SLWSEG" and two other digits, written by a
        // newer sluice): refuse to open rather than repair (empty) the file.
        if magic[..6] == SEGMENT_MAGIC[..6] && magic[6..].iter().all(u8::is_ascii_digit) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "segment format version {} is unknown to this build (version {}); it was written by another sluice version: run that version to drain the buffer",
                    String::from_utf8_lossy(&magic[6..]),
                    String::from_utf8_lossy(&SEGMENT_MAGIC[6..]),
                ),
            ));
        }
        scan.corruption = Some((0, Corruption::BadSegmentHeader));
        return Ok(scan);
    }
    let mut chunk = ChunkReader::default();
    let mut offset = SEGMENT_HEADER_LEN;
    loop {
        // `first_seq` is at most `MAX_SEQ` and `records` is bounded by the
        // file length, so this holds; stop rather than wrap if it did not.
        let Some(expected) = first_seq.checked_add(scan.records) else {
            scan.corruption = Some((offset, Corruption::Overlap(u64::MAX)));
            break;
        };
        let parsed = parse_record(&mut chunk, file, offset, scan.file_len, expected)?;
        let header = match parsed {
            Parsed::End => break,
            Parsed::Corrupt(c) => {
                scan.corruption = Some((offset, c));
                break;
            }
            Parsed::Record(header, _) => header,
        };
        if bound.is_some_and(|b| header.seq >= b) {
            scan.corruption = Some((offset, Corruption::Overlap(header.seq)));
            break;
        }
        offset += (RECORD_HEADER_LEN + header.len as usize) as u64;
        scan.valid_len = offset;
        scan.records += 1;
        scan.first_time_ns.get_or_insert(header.time_ns);
        scan.last_time_ns = Some(header.time_ns);
        if header.seq >= from_seq {
            scan.from_time_ns.get_or_insert(header.time_ns);
        }
    }
    Ok(scan)
}

/// Reads the checkpoint: `Ok(None)` if absent, `Ok(Some(None))` if unreadable.
pub(crate) fn read_checkpoint(storage: &dyn Storage) -> io::Result<Option<Option<u64>>> {
    let mut file = match storage.open_read(CHECKPOINT_NAME) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // One byte more than a checkpoint, to notice a longer (so invalid) file.
    let mut buf = [0; CHECKPOINT_FILE_LEN + 1];
    let n = read_up_to(file.as_mut(), 0, &mut buf)?;
    Ok(Some(decode_checkpoint(&buf[..n])))
}
