//! Opening a buffer: lock, checkpoint, segment scan and repair of a torn or
//! damaged tail (recovery; the rules are in the crate documentation).

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::time::Instant;

use super::{
    Cursor, Damage, Options, RecoveryReport, Segment, Wal, create_segment, io_err,
    remove_if_present,
};
use crate::error::{IoError, OpenError};
use crate::format::{
    CHECKPOINT_NAME, CHECKPOINT_TMP_NAME, Corruption, LOCK_NAME, MAX_SEQ, SEGMENT_HEADER_LEN,
    SEGMENT_MAGIC, parse_segment_name, segment_name,
};
use crate::scan::{read_checkpoint, scan_segment};
use crate::storage::{DirStorage, Storage};

impl Wal {
    /// Opens (creating if needed) the buffer in `dir`, takes its lock and
    /// recovers: see the crate documentation for the rules.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Wal, OpenError> {
        let dir = dir.as_ref();
        opts.validate()?;
        std::fs::create_dir_all(dir)
            .map_err(|e| IoError::new("create directory", dir.to_path_buf(), e))?;
        Wal::open_storage(Box::new(DirStorage::new(dir)), opts)
    }

    /// [`open`](Self::open) on any [`Storage`]: tests use one whose sync can
    /// fail or be held open. The directory must exist.
    pub fn open_storage(storage: Box<dyn Storage>, opts: Options) -> Result<Wal, OpenError> {
        opts.validate()?;
        let storage: std::sync::Arc<dyn Storage> = storage.into();
        let st = storage.as_ref();
        let lock = st
            .try_lock()
            .map_err(io_err(st, "lock", LOCK_NAME))?
            .ok_or_else(|| OpenError::Locked {
                path: st.path(LOCK_NAME),
            })?;
        let mut report = RecoveryReport::default();
        let names = st.list().map_err(io_err(st, "list", ""))?;
        if names.iter().any(|n| n == CHECKPOINT_TMP_NAME) {
            remove_if_present(st, CHECKPOINT_TMP_NAME)?;
        }
        let checkpoint = read_checkpoint(st).map_err(io_err(st, "read", CHECKPOINT_NAME))?;
        // A watermark beyond `MAX_SEQ` passed its CRC but no `Wal` wrote it:
        // ignore it like a damaged one (replay from the oldest segment).
        let checkpointed = checkpoint.flatten().filter(|&w| w <= MAX_SEQ);
        report.checkpoint = checkpointed;
        report.checkpoint_invalid =
            matches!(checkpoint, Some(None)) || checkpoint.flatten().is_some_and(|w| w > MAX_SEQ);
        let ckpt = checkpointed.unwrap_or(0);

        let mut firsts: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        firsts.sort_unstable();
        if let Some(&seq) = firsts.last().filter(|&&s| s > MAX_SEQ) {
            return Err(OpenError::SeqOutOfRange {
                path: st.path(&segment_name(seq)),
                seq,
                max: MAX_SEQ,
            });
        }
        // Segments followed by one starting at or below the checkpoint are
        // fully acknowledged: delete them unread.
        let mut kept = Vec::with_capacity(firsts.len());
        for (i, &first) in firsts.iter().enumerate() {
            if firsts.get(i + 1).is_some_and(|&next| next <= ckpt) {
                remove_if_present(st, &segment_name(first))?;
                report.deleted_segments += 1;
            } else {
                kept.push(first);
            }
        }

        let mut segments = VecDeque::with_capacity(kept.len() + 1);
        let mut writer = None;
        let mut dir_dirty = report.deleted_segments > 0;
        for (i, &first) in kept.iter().enumerate() {
            let name = segment_name(first);
            let bound = kept.get(i + 1).copied();
            let scan = scan_segment(st, &name, first, bound, u64::MAX)
                .map_err(io_err(st, "read", &name))?;
            let mut seg = Segment {
                first,
                // At most MAX_SEQ plus a count bounded by the file length.
                end: first.saturating_add(scan.records),
                valid_len: scan.valid_len,
                file_len: scan.file_len,
            };
            if let Some((offset, corruption)) = scan.corruption {
                let damage = Damage {
                    path: st.path(&name),
                    offset,
                    bytes: scan.file_len - offset,
                    corruption,
                };
                if bound.is_some() {
                    report.skipped.push(damage);
                } else {
                    // The last segment is the one being written: cut the torn
                    // tail so appends continue after the last good record.
                    let mut w = st.open_write(&name).map_err(io_err(st, "open", &name))?;
                    if offset < SEGMENT_HEADER_LEN {
                        w.set_len(0)
                            .and_then(|()| w.write_all_at(0, &SEGMENT_MAGIC))
                            .map_err(io_err(st, "repair", &name))?;
                    } else {
                        w.set_len(offset).map_err(io_err(st, "truncate", &name))?;
                    }
                    w.sync_data().map_err(io_err(st, "sync", &name))?;
                    seg.file_len = seg.valid_len;
                    report.truncated = Some(damage);
                    writer = Some(w);
                }
            }
            if scan.corruption.is_none() && bound.is_some_and(|b| b > ckpt.max(seg.end)) {
                // Unacknowledged records are missing without damage (the file
                // was cut short): still worth a line in the log.
                report.skipped.push(Damage {
                    path: st.path(&name),
                    offset: seg.valid_len,
                    bytes: 0,
                    corruption: Corruption::Truncated,
                });
            }
            segments.push_back(seg);
        }

        let next_seq = segments.back().map_or(ckpt, |s| s.end.max(ckpt));
        let writer = match (segments.back(), writer) {
            (Some(last), Some(w)) if last.end == next_seq => w,
            (Some(last), None) if last.end == next_seq => {
                let name = segment_name(last.first);
                st.open_write(&name).map_err(io_err(st, "open", &name))?
            }
            _ => {
                // No segment, or the checkpoint is past the last record (files
                // were lost): start a segment at the next seq.
                let w = create_segment(st, next_seq, true)?;
                segments.push_back(Segment::empty(next_seq));
                dir_dirty = true;
                w
            }
        };
        if dir_dirty {
            st.sync_dir().map_err(io_err(st, "sync", ""))?;
        }

        let disk_bytes = segments.iter().map(|s| s.file_len).sum();
        let watermark = ckpt.max(segments[0].first);
        let mut wal = Wal {
            storage,
            _lock: lock,
            opts,
            segments,
            writer,
            next_seq,
            watermark,
            acked_ahead: BTreeSet::new(),
            checkpointed,
            checkpoint_file: None,
            disk_bytes,
            data_dirty: false,
            unsynced: Vec::new(),
            dir_dirty: false,
            tail_dirty: false,
            failed_sync: None,
            in_flight: None,
            last_sync: Instant::now(),
            frame: Vec::new(),
            cursor: Cursor::default(),
            tail: VecDeque::new(),
            tail_bytes: 0,
            report,
        };
        wal.advance();
        let before = wal.segments.len();
        wal.remove_acked_segments()?;
        wal.report.deleted_segments += before - wal.segments.len();
        wal.report.segments = wal.segments.len();
        wal.report.unacked_records = wal.unacked_records();
        wal.cursor.enter(wal.segments[0].first);
        Ok(wal)
    }
}
