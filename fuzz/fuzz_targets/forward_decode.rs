//! Differential fuzz target for the forward request decoder: any input, fed whole or
//! in pieces of a size derived from the input, must decode to the same requests and
//! stop with the same error, without panicking or exceeding the limits' memory.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proto::forward::{Decoder, Limits, Request, ResponseDecoder};

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

fuzz_target!(|data: &[u8]| {
    let whole = run(data, data.len().max(1));
    let step = 1 + data
        .iter()
        .fold(0usize, |acc, &b| acc.wrapping_mul(31) ^ usize::from(b))
        % 61;
    let stepped = run(data, step);
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
