//! [`Reader`]: values (and skipped values) from a complete slice, depth-bounded,
//! container capacity capped by the bytes left.

#[cfg(test)]
use rmpv::Value;

use super::{Header, InvalidMarker, parse_header};

/// Why [`Reader`] could not produce a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The slice ends inside the value.
    Eof,
    /// Reserved marker.
    InvalidMarker(u8),
    /// Nesting deeper than the reader's depth budget.
    TooDeep,
}

impl From<InvalidMarker> for ReadError {
    fn from(e: InvalidMarker) -> Self {
        ReadError::InvalidMarker(e.0)
    }
}

/// Cursor over a complete msgpack slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn set_pos(&mut self, pos: usize) {
        self.pos = pos.min(self.buf.len());
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn header(&mut self) -> Result<Header, ReadError> {
        let (h, n) = parse_header(&self.buf[self.pos..])?.ok_or(ReadError::Eof)?;
        self.pos += n;
        Ok(h)
    }

    /// Takes the next `len` bytes (a str/bin/ext payload).
    pub(crate) fn bytes(&mut self, len: u32) -> Result<&'a [u8], ReadError> {
        let len = len as usize;
        if self.remaining() < len {
            return Err(ReadError::Eof);
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    /// Reads a whole value with at most `depth` levels of containers.
    #[cfg(test)]
    pub(crate) fn value(&mut self, depth: usize) -> Result<Value, ReadError> {
        let start = self.pos;
        let h = self.header()?;
        self.value_with(h, start, depth)
    }

    /// Reads the rest of a value whose header `h` (which began at `start`) was just read.
    #[cfg(test)]
    pub(crate) fn value_with(
        &mut self,
        h: Header,
        start: usize,
        depth: usize,
    ) -> Result<Value, ReadError> {
        Ok(match h {
            Header::Nil => Value::Nil,
            Header::Bool(b) => Value::Boolean(b),
            Header::Uint(n) => Value::from(n),
            Header::Int(n) => Value::from(n),
            Header::F32(f) => Value::F32(f),
            Header::F64(f) => Value::F64(f),
            Header::Str(n) => {
                let bytes = self.bytes(n)?;
                match std::str::from_utf8(bytes) {
                    Ok(s) => Value::String(s.into()),
                    // rmpv has no public constructor for a non-UTF-8 `Utf8String`; its
                    // own reader builds one from the raw str (header + bytes, no nesting).
                    Err(_) => rmpv::decode::read_value(&mut &self.buf[start..self.pos])
                        .unwrap_or_else(|_| Value::Binary(bytes.to_vec())),
                }
            }
            Header::Bin(n) => Value::Binary(self.bytes(n)?.to_vec()),
            Header::Ext(ty, n) => Value::Ext(ty, self.bytes(n)?.to_vec()),
            Header::Array(n) => {
                let depth = depth.checked_sub(1).ok_or(ReadError::TooDeep)?;
                let mut items = Vec::with_capacity((n as usize).min(self.remaining()));
                for _ in 0..n {
                    items.push(self.value(depth)?);
                }
                Value::Array(items)
            }
            Header::Map(n) => {
                let depth = depth.checked_sub(1).ok_or(ReadError::TooDeep)?;
                let mut pairs = Vec::with_capacity((n as usize).min(self.remaining() / 2));
                for _ in 0..n {
                    let k = self.value(depth)?;
                    let v = self.value(depth)?;
                    pairs.push((k, v));
                }
                Value::Map(pairs)
            }
        })
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Moves past `n` bytes (at most to the end).
    pub(crate) fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }

    /// The bytes between two positions of this reader (empty if out of range).
    pub(crate) fn slice(&self, start: usize, end: usize) -> &'a [u8] {
        self.buf.get(start..end).unwrap_or_default()
    }

    /// Skips one value, checking every length and at most `depth` levels of
    /// containers (the same budget [`Reader::value`] applies), without building it.
    #[inline]
    pub(crate) fn skip_bounded(&mut self, depth: usize) -> Result<(), ReadError> {
        // Fast path for the values records are mostly made of: one-byte scalars and
        // short strings (fixstr), no header parse.
        let Some(&m) = self.buf.get(self.pos) else {
            return Err(ReadError::Eof);
        };
        match m {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => {
                self.pos += 1;
                return Ok(());
            }
            0xa0..=0xbf => {
                let end = self.pos + 1 + usize::from(m & 0x1f);
                if end > self.buf.len() {
                    return Err(ReadError::Eof);
                }
                self.pos = end;
                return Ok(());
            }
            _ => {}
        }
        let h = self.header()?;
        self.skip_bounded_rest(h, depth)
    }

    /// [`Reader::skip_bounded`] for a value whose header `h` was just read.
    pub(crate) fn skip_bounded_rest(&mut self, h: Header, depth: usize) -> Result<(), ReadError> {
        match h {
            Header::Str(n) | Header::Bin(n) | Header::Ext(_, n) => {
                self.bytes(n)?;
            }
            Header::Array(_) | Header::Map(_) => {
                let depth = depth.checked_sub(1).ok_or(ReadError::TooDeep)?;
                let children = h.children().unwrap_or(0);
                // Each child takes at least one byte.
                if children > self.remaining() as u64 {
                    return Err(ReadError::Eof);
                }
                for _ in 0..children {
                    self.skip_bounded(depth)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Skips the rest of a value whose header `h` was just read (no depth bound:
    /// for input already validated).
    pub(crate) fn skip_rest(&mut self, h: Header) -> Result<(), ReadError> {
        self.bytes(h.payload_len())?;
        if let Some(children) = h.children() {
            if children > self.remaining() as u64 {
                return Err(ReadError::Eof);
            }
            for _ in 0..children {
                self.skip()?;
            }
        }
        Ok(())
    }

    /// Skips one value without building it. Iterative, so no depth limit is needed.
    pub(crate) fn skip(&mut self) -> Result<(), ReadError> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let h = self.header()?;
            self.bytes(h.payload_len())?;
            if let Some(children) = h.children() {
                if children > self.remaining() as u64 {
                    return Err(ReadError::Eof);
                }
                pending += children;
            }
        }
        Ok(())
    }
}
