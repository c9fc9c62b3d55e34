use bytes::BytesMut;

use crate::syslog::framing::{Frame, FrameError, Framer, Framing};

/// Feeds `data` `step` bytes at a time, then ends the stream.
pub(super) fn run(
    framing: Framing,
    max: usize,
    data: &[u8],
    step: usize,
) -> (Vec<Frame>, Option<FrameError>) {
    let mut f = Framer::new(framing, max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match f.decode(&mut buf) {
                Ok(Some(frame)) => out.push(frame),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
        assert!(buf.len() <= max + 21 + step, "buffered past the cap");
    }
    loop {
        match f.decode_eof(&mut buf) {
            Ok(Some(frame)) => out.push(frame),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn bodies(frames: &[Frame]) -> Vec<(&[u8], bool)> {
    frames.iter().map(|f| (&f.bytes[..], f.truncated)).collect()
}

#[test]
fn auto_detects_octet_counting_and_newline_per_connection() {
    let (f, e) = run(Framing::Auto, 100, b"5 <13>a3 <1>", 1);
    assert_eq!(
        (bodies(&f), e),
        (vec![(&b"<13>a"[..], false), (b"<1>", false)], None)
    );
    let (f, e) = run(Framing::Auto, 100, b"<13>a\n<14>b\r\n\n<15>c", 1);
    assert_eq!(
        (bodies(&f), e),
        (
            vec![
                (&b"<13>a"[..], false),
                (b"<14>b\r", false),
                (b"<15>c", false)
            ],
            None
        )
    );
}

#[test]
fn oversized_counted_frame_is_truncated_and_the_next_read_from_its_boundary() {
    // rsyslog #4283: the frame after a truncated one must not be lost.
    let mut data = b"12 <13>abcdefgh".to_vec();
    data.extend_from_slice(b"4 <1>x");
    for step in [1, 3, 100] {
        let (f, e) = run(Framing::OctetCounting, 5, &data, step);
        assert_eq!(
            (bodies(&f), e),
            (vec![(&b"<13>a"[..], true), (b"<1>x", false)], None),
            "step {step}"
        );
    }
}

#[test]
fn huge_octet_count_discards_without_buffering() {
    let mut f = Framer::new(Framing::OctetCounting, 8);
    let mut buf = BytesMut::from(&b"9223372036854775808 <13>aaaaaaaa"[..]);
    let frame = f.decode(&mut buf).expect("valid header").expect("a frame");
    assert!(frame.truncated);
    for _ in 0..1000 {
        buf.extend_from_slice(&[b'a'; 4096]);
        assert_eq!(f.decode(&mut buf), Ok(None));
        assert!(buf.is_empty(), "discarded as it arrives");
    }
    assert_eq!(f.truncated(), 1);
    assert!(matches!(
        f.decode_eof(&mut buf),
        Err(FrameError::CutFrame(_))
    ));
    // 20 digits do not fit: an error, not an overflow.
    let (_, e) = run(Framing::OctetCounting, 8, b"99999999999999999999 x", 1);
    assert_eq!(e, Some(FrameError::BadOctetCount));
}

#[test]
fn bad_octet_headers_are_errors() {
    for bad in [&b"0 x"[..], b"12x", b"abc", b" 1 x", b"1\n"] {
        let (_, e) = run(Framing::OctetCounting, 100, bad, 100);
        assert_eq!(e, Some(FrameError::BadOctetCount), "{bad:?}");
    }
    let (_, e) = run(Framing::OctetCounting, 100, b"10 short", 100);
    assert_eq!(e, Some(FrameError::CutFrame(0)));
}

#[test]
fn stray_newlines_between_counted_frames_are_skipped() {
    let (f, e) = run(Framing::Auto, 100, b"3 abc\n3 def\r\n", 2);
    assert_eq!(
        (bodies(&f), e),
        (vec![(&b"abc"[..], false), (b"def", false)], None)
    );
}

#[test]
fn long_newline_line_is_truncated_and_the_rest_skipped() {
    let (f, e) = run(Framing::Newline, 4, b"abcdefghij\nxy\nabcd\n", 3);
    assert_eq!(
        (bodies(&f), e),
        (
            vec![(&b"abcd"[..], true), (b"xy", false), (b"abcd", false)],
            None
        )
    );
    let (f, _) = run(Framing::Newline, 4, b"abcdefghij", 100);
    assert_eq!(
        bodies(&f),
        vec![(&b"abcd"[..], true)],
        "the rest never comes"
    );
}
