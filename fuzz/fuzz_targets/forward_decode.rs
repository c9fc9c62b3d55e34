//! Differential fuzz target for the forward request decoder: any input, fed whole or
//! in pieces of a size derived from the input, must decode to the same requests and
//! stop with the same error, without panicking or exceeding the limits' memory. Every
//! record the decoder accepts (kept as raw msgpack bytes) is then read in place —
//! lookups, iteration, conversion to values — and must re-validate as the same map.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proto::forward::{Decoder, Limits, RawMap, RawValue, Request, ResponseDecoder};

fn limits() -> Limits {
    Limits {
        max_frame_bytes: 64 << 10,
        max_decompressed_bytes: 1 << 20,
        max_entries_per_frame: 10_000,
        max_depth: 32,
    }
}

/// Decodes `data` appending `step` bytes at a time, then signals EOF.
fn run(data: &[u8], step: usize) -> (Vec<Request>, Option<String>) {
    let mut decoder = Decoder::new(limits());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(request)) => out.push(request),
                Ok(None) => break,
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        assert!(
            buf.len() <= limits().max_frame_bytes + step,
            "buffered past the frame limit"
        );
    }
    loop {
        match decoder.decode_eof(&mut buf) {
            Ok(Some(request)) => out.push(request),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e.to_string())),
        }
    }
}

/// Reads a validated record every way a consumer can; none may panic.
fn walk(record: &RawMap) {
    fn visit(v: RawValue<'_>, depth: usize) {
        assert!(depth <= 64, "deeper than validated");
        match v {
            RawValue::Array(seq) => seq.items().for_each(|x| visit(x, depth + 1)),
            RawValue::Map(seq) => seq.pairs().for_each(|(k, x)| {
                visit(k, depth + 1);
                visit(x, depth + 1);
            }),
            _ => {}
        }
    }
    assert_eq!(record.iter().count(), record.len(), "pair count");
    for (k, v) in record.iter() {
        visit(k, 1);
        visit(v, 1);
        if let Some(key) = k.as_bytes() {
            assert!(record.get(key).is_some(), "a present key is found");
        }
    }
    let again = RawMap::parse_pairs(record.pairs_bytes().clone(), record.len() as u32, 64);
    assert_eq!(again.as_ref(), Ok(record), "re-validates");
    let _ = record.to_value();
}

fuzz_target!(|data: &[u8]| {
    let whole = run(data, data.len().max(1));
    let step = 1 + data
        .iter()
        .fold(0usize, |acc, &b| acc.wrapping_mul(31) ^ usize::from(b))
        % 61;
    let stepped = run(data, step);
    for request in &whole.0 {
        if let Request::Events(frame) = request {
            for entry in &frame.entries {
                walk(&entry.record);
                entry.metadata.iter().for_each(walk);
            }
            frame.metadata.iter().for_each(walk);
        }
    }
    // Compared as Debug text: records may hold NaN floats, which are never `==`.
    assert_eq!(
        format!("{whole:?}"),
        format!("{stepped:?}"),
        "feeding {step} bytes at a time changed the result"
    );

    let mut buf = BytesMut::from(data);
    let mut responses = ResponseDecoder::new();
    while let Ok(Some(_)) = responses.decode(&mut buf) {}
});
