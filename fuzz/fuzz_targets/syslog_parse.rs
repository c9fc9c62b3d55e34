//! Fuzz target for the syslog message parser: any input must parse or fail without
//! panicking; what parses is read every way a consumer can (structured data walked
//! and unescaped), every slice lies inside the input, and appending a line
//! terminator never changes the result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::syslog::{Options, parse};

fn inside(input: &[u8], s: &[u8]) -> bool {
    let (a, b) = (input.as_ptr() as usize, s.as_ptr() as usize);
    s.is_empty() || (b >= a && b + s.len() <= a + input.len())
}

fuzz_target!(|data: &[u8]| {
    let options = Options {
        now_secs: 1_796_607_434,
        utc_offset_secs: 3600,
    };
    let result = parse(data, &options);
    if let Ok(m) = &result {
        for part in [m.hostname, m.appname, m.procid, m.msgid].into_iter().flatten() {
            assert!(inside(data, part), "a field is a slice of the input");
        }
        assert!(inside(data, m.msg));
        for element in m.structured_data.elements() {
            assert!(!element.id.is_empty());
            for p in element.params() {
                assert!(!p.name.is_empty());
                assert!(p.value.unescaped().len() <= p.value.raw().len());
            }
        }
    }
    let mut with_newline = data.to_vec();
    with_newline.push(b'\n');
    let again = parse(&with_newline, &options);
    assert_eq!(
        format!("{result:?}"),
        format!("{again:?}"),
        "a trailing newline changed the result"
    );
});
