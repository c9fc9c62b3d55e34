//! Appending: framing records, the tail cache kept for the reader, segment
//! rotation and making room under `max_bytes`.

use std::ops::Range;

use super::{Cached, Fsync, Segment, TAIL_CACHE_BYTES, Wal, create_segment, io_err};
use crate::error::{AppendError, IoError};
use crate::format::{
    MAX_SEQ, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, encode_record, now_ns, segment_name,
};

impl Wal {
    /// Appends one record; returns its sequence number.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, AppendError> {
        self.append_batch([payload]).map(|seqs| seqs.start)
    }

    /// Appends records with one write (and one fsync under `Fsync::Always`),
    /// all or none; returns their sequence numbers.
    pub fn append_batch<I>(&mut self, payloads: I) -> Result<Range<u64>, AppendError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.check_sync()?;
        let time_ns = now_ns();
        let first = self.next_seq;
        let mut seq = first;
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        let mut copies = Vec::new();
        for payload in payloads {
            let payload = payload.as_ref();
            if seq >= MAX_SEQ {
                self.frame = frame;
                return Err(AppendError::SeqExhausted { next_seq: seq });
            }
            if payload.len() > self.opts.max_record_bytes as usize {
                self.frame = frame;
                let max = self.opts.max_record_bytes;
                return Err(AppendError::TooLarge {
                    len: payload.len(),
                    max,
                });
            }
            encode_record(&mut frame, seq, time_ns, payload);
            copies.push(payload.to_vec());
            seq += 1;
        }
        let result = if seq == first {
            Ok(())
        } else {
            self.write_frame(&frame, seq).map(|at| {
                let seg_first = self.active().first;
                self.cache_tail(first, seg_first, at, time_ns, copies)
            })
        };
        self.frame = frame;
        result.map(|()| first..seq)
    }

    /// Keep records just written at `offset` of segment `seg_first` for the
    /// reader, dropping the oldest kept ones past the cap.
    fn cache_tail(
        &mut self,
        first: u64,
        seg_first: u64,
        mut offset: u64,
        time_ns: u64,
        payloads: Vec<Vec<u8>>,
    ) {
        for (i, payload) in payloads.into_iter().enumerate() {
            let len = payload.len();
            self.tail_bytes += len;
            self.tail.push_back(Cached {
                seq: first + i as u64,
                seg_first,
                offset,
                time_ns,
                payload,
            });
            offset += (RECORD_HEADER_LEN + len) as u64;
        }
        while self.tail_bytes > TAIL_CACHE_BYTES {
            let Some(old) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= old.payload.len();
        }
    }

    /// Forget the tail cache, so that reads go to the files (tests of damage
    /// done to the files after the records were written).
    #[cfg(test)]
    pub(crate) fn forget_tail(&mut self) {
        self.clear_tail();
    }

    pub(super) fn clear_tail(&mut self) {
        self.tail.clear();
        self.tail_bytes = 0;
    }

    /// Writes a frame at the end of the active segment (rotating first if
    /// needed); returns the offset it was written at.
    fn write_frame(&mut self, frame: &[u8], end_seq: u64) -> Result<u64, AppendError> {
        if self.tail_dirty {
            let len = self.active().file_len;
            self.writer
                .set_len(len)
                .map_err(self.active_err("truncate"))?;
            self.tail_dirty = false;
        }
        let len = frame.len() as u64;
        self.make_room(len)?;
        let offset = self.active().file_len;
        let written = self
            .writer
            .write_all_at(offset, frame)
            .map_err(self.active_err("write"));
        let synced = written.and_then(|()| match self.opts.fsync {
            Fsync::Always => {
                let synced = self.writer.sync_data().map_err(self.active_err("sync"));
                synced.map_err(|e| self.poison(e))
            }
            Fsync::Interval(_) => Ok(()),
        });
        if let Err(e) = synced {
            // Cut the partial record; if even that fails, retry before the
            // next write (and `open` would cut it anyway).
            self.tail_dirty = self.writer.set_len(offset).is_err();
            return Err(e.into());
        }
        let active = self.segments.back_mut().expect("never empty");
        active.file_len += len;
        active.valid_len += len;
        active.end = end_seq;
        self.next_seq = end_seq;
        self.disk_bytes += len;
        if let Fsync::Interval(period) = self.opts.fsync {
            self.data_dirty = true;
            if self.last_sync.elapsed() >= period {
                // The records are appended. A failed sync poisons the `Wal`
                // (kept in `failed_sync`): the next `sync()` returns it, so no
                // acknowledgement waiting on a sync is ever given for them.
                let _ = self.sync();
            }
        }
        Ok(offset)
    }

    /// Ensures `len` more bytes fit, rotating the active segment if needed.
    fn make_room(&mut self, len: u64) -> Result<(), AppendError> {
        let active = *self.active();
        let has_records = active.end > active.first;
        let rotate = has_records && active.file_len + len > self.opts.segment_bytes;
        let needed = len + if rotate { SEGMENT_HEADER_LEN } else { 0 };
        if self.disk_bytes + needed > self.opts.max_bytes {
            if has_records && active.end <= self.watermark {
                // Everything is acknowledged but the active segment still holds
                // the space: empty it and try again.
                self.reset_active()?;
                return self.make_room(len);
            }
            let available = self.opts.max_bytes.saturating_sub(self.disk_bytes);
            return Err(AppendError::Full { needed, available });
        }
        if rotate {
            self.rotate()?;
        }
        Ok(())
    }

    /// Closes the active segment and starts a new one at `next_seq`.
    fn rotate(&mut self) -> Result<(), IoError> {
        let closed = self.active().first;
        let always = self.opts.fsync == Fsync::Always;
        let writer = create_segment(self.storage.as_ref(), self.next_seq, always)?;
        if always {
            self.sync_dir()?;
        } else {
            self.dir_dirty = true;
        }
        let closed_writer = std::mem::replace(&mut self.writer, writer);
        if self.data_dirty {
            self.unsynced.push((closed, closed_writer));
        }
        if !always {
            self.data_dirty = true; // the new segment's header
        }
        self.segments.push_back(Segment::empty(self.next_seq));
        self.disk_bytes += SEGMENT_HEADER_LEN;
        // The closed segment may already be fully acknowledged. The rotation
        // itself succeeded; a failed deletion is retried by the next ack.
        let _ = self.remove_acked_segments();
        Ok(())
    }

    /// Empties the active segment, whose records are all acknowledged or being
    /// dropped, without creating a file (so it works on a full disk): rename it
    /// to `next_seq`, then cut it to its header. A crash in between leaves a
    /// segment whose first record has the wrong seq: recovery cuts it.
    pub(super) fn reset_active(&mut self) -> Result<(), IoError> {
        self.clear_tail();
        let st = self.storage.as_ref();
        let old = segment_name(self.active().first);
        let new = segment_name(self.next_seq);
        st.rename(&old, &new).map_err(io_err(st, "rename", &old))?;
        let seg = self.segments.back_mut().expect("never empty");
        self.disk_bytes -= seg.file_len - SEGMENT_HEADER_LEN;
        *seg = Segment::empty(self.next_seq);
        self.dir_dirty = true;
        self.data_dirty = true;
        self.tail_dirty = true;
        // Durable at once in every fsync mode: a crash undoing the rename would
        // bring back the old name, and with it old sequence numbers.
        self.sync_dir()?;
        let st = self.storage.as_ref();
        self.writer
            .set_len(SEGMENT_HEADER_LEN)
            .map_err(io_err(st, "truncate", &new))?;
        self.tail_dirty = false;
        if self.opts.fsync == Fsync::Always {
            let synced = self.writer.sync_data().map_err(io_err(st, "sync", &new));
            synced.map_err(|e| self.poison(e))?;
            self.data_dirty = false;
        }
        Ok(())
    }
}
