//! Newline framing for byte streams (stdin, exec, pipe).
//!
//! Bytes are read straight into the framer's buffer; each read's complete lines
//! become slices of one frozen chunk (zero copy: a line costs a refcount), and only
//! the unterminated tail is copied forward. Rules:
//! - a line ends at `\n`; one `\r` before it is stripped;
//! - a line longer than `max_line_bytes` is cut to that length, emitted, counted,
//!   and the rest of it (up to the next `\n`) is discarded;
//! - bytes are never validated as UTF-8;
//! - at end of input an unterminated last line is kept ([`LineFramer::finish`]).
//!
//! Buffers are recycled ([`LineFramer::reserve`]): once a read filled the buffer,
//! the next one goes into a spare whose lines have all been dropped downstream,
//! so a busy stream reuses a few allocations whose pages are already mapped
//! instead of a fresh one per read (each page of which the kernel would fault in
//! and zero while copying the read into it: half of all page faults of a pipe →
//! kafka run at 1 KiB per line).

use bytes::{Bytes, BytesMut};

/// Default cap on one line.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

/// Spare buffers a framer keeps for reuse (besides the one it reads into).
const SPARES: usize = 3;

/// Incremental line splitter.
#[derive(Debug)]
pub struct LineFramer {
    buf: BytesMut,
    /// Earlier buffers, emptied; reusable once every line cut from them was
    /// dropped (see [`Self::reserve`]).
    spares: Vec<BytesMut>,
    max_line: usize,
    /// Inside an over-long line whose head was already emitted.
    discarding: bool,
    /// Number of lines cut to `max_line` so far.
    pub truncated: u64,
}

impl LineFramer {
    /// A framer cutting lines at `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            buf: BytesMut::with_capacity(64 * 1024),
            spares: Vec::new(),
            max_line: max_line.max(1),
            discarding: false,
            truncated: 0,
        }
    }

    /// The buffer to read into; make sure it has room first with [`Self::reserve`].
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Ensure at least `n` bytes of spare capacity for the next read.
    ///
    /// When the buffer lacks room and lines cut from it are still alive (so it
    /// cannot be reused in place), the unterminated tail moves to a spare whose
    /// lines are all gone, or to a new buffer while fewer than [`SPARES`] exist;
    /// the old one becomes a spare. Only when every spare is still in use does
    /// this allocate without keeping the old buffer (as `BytesMut::reserve`).
    pub fn reserve(&mut self, n: usize) {
        // Room already, or room once moved to the front of an allocation no
        // line holds any more.
        if self.buf.try_reclaim(n) {
            return;
        }
        let need = n + self.buf.len();
        let (slot, next) = match self.spares.iter_mut().position(|s| s.try_reclaim(need)) {
            Some(i) => (i, std::mem::take(&mut self.spares[i])),
            None if self.spares.len() < SPARES => {
                self.spares.push(BytesMut::new());
                (self.spares.len() - 1, BytesMut::with_capacity(need))
            }
            None => {
                self.buf.reserve(n);
                return;
            }
        };
        let mut old = std::mem::replace(&mut self.buf, next);
        self.buf.extend_from_slice(&old);
        old.clear();
        self.spares[slot] = old;
    }

    /// Move every complete line out of the buffer into `out`.
    pub fn drain_lines(&mut self, out: &mut impl FnMut(Bytes)) {
        if self.buf.is_empty() {
            return;
        }
        let last_nl = memchr::memrchr(b'\n', &self.buf);
        let Some(last_nl) = last_nl else {
            self.check_overlong(out);
            return;
        };
        let chunk = self.buf.split_to(last_nl + 1).freeze();
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', &chunk) {
            if std::mem::take(&mut self.discarding) {
                start = nl + 1;
                continue;
            }
            self.emit(&chunk, start, nl, out);
            start = nl + 1;
        }
        self.check_overlong(out);
    }

    fn emit(&mut self, chunk: &Bytes, start: usize, end: usize, out: &mut impl FnMut(Bytes)) {
        let mut end = end;
        if end > start && chunk[end - 1] == b'\r' {
            end -= 1;
        }
        if end - start > self.max_line {
            self.truncated += 1;
            end = start + self.max_line;
        }
        out(chunk.slice(start..end));
    }

    /// An unterminated tail longer than the cap: emit its head now, drop the rest
    /// as it arrives.
    fn check_overlong(&mut self, out: &mut impl FnMut(Bytes)) {
        if self.discarding {
            self.buf.clear();
        } else if self.buf.len() > self.max_line {
            let head = self.buf.split_to(self.max_line).freeze();
            self.buf.clear();
            self.truncated += 1;
            self.discarding = true;
            out(head);
        }
    }

    /// End of input: emit an unterminated last line, if any.
    pub fn finish(&mut self, out: &mut impl FnMut(Bytes)) {
        self.drain_lines(out);
        if !self.buf.is_empty() && !self.discarding {
            let tail = self.buf.split().freeze();
            let len = tail.len();
            self.emit(&tail, 0, len, out);
        }
        self.buf.clear();
        self.discarding = false;
    }

    /// Number of complete lines in the buffer (what the next
    /// [`Self::drain_lines`] emits, give or take a discarded remainder).
    pub fn complete_lines(&self) -> usize {
        memchr::memchr_iter(b'\n', &self.buf).count()
    }

    /// The line cap.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Bytes of an unterminated line held back.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(max: usize, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, u64) {
        let mut f = LineFramer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.buffer().extend_from_slice(c);
            f.drain_lines(&mut |b: Bytes| out.push(b.to_vec()));
        }
        f.finish(&mut |b: Bytes| out.push(b.to_vec()));
        (out, f.truncated)
    }

    #[test]
    fn splits_and_strips_crlf() {
        let (l, _) = lines(100, &[b"a\r\nb\n\nc"]);
        assert_eq!(
            l,
            vec![b"a".to_vec(), b"b".to_vec(), b"".to_vec(), b"c".to_vec()]
        );
    }

    #[test]
    fn lines_across_reads_join() {
        let (l, _) = lines(100, &[b"hel", b"lo\nwor", b"ld\n"]);
        assert_eq!(l, vec![b"hello".to_vec(), b"world".to_vec()]);
    }

    #[test]
    fn invalid_utf8_kept() {
        let (l, _) = lines(100, &[b"\xff\xfe\n"]);
        assert_eq!(l, vec![b"\xff\xfe".to_vec()]);
    }

    #[test]
    fn long_line_truncated_and_counted_within_one_read() {
        let (l, t) = lines(4, &[b"abcdefgh\nxy\n"]);
        assert_eq!(l, vec![b"abcd".to_vec(), b"xy".to_vec()]);
        assert_eq!(t, 1);
    }

    #[test]
    fn long_line_truncated_across_reads() {
        let (l, t) = lines(4, &[b"abcdef", b"ghij", b"kl\nmn\n"]);
        assert_eq!(l, vec![b"abcd".to_vec(), b"mn".to_vec()]);
        assert_eq!(t, 1);
    }

    /// Reads filling the buffer while earlier lines are alive go to new
    /// buffers (at most [`SPARES`] kept); once those lines are dropped, the
    /// next reads reuse the old allocations: no new one, lines intact.
    #[test]
    fn full_buffers_are_recycled_once_their_lines_are_dropped() {
        let mut f = LineFramer::new(100);
        let mut held = Vec::new();
        let mut seen = Vec::new();
        let mut bases = std::collections::HashSet::new();
        for round in 0..20 {
            f.reserve(4096);
            let base = f.buffer().as_ptr() as usize;
            if round >= 12 {
                bases.insert(base);
            }
            let cap = f.buffer().capacity();
            // Fill the buffer to its end: lines, then half a line carried over.
            let room = cap - f.buffer().len();
            let mut data = Vec::new();
            while data.len() + 9 + 4 <= room {
                data.extend_from_slice(
                    format!("r{round:02}-{:04}\n", data.len() % 10_000).as_bytes(),
                );
            }
            data.extend_from_slice(b"part");
            f.buffer().extend_from_slice(&data);
            assert_eq!(f.buffer().as_ptr() as usize, base);
            f.drain_lines(&mut |b: Bytes| held.push(b));
            assert_eq!(f.pending(), 4, "the half line stays");
            // The half line completes in the next read.
            if round >= 10 {
                // Downstream dropped everything before this read.
                seen.extend(held.drain(..).map(|b| b.to_vec()));
            }
        }
        assert!(f.spares.len() <= SPARES);
        assert!(
            bases.len() <= 2,
            "lines dropped: the same allocations serve again ({} used)",
            bases.len()
        );
        // Every line arrived whole, including those joined across buffers.
        f.buffer().extend_from_slice(b"\n");
        f.drain_lines(&mut |b: Bytes| held.push(b));
        seen.extend(held.drain(..).map(|b| b.to_vec()));
        let joined = seen.iter().filter(|l| l.starts_with(b"partr")).count();
        assert_eq!(
            joined, 19,
            "each carried half line joined the next read's head"
        );
        assert!(
            seen.iter().all(|l| l.len() <= 12),
            "no line ran into another"
        );
    }

    #[test]
    fn a_buffer_whose_lines_are_gone_is_reused_in_place() {
        let mut f = LineFramer::new(100);
        f.reserve(4096);
        let base = f.buffer().as_ptr() as usize;
        for _ in 0..5 {
            f.reserve(4096);
            let room = f.buffer().capacity() - f.buffer().len();
            f.buffer().extend_from_slice(&vec![b'x'; room - 1]);
            f.buffer().extend_from_slice(b"\n");
            let mut n = 0;
            f.drain_lines(&mut |_b: Bytes| n += 1);
            assert_eq!(n, 1);
            // The line was dropped at once: the same allocation serves again.
            f.reserve(4096);
            assert_eq!(f.buffer().as_ptr() as usize, base);
        }
        assert!(f.spares.is_empty(), "nothing kept when nothing was held");
    }

    #[test]
    fn cr_alone_is_kept_inside_line() {
        let (l, _) = lines(100, &[b"a\rb\n"]);
        assert_eq!(l, vec![b"a\rb".to_vec()]);
    }
}
