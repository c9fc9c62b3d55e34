//! RFC 5424 structured data, validated once by the parser and then read in place.
//!
//! [`StructuredData`] is the slice `[id a="1" b="2"][id2]` of the message.
//! [`validate`] checks its grammar and returns its length; the iterators re-walk the
//! validated bytes with the same rules and stop (never panic) should that ever fail.
//! Values keep their escapes until [`SdValue::unescaped`] is called.

use std::borrow::Cow;

use super::{ParseError, err};

/// The structured data of a message (empty for `-` and for RFC 3164).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StructuredData<'a> {
    raw: &'a [u8],
}

impl<'a> StructuredData<'a> {
    pub(super) fn new(raw: &'a [u8]) -> Self {
        StructuredData { raw }
    }

    /// The bytes as received (`[...]...`), empty when nil.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether there is no element.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The SD-ELEMENTs in order.
    pub fn elements(&self) -> SdElements<'a> {
        SdElements { rest: self.raw }
    }
}

/// Iterator over [`SdElement`]s.
#[derive(Debug, Clone)]
pub struct SdElements<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SdElements<'a> {
    type Item = SdElement<'a>;

    fn next(&mut self) -> Option<SdElement<'a>> {
        let len = element(self.rest, 0).ok()?;
        let body = self.rest.get(1..len - 1)?;
        self.rest = &self.rest[len..];
        let id_len = body.iter().position(|&b| b == b' ').unwrap_or(body.len());
        Some(SdElement {
            id: &body[..id_len],
            params: &body[id_len..],
        })
    }
}

/// One `[SD-ID param="value" ...]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdElement<'a> {
    /// The SD-ID.
    pub id: &'a [u8],
    params: &'a [u8],
}

impl<'a> SdElement<'a> {
    /// The parameters in order.
    pub fn params(&self) -> SdParams<'a> {
        SdParams { rest: self.params }
    }
}

/// Iterator over [`SdParam`]s.
#[derive(Debug, Clone)]
pub struct SdParams<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SdParams<'a> {
    type Item = SdParam<'a>;

    fn next(&mut self) -> Option<SdParam<'a>> {
        let s = self.rest.strip_prefix(b" ")?;
        let (name, value, used) = param(s, 0).ok()?;
        self.rest = &s[used..];
        Some(SdParam {
            name,
            value: SdValue { raw: value },
        })
    }
}

/// One `name="value"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdParam<'a> {
    /// PARAM-NAME.
    pub name: &'a [u8],
    /// PARAM-VALUE, escapes still in.
    pub value: SdValue<'a>,
}

/// A PARAM-VALUE as received (between the quotes, escapes still in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdValue<'a> {
    raw: &'a [u8],
}

impl<'a> SdValue<'a> {
    /// The bytes between the quotes.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The value with `\"`, `\\` and `\]` replaced (borrowed when there is none).
    /// A backslash before any other byte stays (RFC 5424 6.3.3).
    pub fn unescaped(&self) -> Cow<'a, [u8]> {
        if !self.raw.contains(&b'\\') {
            return Cow::Borrowed(self.raw);
        }
        let mut out = Vec::with_capacity(self.raw.len());
        let mut i = 0;
        while let Some(&b) = self.raw.get(i) {
            match (b, self.raw.get(i + 1)) {
                (b'\\', Some(&e @ (b'"' | b'\\' | b']'))) => {
                    out.push(e);
                    i += 2;
                }
                _ => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        Cow::Owned(out)
    }
}

/// Is a byte allowed in an SD-ID or PARAM-NAME (PRINTUSASCII except `= ] "` and SP)?
fn name_byte(b: u8) -> bool {
    (33..=126).contains(&b) && !matches!(b, b'=' | b']' | b'"')
}

/// Validates `1*SD-ELEMENT` starting at `at` in `s`; returns the length.
pub(super) fn validate(s: &[u8], at: usize) -> Result<usize, ParseError> {
    let mut i = at;
    while s.get(i) == Some(&b'[') {
        i += element(&s[i..], i)?;
    }
    if i == at {
        return err("structured data must be '-' or start with '['", at);
    }
    Ok(i - at)
}

/// One element at the start of `s` (`base` = its offset in the message, for
/// errors): returns its length including the brackets.
fn element(s: &[u8], base: usize) -> Result<usize, ParseError> {
    if s.first() != Some(&b'[') {
        return err("expected '['", base);
    }
    let id_len = s[1..].iter().take_while(|&&b| name_byte(b)).count();
    if id_len == 0 {
        return err("empty SD-ID", base + 1);
    }
    let mut i = 1 + id_len;
    loop {
        match s.get(i) {
            Some(b']') => return Ok(i + 1),
            Some(b' ') => {
                let (_, _, used) = param(&s[i + 1..], base + i + 1)?;
                i += 1 + used;
            }
            Some(_) => return err("invalid byte in structured data", base + i),
            None => return err("structured data not closed", base + i),
        }
    }
}

/// `name="value"` at the start of `s`: (name, raw value, bytes used).
fn param(s: &[u8], base: usize) -> Result<(&[u8], &[u8], usize), ParseError> {
    let name_len = s.iter().take_while(|&&b| name_byte(b)).count();
    if name_len == 0 {
        return err("empty SD parameter name", base);
    }
    if s.get(name_len) != Some(&b'=') || s.get(name_len + 1) != Some(&b'"') {
        return err("expected '=\"' after SD parameter name", base + name_len);
    }
    let start = name_len + 2;
    let mut i = start;
    loop {
        match s.get(i) {
            Some(b'\\') => i += 2,
            Some(b'"') => return Ok((&s[..name_len], &s[start..i], i + 1)),
            Some(_) => i += 1,
            None => return err("SD parameter value not closed", base + i.min(s.len())),
        }
    }
}
