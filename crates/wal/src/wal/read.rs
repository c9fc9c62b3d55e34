//! The replay cursor and acknowledgements: reading records back (from the
//! tail cache or the files), acks moving the watermark, deleting acknowledged
//! segments, and the `drop_oldest` policy.

use super::{Dropped, Record, Records, Wal, remove_if_present, seg_err};
use crate::error::{AckError, IoError, ReadError};
use crate::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, segment_name, time_from_ns};
use crate::scan::{Parsed, parse_record};

impl Wal {
    /// Reads the next record after the previous one read, starting (after
    /// `open` or [`rewind`](Self::rewind)) at the oldest unacknowledged record.
    /// Reading does not acknowledge. `Ok(None)` when caught up with appends.
    pub fn read_next(&mut self) -> Result<Option<Record>, ReadError> {
        loop {
            if let Some(record) = self.read_cached() {
                match record {
                    Some(r) => return Ok(Some(r)),
                    None => continue,
                }
            }
            let cur = &mut self.cursor;
            // The cursor's segment may have been deleted under it.
            let idx = self.segments.partition_point(|s| s.first < cur.seg_first);
            let Some(seg) = self.segments.get(idx) else {
                return Ok(None);
            };
            if seg.first != cur.seg_first {
                cur.enter(seg.first);
            }
            if cur.offset >= seg.valid_len {
                match self.segments.get(idx + 1) {
                    Some(next) => {
                        cur.enter(next.first);
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            let st = self.storage.as_ref();
            let file = match &mut cur.file {
                Some(file) => file,
                None => {
                    let file = st.open_read(&segment_name(seg.first));
                    cur.file
                        .insert(file.map_err(seg_err(st, "open", seg.first))?)
                }
            };
            let offset = cur.offset;
            let parsed = parse_record(
                &mut cur.chunk,
                file.as_mut(),
                offset,
                seg.valid_len,
                cur.expected,
            )
            .map_err(seg_err(st, "read", seg.first))?;
            let (header, payload) = match parsed {
                Parsed::Record(header, payload) => (header, payload),
                Parsed::End => return Ok(None),
                Parsed::Corrupt(corruption) => {
                    // Damaged after open (recovery checked it): skip the segment.
                    cur.offset = seg.valid_len;
                    let path = st.path(&segment_name(seg.first));
                    return Err(ReadError::Corrupt {
                        path,
                        offset,
                        corruption,
                    });
                }
            };
            cur.offset += (RECORD_HEADER_LEN + payload.len()) as u64;
            cur.expected += 1;
            if header.seq >= self.watermark {
                return Ok(Some(Record {
                    seq: header.seq,
                    appended_at: time_from_ns(header.time_ns),
                    payload: payload.to_vec(),
                }));
            }
        }
    }

    /// The next record from the tail cache when the cursor is exactly at it:
    /// `Some(Some)` a record, `Some(None)` an acknowledged one skipped, `None`
    /// read from disk instead. Moves the cursor as reading the file would.
    fn read_cached(&mut self) -> Option<Option<Record>> {
        let cur = &self.cursor;
        while let Some(c) = self.tail.front() {
            // Behind the cursor (read from disk meanwhile): no longer needed.
            if c.seq < cur.expected && c.seg_first <= cur.seg_first {
                let old = self.tail.pop_front().expect("front exists");
                self.tail_bytes -= old.payload.len();
            } else {
                break;
            }
        }
        let c = self.tail.front()?;
        // The cursor must stand right before it: same segment at its offset,
        // or at the end of the previous segment (records continue the seqs).
        let here = c.seg_first == cur.seg_first && c.offset == cur.offset && c.seq == cur.expected;
        let next_segment = c.seg_first != cur.seg_first
            && c.offset == SEGMENT_HEADER_LEN
            && c.seq == cur.expected
            && c.seq == c.seg_first;
        if !here && !next_segment {
            return None;
        }
        let c = self.tail.pop_front().expect("front exists");
        self.tail_bytes -= c.payload.len();
        if c.seg_first != self.cursor.seg_first {
            self.cursor.enter(c.seg_first);
        }
        self.cursor.offset = c.offset + (RECORD_HEADER_LEN + c.payload.len()) as u64;
        self.cursor.expected = c.seq + 1;
        if c.seq < self.watermark {
            return Some(None);
        }
        Some(Some(Record {
            seq: c.seq,
            appended_at: time_from_ns(c.time_ns),
            payload: c.payload,
        }))
    }

    /// Iterates with [`read_next`](Self::read_next) until caught up.
    pub fn records(&mut self) -> Records<'_> {
        Records { wal: self }
    }

    /// Moves the reader back to the oldest unacknowledged record, e.g. to
    /// re-deliver after the sink lost what it had read.
    pub fn rewind(&mut self) {
        self.cursor.enter(self.segments[0].first);
    }

    /// Acknowledges one record, in any order. Acks below the low watermark are
    /// ignored; when the watermark passes the end of a segment, that segment
    /// is deleted. The watermark reaches the checkpoint file on the next
    /// [`sync`](Self::sync).
    pub fn ack(&mut self, seq: u64) -> Result<(), AckError> {
        if seq >= self.next_seq {
            return Err(AckError::NotAppended {
                seq,
                next_seq: self.next_seq,
            });
        }
        if seq < self.watermark {
            return Ok(());
        }
        if seq == self.watermark {
            self.watermark += 1; // in-order ack: no set traffic
        } else {
            self.acked_ahead.insert(seq);
        }
        self.advance();
        self.remove_acked_segments()?;
        Ok(())
    }

    /// Discards the oldest segment's unacknowledged records (the `drop_oldest`
    /// full-buffer policy) and deletes it, or empties the active segment when
    /// it is the only one. The deletion is made durable before returning, so
    /// dropped records stay dropped after a crash. `Ok(None)` when nothing is
    /// unacknowledged.
    pub fn drop_oldest(&mut self) -> Result<Option<Dropped>, IoError> {
        self.check_sync()?;
        self.clear_tail();
        self.remove_acked_segments()?;
        if self.watermark >= self.next_seq {
            return Ok(None);
        }
        let seg = self.segments[0];
        let start = self.watermark.max(seg.first);
        let acked = self.acked_ahead.range(start..seg.end).count() as u64;
        let records = seg.end.saturating_sub(start) - acked;
        if self.segments.len() == 1 {
            self.watermark = self.next_seq;
            self.acked_ahead.clear();
            self.reset_active()?;
        } else {
            self.watermark = self.segments[1].first;
            self.advance();
            self.remove_acked_segments()?;
            // Data first: a durable directory entry must not point at bytes
            // that are not (it would read as damage after a power loss).
            self.sync_data_files()?;
            self.sync_dir()?;
        }
        Ok(Some(Dropped {
            seqs: start..seg.end,
            records,
        }))
    }

    /// Moves the watermark over acknowledged seqs and seqs that name no record.
    pub(super) fn advance(&mut self) {
        loop {
            while let Some(&seq) = self.acked_ahead.first() {
                if seq > self.watermark {
                    break;
                }
                self.acked_ahead.pop_first();
                if seq == self.watermark {
                    self.watermark += 1;
                }
            }
            let w = self.watermark;
            let idx = self.segments.partition_point(|s| s.first <= w);
            let jump = match idx.checked_sub(1) {
                None => Some(self.segments[0].first),
                Some(i) if w >= self.segments[i].end => self.segments.get(idx).map(|s| s.first),
                Some(_) => None,
            };
            match jump {
                Some(to) if to > w => self.watermark = to,
                _ => break,
            }
        }
    }

    /// Deletes leading segments whose records are all below the watermark.
    pub(super) fn remove_acked_segments(&mut self) -> Result<(), IoError> {
        while self.segments.len() > 1 && self.segments[0].end <= self.watermark {
            let seg = self.segments[0];
            remove_if_present(self.storage.as_ref(), &segment_name(seg.first))?;
            self.segments.pop_front();
            self.unsynced.retain(|(first, _)| *first != seg.first);
            self.disk_bytes -= seg.file_len;
            self.dir_dirty = true;
        }
        Ok(())
    }
}
