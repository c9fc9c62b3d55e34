//! One tailed file: its descriptor, read position, line framer and the offsets
//! of batches still waiting for their acknowledgement.
//!
//! Offsets: `read_offset` is the next byte to read; the framer holds an
//! unterminated tail, so the *emitted* offset is `read_offset - pending`. Each
//! batch remembers the emitted offset after its last line; the *committed*
//! offset advances over a batch only when its token resolved and every earlier
//! batch of the file did too, so it is always the end of a line that was
//! delivered (or dropped by a sink's policy). Errored batches rewind the reader to
//! the committed offset: those lines are read and sent again (duplicates of later
//! batches that did get through are possible, loss is not).
//!
//! Reads are `pread`s through the descriptor, which stays valid when the path is
//! renamed or removed: a rotated file is read to its end before it is released.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::checkpoint::{FileKey, Fingerprint};
use crate::ack::{AckStatus, AckToken};
use crate::event::Origin;
use crate::framing::LineFramer;

/// Bytes asked of one read.
pub const READ_CHUNK: usize = 256 * 1024;

/// Acknowledgement not yet in.
const PENDING: u8 = u8::MAX;

struct InFlight {
    /// Emitted offset after the batch's last line.
    end: u64,
    status: Arc<AtomicU8>,
}

/// What one read produced.
pub struct Chunk {
    /// Offset of the first line.
    pub start: u64,
    /// Complete lines.
    pub lines: Vec<Bytes>,
    /// Token to put on their batch.
    pub ack: AckToken,
    /// Lines cut to `max_line_bytes`.
    pub truncated: u64,
    /// Offset of each line, when known exactly (see [`Tailed::exact_starts`]);
    /// empty otherwise.
    pub starts: Vec<u64>,
    /// Offset after the last line.
    pub end: u64,
}

/// What [`Tailed::check_size`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeCheck {
    /// Bytes to read.
    Grew,
    /// Nothing new.
    Same,
    /// Smaller than what was read, or other first bytes: read again from 0.
    Truncated,
}

/// A file being read.
pub struct Tailed {
    /// Identity.
    pub key: FileKey,
    /// Path it was last seen at.
    pub path: PathBuf,
    /// Shared by its events (`path`, `host`).
    pub origin: Arc<Origin>,
    /// Open descriptor; `None` while closed (idle, or over `max_open_files`).
    pub file: Option<File>,
    /// Next byte to read.
    pub read_offset: u64,
    framer: LineFramer,
    /// First bytes' hash (grows to `fingerprint_bytes` as the file does).
    pub fingerprint: Fingerprint,
    in_flight: VecDeque<InFlight>,
    /// Every line before this offset is acknowledged.
    pub committed: u64,
    /// The path now names another file or nothing: read to the end, then release.
    pub rotated: bool,
    /// Last time bytes were read (or the file was opened).
    pub last_read: Instant,
    /// Size at the last check.
    pub size: u64,
    /// Set when an errored batch asked for a rewind; cleared by the rewind.
    rewind: bool,
    /// Work out each line's exact offset (`multiline` needs them).
    pub exact_starts: bool,
    /// Rewinds since the last batch that got through.
    failures: u32,
    /// After a rewind, the file is not read again before this.
    retry_at: Option<Instant>,
}

/// Wait after the first rewind in a row; doubles with each, up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

impl Tailed {
    /// A file opened at `offset` (a line start: 0, the checkpoint, or its end).
    pub fn new(
        key: FileKey,
        path: PathBuf,
        origin: Arc<Origin>,
        file: File,
        offset: u64,
        fingerprint: Fingerprint,
        max_line_bytes: usize,
    ) -> Self {
        let mut framer = LineFramer::new(max_line_bytes);
        // No buffer until there is something to read: thousands of idle files
        // must not each hold one.
        *framer.buffer() = BytesMut::new();
        Tailed {
            key,
            path,
            origin,
            file: Some(file),
            read_offset: offset,
            framer,
            fingerprint,
            in_flight: VecDeque::new(),
            committed: offset,
            rotated: false,
            last_read: Instant::now(),
            size: offset,
            rewind: false,
            exact_starts: false,
            failures: 0,
            retry_at: None,
        }
    }

    /// Offset after the last line handed out.
    pub fn emitted(&self) -> u64 {
        self.read_offset - self.framer.pending() as u64
    }

    /// Whether every byte of the file was read (as of the last size check).
    pub fn at_end(&self) -> bool {
        self.read_offset >= self.size
    }

    /// Batches waiting for their acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Compare the file with what was read: grown, unchanged, or truncated
    /// (smaller than the read offset, or its first bytes differ from the
    /// fingerprint: truncated and refilled past the old offset).
    pub fn check_size(&mut self) -> std::io::Result<SizeCheck> {
        let Some(f) = &self.file else {
            return Ok(SizeCheck::Same);
        };
        let size = f.metadata()?.size();
        self.size = size;
        if size == self.read_offset {
            return Ok(SizeCheck::Same);
        }
        if size < self.read_offset || !self.same_head(f)? {
            return Ok(SizeCheck::Truncated);
        }
        Ok(SizeCheck::Grew)
    }

    fn same_head(&self, f: &File) -> std::io::Result<bool> {
        let n = self.fingerprint.fp_len as usize;
        if n == 0 {
            return Ok(true);
        }
        Ok(read_head(f, n)?.is_some_and(|h| Fingerprint::of(&h) == self.fingerprint))
    }

    /// Start over from byte 0 after a truncation. An unterminated tail of the
    /// old content is dropped, and its length returned: it is the head of a
    /// line the truncation cut (copytruncate copies the whole line, newline and
    /// all, before it truncates), so sending it would deliver a fragment — one
    /// that often equals an earlier line. Acknowledgements of old batches no
    /// longer move the checkpoint.
    pub fn restart_from_zero(&mut self) -> usize {
        let mut cut = 0;
        self.framer.finish(&mut |b| cut += b.len());
        self.read_offset = 0;
        self.committed = 0;
        self.in_flight.clear();
        self.fingerprint = Fingerprint::default();
        cut
    }

    /// Read up to one chunk. `None` at end of file.
    pub fn read_chunk(&mut self) -> std::io::Result<Option<Chunk>> {
        let Some(f) = &self.file else {
            return Ok(None);
        };
        let first = self.emitted();
        // As much as the file grew (known from the last size check), within
        // bounds: small appends cost small buffers.
        let grown =
            usize::try_from(self.size.saturating_sub(self.read_offset)).unwrap_or(usize::MAX);
        let want = grown.clamp(4096, READ_CHUNK);
        let buf = self.framer.buffer();
        let start = buf.len();
        buf.resize(start + want, 0);
        let n = match f.read_at(&mut buf[start..], self.read_offset) {
            Ok(n) => n,
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        };
        buf.truncate(start + n);
        if n == 0 {
            // At the end: give the read buffer back, keeping only an
            // unterminated tail (at most `max_line_bytes`), copied to its size.
            let tail = buf.split();
            *buf = BytesMut::from(&tail[..]);
            return Ok(None);
        }
        self.read_offset += n as u64;
        self.size = self.size.max(self.read_offset);
        self.last_read = Instant::now();
        // The buffer holds the bytes from `first` on: a line starts after each
        // newline in it.
        let ends: Vec<u64> = if self.exact_starts {
            memchr::memchr_iter(b'\n', &buf[..])
                .map(|i| first + i as u64 + 1)
                .collect()
        } else {
            Vec::new()
        };
        let before = self.framer.truncated;
        let mut lines = Vec::new();
        self.framer.drain_lines(&mut |b| lines.push(b));
        let mut c = self.chunk(first, lines, before);
        // One line per newline and none cut: the n-th line ends at the n-th
        // newline. Otherwise (a cut line, a discarded remainder) leave them out.
        if self.exact_starts && c.truncated == 0 && ends.len() == c.lines.len() {
            c.starts = std::iter::once(first)
                .chain(ends.iter().copied())
                .take(ends.len())
                .collect();
        }
        Ok(Some(c))
    }

    /// The file is done (rotated away or deleted, and read to its end): its
    /// unterminated last line, if any, becomes a line.
    pub fn finish(&mut self) -> Option<Chunk> {
        let (first, before) = (self.emitted(), self.framer.truncated);
        let mut lines = Vec::new();
        self.framer.finish(&mut |b| lines.push(b));
        (!lines.is_empty()).then(|| self.chunk(first, lines, before))
    }

    fn chunk(&mut self, start: u64, lines: Vec<Bytes>, truncated_before: u64) -> Chunk {
        let truncated = self.framer.truncated - truncated_before;
        if lines.is_empty() {
            return Chunk {
                start,
                lines,
                ack: AckToken::none(),
                truncated,
                starts: Vec::new(),
                end: self.emitted(),
            };
        }
        let end = self.emitted();
        Chunk {
            start,
            lines,
            ack: self.track(end),
            truncated,
            starts: Vec::new(),
            end,
        }
    }

    /// A token for a batch whose lines end at `end` (at least the `end` of
    /// every earlier batch): the checkpoint passes `end` once it resolves.
    pub fn track(&mut self, end: u64) -> AckToken {
        let status = Arc::new(AtomicU8::new(PENDING));
        let cell = status.clone();
        let ack = AckToken::with_callback(move |st| cell.store(st as u8, Ordering::Release));
        self.in_flight.push_back(InFlight { end, status });
        ack
    }

    /// The last batch must not move the checkpoint past `offset` (a partial
    /// line starting there waits for its end).
    pub fn hold_back(&mut self, offset: u64) {
        if let Some(last) = self.in_flight.back_mut() {
            last.end = last.end.min(offset.max(self.committed));
        }
    }

    /// Advance `committed` over the resolved front of the in-flight queue.
    /// Returns whether it moved. An errored batch stops the advance and asks for
    /// a rewind (see [`Self::rewind_if_needed`]).
    pub fn collect_acks(&mut self) -> bool {
        let mut moved = false;
        while let Some(front) = self.in_flight.front() {
            match front.status.load(Ordering::Acquire) {
                PENDING => break,
                s if s == AckStatus::Errored as u8 => {
                    self.rewind = true;
                    break;
                }
                _ => {
                    self.committed = front.end;
                    self.in_flight.pop_front();
                    self.failures = 0;
                    moved = true;
                }
            }
        }
        moved
    }

    /// After an errored batch: read again from the committed offset. Batches
    /// after it that are still in flight no longer count.
    pub fn rewind_if_needed(&mut self) -> bool {
        if !std::mem::take(&mut self.rewind) {
            return false;
        }
        self.in_flight.clear();
        self.framer = LineFramer::new(self.framer.max_line());
        self.read_offset = self.committed;
        // A sink failing every batch must not be sent the same lines in a
        // tight loop.
        let wait = RETRY_FIRST.saturating_mul(1 << self.failures.min(6));
        self.retry_at = Some(Instant::now() + wait.min(RETRY_MAX));
        self.failures += 1;
        true
    }

    /// Whether a rewind's wait is still running (the file is not read).
    pub fn waiting_to_retry(&mut self) -> bool {
        match self.retry_at {
            Some(t) if Instant::now() < t => true,
            _ => {
                self.retry_at = None;
                false
            }
        }
    }

    /// Close the descriptor, forgetting an unterminated tail (it is read again
    /// from `emitted` when the file is reopened).
    pub fn close(&mut self) {
        self.read_offset = self.emitted();
        self.framer.buffer().clear();
        self.file = None;
    }

    /// Extend the fingerprint to `want` bytes if the file has them.
    pub fn grow_fingerprint(&mut self, want: usize) -> std::io::Result<()> {
        let have = self.fingerprint.fp_len as usize;
        if have >= want || self.size <= have as u64 {
            return Ok(());
        }
        if let Some(f) = &self.file {
            let n = want.min(usize::try_from(self.size).unwrap_or(want));
            if let Some(h) = read_head(f, n)? {
                self.fingerprint = Fingerprint::of(&h);
            }
        }
        Ok(())
    }
}

/// The first `n` bytes, or `None` if the file is shorter.
pub fn read_head(f: &File, n: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0; n];
    let mut got = 0;
    while got < n {
        match f.read_at(&mut buf[got..], got as u64)? {
            0 => return Ok(None),
            k => got += k,
        }
    }
    Ok(Some(buf))
}
