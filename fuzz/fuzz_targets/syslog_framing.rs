//! Fuzz target for the RFC 6587 stream framer: any byte stream, fed whole or in
//! pieces of a size derived from the input, must give the same frames and the same
//! error in every framing mode, and never buffer past the message cap.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proto::syslog::framing::{Frame, FrameError, Framer, Framing};

const MAX: usize = 64;

fn run(framing: Framing, data: &[u8], step: usize) -> (Vec<Frame>, Option<FrameError>) {
    let mut framer = Framer::new(framing, MAX);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match framer.decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.bytes.len() <= MAX, "frame past the cap");
                    out.push(f);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
        assert!(buf.len() <= MAX + 20 + step, "buffered past the cap");
    }
    loop {
        match framer.decode_eof(&mut buf) {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let step = 1 + data
        .iter()
        .fold(0usize, |acc, &b| acc.wrapping_mul(31) ^ usize::from(b))
        % 23;
    for framing in [Framing::Auto, Framing::OctetCounting, Framing::Newline] {
        let whole = run(framing, data, data.len().max(1));
        let stepped = run(framing, data, step);
        assert_eq!(whole, stepped, "{framing:?}: feeding {step} bytes at a time changed the result");
    }
});
