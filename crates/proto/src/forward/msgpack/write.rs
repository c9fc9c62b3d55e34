//! Infallible msgpack encoders writing the smallest header for each value into any
//! [`BufMut`] (a `Vec<u8>` or `BytesMut`).

use bytes::BufMut;
use rmpv::Value;

/// Writes an array header.
pub(crate) fn put_array_len(w: &mut impl BufMut, n: u32) {
    match n {
        0..=15 => w.put_u8(0x90 | n as u8),
        16..=0xffff => {
            w.put_u8(0xdc);
            w.put_u16(n as u16);
        }
        _ => {
            w.put_u8(0xdd);
            w.put_u32(n);
        }
    }
}

/// Writes a map header.
pub(crate) fn put_map_len(w: &mut impl BufMut, n: u32) {
    match n {
        0..=15 => w.put_u8(0x80 | n as u8),
        16..=0xffff => {
            w.put_u8(0xde);
            w.put_u16(n as u16);
        }
        _ => {
            w.put_u8(0xdf);
            w.put_u32(n);
        }
    }
}

/// Length of a str/bin/ext payload as a u32. Panics on > 4 GiB, which no caller can
/// reach (they bound their inputs far below that).
fn len32(len: usize) -> u32 {
    u32::try_from(len).expect("msgpack payloads are limited to 4 GiB by the format")
}

/// Writes a str (bytes need not be UTF-8: the forward protocol treats str as bytes).
pub(crate) fn put_str(w: &mut impl BufMut, s: &[u8]) {
    let n = len32(s.len());
    match n {
        0..=31 => w.put_u8(0xa0 | n as u8),
        32..=0xff => {
            w.put_u8(0xd9);
            w.put_u8(n as u8);
        }
        0x100..=0xffff => {
            w.put_u8(0xda);
            w.put_u16(n as u16);
        }
        _ => {
            w.put_u8(0xdb);
            w.put_u32(n);
        }
    }
    w.put_slice(s);
}

/// Writes a bin.
pub(crate) fn put_bin(w: &mut impl BufMut, b: &[u8]) {
    let n = len32(b.len());
    match n {
        0..=0xff => {
            w.put_u8(0xc4);
            w.put_u8(n as u8);
        }
        0x100..=0xffff => {
            w.put_u8(0xc5);
            w.put_u16(n as u16);
        }
        _ => {
            w.put_u8(0xc6);
            w.put_u32(n);
        }
    }
    w.put_slice(b);
}

/// Writes an ext value.
pub(crate) fn put_ext(w: &mut impl BufMut, ty: i8, data: &[u8]) {
    let n = len32(data.len());
    match n {
        1 => w.put_u8(0xd4),
        2 => w.put_u8(0xd5),
        4 => w.put_u8(0xd6),
        8 => w.put_u8(0xd7),
        16 => w.put_u8(0xd8),
        0..=0xff => {
            w.put_u8(0xc7);
            w.put_u8(n as u8);
        }
        0x100..=0xffff => {
            w.put_u8(0xc8);
            w.put_u16(n as u16);
        }
        _ => {
            w.put_u8(0xc9);
            w.put_u32(n);
        }
    }
    w.put_i8(ty);
    w.put_slice(data);
}

/// Writes a non-negative integer with the smallest marker.
pub(crate) fn put_uint(w: &mut impl BufMut, n: u64) {
    match n {
        0..=0x7f => w.put_u8(n as u8),
        0x80..=0xff => {
            w.put_u8(0xcc);
            w.put_u8(n as u8);
        }
        0x100..=0xffff => {
            w.put_u8(0xcd);
            w.put_u16(n as u16);
        }
        0x1_0000..=0xffff_ffff => {
            w.put_u8(0xce);
            w.put_u32(n as u32);
        }
        _ => {
            w.put_u8(0xcf);
            w.put_u64(n);
        }
    }
}

/// Writes an integer with the smallest marker.
pub(crate) fn put_int(w: &mut impl BufMut, n: i64) {
    if let Ok(u) = u64::try_from(n) {
        return put_uint(w, u);
    }
    if n >= -32 {
        w.put_i8(n as i8);
    } else if let Ok(v) = i8::try_from(n) {
        w.put_u8(0xd0);
        w.put_i8(v);
    } else if let Ok(v) = i16::try_from(n) {
        w.put_u8(0xd1);
        w.put_i16(v);
    } else if let Ok(v) = i32::try_from(n) {
        w.put_u8(0xd2);
        w.put_i32(v);
    } else {
        w.put_u8(0xd3);
        w.put_i64(n);
    }
}

/// Writes any value. Recursion follows the caller's own (trusted) value.
pub(crate) fn put_value(w: &mut impl BufMut, v: &Value) {
    match v {
        Value::Nil => w.put_u8(0xc0),
        Value::Boolean(b) => w.put_u8(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => put_uint(w, u),
            (None, Some(s)) => put_int(w, s),
            (None, None) => unreachable!("an rmpv integer fits u64 or i64"),
        },
        Value::F32(f) => {
            w.put_u8(0xca);
            w.put_f32(*f);
        }
        Value::F64(f) => {
            w.put_u8(0xcb);
            w.put_f64(*f);
        }
        Value::String(s) => put_str(w, s.as_bytes()),
        Value::Binary(b) => put_bin(w, b),
        Value::Array(items) => {
            put_array_len(w, len32(items.len()));
            for item in items {
                put_value(w, item);
            }
        }
        Value::Map(pairs) => {
            put_map_len(w, len32(pairs.len()));
            for (k, v) in pairs {
                put_value(w, k);
                put_value(w, v);
            }
        }
        Value::Ext(ty, data) => put_ext(w, *ty, data),
    }
}
