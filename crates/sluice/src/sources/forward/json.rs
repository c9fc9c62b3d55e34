//! A record as JSON, for the event body when the record has no `message_key`
//! string. Same value mapping as the `json` encoding: str (lossy UTF-8) and UTF-8
//! bin as strings, other bin and ext as base64, non-finite floats as null.
//! Depth is already capped by the decoder; [`MAX_DEPTH`] only guards recursion.

use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::event::{Fields, Value};

const MAX_DEPTH: usize = 128;

/// Append `{"k":v,...}` for `pairs`.
pub(crate) fn write_map(out: &mut Vec<u8>, pairs: &Fields) {
    write_pairs(out, pairs, 0);
}

fn write_pairs(out: &mut Vec<u8>, pairs: &[(Value, Value)], depth: usize) {
    out.push(b'{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match k {
            Value::String(s) => str_lossy(out, s.as_bytes()),
            Value::Binary(b) => str_lossy(out, b),
            other => str_lossy(out, other.to_string().as_bytes()),
        }
        out.push(b':');
        write_value(out, v, depth + 1);
    }
    out.push(b'}');
}

fn str_lossy(out: &mut Vec<u8>, b: &[u8]) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(b));
}

fn write_value(out: &mut Vec<u8>, v: &Value, depth: usize) {
    if depth > MAX_DEPTH {
        out.extend_from_slice(b"null");
        return;
    }
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Value::F32(f) if f.is_finite() => {
            let _ = write!(out, "{f}");
        }
        Value::F64(f) if f.is_finite() => {
            let _ = write!(out, "{f}");
        }
        Value::F32(_) | Value::F64(_) => out.extend_from_slice(b"null"),
        Value::String(s) => str_lossy(out, s.as_bytes()),
        Value::Binary(b) => match std::str::from_utf8(b) {
            Ok(s) => str_lossy(out, s.as_bytes()),
            Err(_) => base64(out, b),
        },
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, depth + 1);
            }
            out.push(b']');
        }
        Value::Map(pairs) => write_pairs(out, pairs, depth),
        Value::Ext(_, data) => base64(out, data),
    }
}

fn base64(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(B64.encode(b).as_bytes());
    out.push(b'"');
}
