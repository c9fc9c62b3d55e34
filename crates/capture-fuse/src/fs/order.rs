//! Writeback mode: page-cache captures of a file handed to the queue in file order.
//!
//! The kernel writes a file's dirty pages back in passes, and a background pass resumes
//! where the previous one stopped (`range_cyclic`) or skips a page still being written:
//! the rest of a partly filled page can come after the pages that follow it. So per
//! inode we keep the end of the contiguous range captured so far; a capture that starts
//! beyond it (a gap) is held back until the gap is filled, then released in offset
//! order. Held captures are released anyway, in offset order, when the file is flushed
//! (close), fsynced, released or truncated, when the oldest has waited
//! [`MAX_HOLD`] (checked at the file's next write) or when more than [`MAX_HELD_BYTES`]
//! are held: a real gap (a write far past the end of file) does not hold captures
//! beyond that.
//!
//! The end starts at the backing file's size before the first page-cache write seen,
//! and follows truncations.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use fuser::Request;

use super::{CaptureFs, Inode, OpenFile};
use crate::capture::CapturedWrite;

/// Longest a capture is held back waiting for the bytes before it.
const MAX_HOLD: Duration = Duration::from_secs(1);
/// Most bytes held back per file.
const MAX_HELD_BYTES: u64 = 64 << 20;

#[derive(Default)]
pub(super) struct Order {
    /// End of the contiguous captured range (`None` until the first page-cache write).
    end: Option<u64>,
    /// Captures beyond a gap, by offset: (when held, length, the capture if any; none
    /// when it was not to be captured but still counts for the order).
    held: BTreeMap<u64, (Instant, u64, Option<CapturedWrite>)>,
    held_bytes: u64,
}

impl CaptureFs {
    /// The backing size before a page-cache write, for the first one of an inode.
    pub(super) fn order_start(&self, f: &OpenFile) {
        let mut o = f.inode.order.lock();
        if o.end.is_none() {
            o.end = Some(rustix::fs::fstat(f.file.as_fd()).map_or(0, |st| st.st_size as u64));
        }
    }

    /// Captures a page-cache write of `len` bytes at `offset` (the changed span `data`
    /// at `at`) in file order.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn capture_in_order(
        &self,
        req: &Request,
        f: &OpenFile,
        offset: u64,
        len: u64,
        at: u64,
        data: &[u8],
    ) {
        let w = self.make_capture(req, f, at, data, true);
        let mut o = f.inode.order.lock();
        let end = o.end.unwrap_or(offset);
        if offset <= end {
            o.end = Some(end.max(offset + len));
            if let Some(w) = w {
                self.send(w);
            }
            self.release_ready(&mut o);
        } else {
            o.held_bytes += len;
            o.held.insert(offset, (Instant::now(), len, w));
        }
        let stale = o
            .held
            .values()
            .next()
            .is_some_and(|(t, _, _)| t.elapsed() >= MAX_HOLD);
        if stale || o.held_bytes > MAX_HELD_BYTES {
            self.release_all(&mut o);
        }
    }

    /// Releases every held capture of `inode` in offset order (close, fsync, release);
    /// with `truncated_to`, the file was truncated to that size.
    pub(super) fn order_flush(&self, inode: &Inode, truncated_to: Option<u64>) {
        let mut o = inode.order.lock();
        self.release_all(&mut o);
        if let (Some(size), Some(end)) = (truncated_to, o.end) {
            o.end = Some(end.min(size));
        }
    }

    fn release_ready(&self, o: &mut Order) {
        while let Some(entry) = o.held.first_entry() {
            let end = o.end.unwrap_or(0);
            if *entry.key() > end {
                break;
            }
            let (offset, (_, len, w)) = entry.remove_entry();
            o.held_bytes -= len;
            o.end = Some(end.max(offset + len));
            if let Some(w) = w {
                self.send(w);
            }
        }
    }

    fn release_all(&self, o: &mut Order) {
        while let Some((offset, (_, len, w))) = o.held.pop_first() {
            o.held_bytes -= len;
            o.end = Some(o.end.unwrap_or(0).max(offset + len));
            if let Some(w) = w {
                self.send(w);
            }
        }
    }
}
