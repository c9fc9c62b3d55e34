//! PackedForward payloads: plain entry streams, and gzip/zstd ones inflated in
//! steps, each entry validated as soon as it is complete.

use std::io::Read;

use bytes::Bytes;

use super::options::Algorithm;
use super::{RequestParser, is_array_marker};
use crate::forward::entry::{EntrySpan, parse_entry};
use crate::forward::error::DecodeErrorKind;
use crate::forward::msgpack::{Reader, Scan, ScanError, Scanner};
use crate::forward::{Entry, Mode};

impl RequestParser<'_> {
    /// Decodes a PackedForward payload (at `base` in the frame); returns the mode it
    /// turned out to be.
    pub(super) fn parse_packed_entries(
        &mut self,
        payload: &[u8],
        base: usize,
        compressed: Option<Algorithm>,
        size: Option<u64>,
        entries: &mut Vec<Entry>,
    ) -> Result<Mode, DecodeErrorKind> {
        let algorithm = Algorithm::sniff(payload).or(compressed);
        match algorithm {
            None => {
                let mut r = Reader::new(payload);
                entries.reserve(self.capacity_hint(size, payload.len()));
                let mut i = 0;
                while r.remaining() > 0 {
                    self.check_entry_count(i)?;
                    if let Some(entry) = parse_entry(&mut r, self.limits.depth())? {
                        entries.push(entry.to_entry(self.frame, base));
                    }
                    i += 1;
                }
                Ok(Mode::PackedForward)
            }
            Some(Algorithm::Gzip) => {
                let inflater = flate2::bufread::MultiGzDecoder::new(payload);
                self.inflate_entries(inflater, Algorithm::Gzip, entries)?;
                Ok(Mode::CompressedPackedForward)
            }
            #[cfg(feature = "zstd")]
            Some(Algorithm::Zstd) => {
                let mut inflater = zstd::stream::read::Decoder::with_buffer(payload)
                    .map_err(|source| decompress_error(Algorithm::Zstd, source))?;
                // Cap the window the frame header may ask for (8 MiB covers every
                // non-"ultra" compression level) so a header cannot make us allocate
                // zstd's default maximum of 128 MiB.
                inflater
                    .window_log_max(ZSTD_WINDOW_LOG_MAX)
                    .map_err(|source| decompress_error(Algorithm::Zstd, source))?;
                self.inflate_entries(inflater, Algorithm::Zstd, entries)?;
                Ok(Mode::CompressedPackedForward)
            }
            #[cfg(not(feature = "zstd"))]
            Some(Algorithm::Zstd) => Err(DecodeErrorKind::UnsupportedCompression("zstd".into())),
        }
    }

    /// Entries to reserve for a payload of `len` bytes: the `size` option when it is
    /// plausible (Fluentd, Fluent Bit and sluice send the entry count), else a guess
    /// from typical ~100-byte entries. Never more than the bytes could hold (the
    /// smallest entry, `[0, {}]`, is 3 bytes) nor the entry limit.
    pub(super) fn capacity_hint(&self, size: Option<u64>, len: usize) -> usize {
        let most = (len / 3).min(self.limits.max_entries_per_frame);
        match size.and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n <= most => n,
            _ => (len / 128).min(most),
        }
    }

    pub(super) fn check_entry_count(&mut self, i: usize) -> Result<(), DecodeErrorKind> {
        self.ctx.entry = Some(i);
        if i >= self.limits.max_entries_per_frame {
            return Err(DecodeErrorKind::TooManyEntries {
                limit: self.limits.max_entries_per_frame,
            });
        }
        Ok(())
    }

    /// Inflates `src` in steps, validating each entry once it is complete, so bad
    /// content fails at the first step that shows it. The inflated bytes are kept in
    /// one buffer (at most [`Limits::max_decompressed_bytes`]): the records are
    /// slices of it.
    pub(super) fn inflate_entries(
        &mut self,
        mut src: impl Read,
        algorithm: Algorithm,
        entries: &mut Vec<Entry>,
    ) -> Result<(), DecodeErrorKind> {
        let cap = self.limits.max_decompressed_bytes;
        let depth = self.limits.depth();
        let too_large = DecodeErrorKind::DecompressedTooLarge {
            algorithm: algorithm.name(),
            limit: cap,
        };
        let mut step = vec![0u8; INFLATE_STEP];
        let mut pending: Vec<u8> = Vec::new();
        let mut start = 0; // first unparsed byte of `pending`
        let mut scanner = Scanner::default();
        let mut spans: Vec<(usize, EntrySpan)> = Vec::new();
        let mut i = 0;
        loop {
            while start < pending.len() {
                if !scanner.in_progress() && !is_array_marker(pending[start]) {
                    self.ctx.entry = Some(i);
                    return Err(DecodeErrorKind::InvalidEntry {
                        reason: "entry is not an array",
                    });
                }
                // Bytes inflated before this entry count against the cap too.
                let budget = cap - start;
                match scanner.scan(&pending[start..], budget, depth) {
                    Ok(Scan::NeedMore) => break,
                    Ok(Scan::Complete(n)) => {
                        self.check_entry_count(i)?;
                        let mut r = Reader::new(&pending[start..start + n]);
                        if let Some(entry) = parse_entry(&mut r, depth)? {
                            spans.push((start, entry));
                        }
                        start += n;
                        i += 1;
                    }
                    Err(ScanError::TooLarge { .. }) => return Err(too_large),
                    Err(ScanError::TooDeep) => {
                        return Err(DecodeErrorKind::TooDeep { limit: depth });
                    }
                    Err(ScanError::InvalidMarker { byte, .. }) => {
                        return Err(DecodeErrorKind::InvalidMarker { byte });
                    }
                }
            }
            let n = loop {
                match src.read(&mut step) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(source) => return Err(decompress_error(algorithm, source)),
                }
            };
            if n == 0 {
                if start < pending.len() {
                    self.ctx.entry = Some(i);
                    return Err(DecodeErrorKind::TruncatedEntries);
                }
                // The records keep the whole allocation alive: give back what
                // doubling left unused, so it is about the bytes the records span.
                pending.shrink_to_fit();
                self.inflated = pending.capacity();
                let backing = Bytes::from(pending);
                entries.reserve_exact(spans.len());
                entries.extend(
                    spans
                        .into_iter()
                        .map(|(base, span)| span.to_entry(&backing, base)),
                );
                return Ok(());
            }
            if pending.len() + n > cap {
                return Err(too_large);
            }
            pending.extend_from_slice(&step[..n]);
        }
    }
}

pub(super) const INFLATE_STEP: usize = 64 << 10;
#[cfg(feature = "zstd")]
pub(super) const ZSTD_WINDOW_LOG_MAX: u32 = 23;

pub(super) fn decompress_error(algorithm: Algorithm, source: std::io::Error) -> DecodeErrorKind {
    DecodeErrorKind::Decompress {
        algorithm: algorithm.name(),
        source,
    }
}
