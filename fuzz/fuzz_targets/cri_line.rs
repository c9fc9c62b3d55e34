//! Any bytes: the CRI and Docker json-file line parsers, their time conversion
//! and the pod path split return a value or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = proto::cri::parse_line(data) {
        let _ = proto::cri::parse_rfc3339_ns(line.time);
        assert!(line.message.len() <= data.len());
    }
    if let Ok(line) = proto::docker::parse_line(data) {
        let _ = proto::cri::parse_rfc3339_ns(line.time.as_bytes());
        assert!(line.message.len() <= data.len());
    }
    let _ = proto::cri::parse_rfc3339_ns(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = proto::cri::pod_path(s);
    }
});
