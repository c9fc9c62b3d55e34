mod corpus;
mod framing;
mod props;

use super::*;

/// 2026-12-07T01:37:14Z, the "now" of every test.
pub(super) const NOW: i64 = 1_796_607_434;

pub(super) fn opts() -> Options {
    Options {
        now_secs: NOW,
        utc_offset_secs: 0,
    }
}

fn ok(line: &[u8]) -> Message<'_> {
    parse(line, &opts()).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(line)))
}

/// Unix nanoseconds of an RFC 3339 time, through the parser's own ISO reader.
fn ns(iso: &str) -> i64 {
    let (c, off, _) = time::iso(iso.as_bytes(), 0).expect("test timestamp");
    c.to_unix_ns(off.unwrap_or(0)).expect("in range")
}

#[test]
fn now_constant_is_what_it_says() {
    assert_eq!(ns("2026-12-07T01:37:14Z"), NOW * 1_000_000_000);
}

#[test]
fn rfc5424_seed_example() {
    let m = ok(b"<16>1 2017-02-28T12:00:00.009Z 192.168.0.1 fluentd - - - Hello!");
    assert_eq!(m.format, Format::Rfc5424);
    assert_eq!(
        m.priority,
        Some(Priority {
            facility: 2,
            severity: 0
        })
    );
    assert_eq!(m.timestamp, Some(ns("2017-02-28T12:00:00.009Z")));
    assert_eq!(m.timestamp, Some(1_488_283_200_009_000_000));
    assert_eq!(m.hostname, Some(&b"192.168.0.1"[..]));
    assert_eq!(m.appname, Some(&b"fluentd"[..]));
    assert_eq!((m.procid, m.msgid), (None, None));
    assert!(m.structured_data.is_empty());
    assert_eq!(m.msg, b"Hello!");
}

#[test]
fn rfc5424_structured_data_with_escapes_and_bom() {
    let line = b"<165>1 2003-10-11T22:14:15.003-07:00 mymachine.example.com evntslog 8710 ID47 \
        [exampleSDID@32473 iut=\"3\" eventSource=\"Appl\\\"ic\\]at\\\\ion\" x=\"a\\b\"][meta seq=\"1\"] \xEF\xBB\xBFAn application event";
    let m = ok(line);
    assert_eq!(m.timestamp, Some(ns("2003-10-12T05:14:15.003Z")));
    assert_eq!(m.procid, Some(&b"8710"[..]));
    assert_eq!(m.msgid, Some(&b"ID47"[..]));
    assert_eq!(m.msg, b"An application event");
    let els: Vec<_> = m.structured_data.elements().collect();
    assert_eq!(els.len(), 2);
    assert_eq!(els[0].id, b"exampleSDID@32473");
    let p: Vec<_> = els[0]
        .params()
        .map(|p| (p.name, p.value.unescaped().into_owned()))
        .collect();
    assert_eq!(
        p,
        vec![
            (&b"iut"[..], b"3".to_vec()),
            (&b"eventSource"[..], b"Appl\"ic]at\\ion".to_vec()),
            (&b"x"[..], b"a\\b".to_vec()),
        ]
    );
    assert_eq!(els[1].id, b"meta");
    assert_eq!(els[1].params().count(), 1);
}

#[test]
fn rfc5424_nil_everything_and_no_msg() {
    let m = ok(b"<0>1 - - - - - -");
    assert_eq!(m.timestamp, None);
    assert_eq!(m.hostname, None);
    assert_eq!(m.msg, b"");
    let m = ok(b"<0>1 - - - - - [a]");
    assert_eq!(m.structured_data.as_bytes(), b"[a]");
}

#[test]
fn rfc5424_broken_grammar_is_an_error_with_offset() {
    let e = parse(b"<13>1 2026-13-01T00:00:00Z h a p m - x", &opts()).unwrap_err();
    assert_eq!(e.reason, "timestamp out of range");
    let e = parse(b"<13>1 - h a p m [x y=\"1] msg", &opts()).unwrap_err();
    assert_eq!(e.reason, "SD parameter value not closed");
    let e = parse(b"<13>1 - h a p", &opts()).unwrap_err();
    assert_eq!(e.reason, "header ends early");
    assert_eq!(e.to_string(), "header ends early at byte 13");
    let e = parse(b"<13>1 - h a p m -x", &opts()).unwrap_err();
    assert_eq!(e.reason, "expected space after structured data");
}

#[test]
fn rfc3164_classic_with_pid() {
    let m =
        ok(b"<34>Oct 11 22:14:15 mymachine su[123]: 'su root' failed for lonvick on /dev/pts/8");
    assert_eq!(m.format, Format::Rfc3164);
    assert_eq!(m.priority.map(|p| (p.facility, p.severity)), Some((4, 2)));
    assert_eq!(m.timestamp, Some(ns("2026-10-11T22:14:15Z")));
    assert_eq!(m.hostname, Some(&b"mymachine"[..]));
    assert_eq!(m.appname, Some(&b"su"[..]));
    assert_eq!(m.procid, Some(&b"123"[..]));
    assert_eq!(m.msg, b"'su root' failed for lonvick on /dev/pts/8");
}

#[test]
fn rfc3164_space_padded_and_unpadded_day() {
    let a = ok(b"<13>Dec  7 01:00:00 host app: x");
    let b = ok(b"<13>Dec 7 01:00:00 host app: x");
    let c = ok(b"<13>Dec 07 01:00:00 host app: x");
    assert_eq!(a.timestamp, Some(ns("2026-12-07T01:00:00Z")));
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn rfc3164_year_rollover_both_ways() {
    // Read on Jan 1st, a Dec 31st stamp is last year's.
    let jan1 = Options {
        now_secs: ns("2027-01-01T00:00:05Z") / 1_000_000_000,
        utc_offset_secs: 0,
    };
    let m = parse(b"<13>Dec 31 23:59:58 h a: x", &jan1).expect("parses");
    assert_eq!(m.timestamp, Some(ns("2026-12-31T23:59:58Z")));
    // Read on Dec 31st, a Jan 1st stamp from a clock running ahead is next year's.
    let dec31 = Options {
        now_secs: ns("2026-12-31T23:59:58Z") / 1_000_000_000,
        utc_offset_secs: 0,
    };
    let m = parse(b"<13>Jan  1 00:00:03 h a: x", &dec31).expect("parses");
    assert_eq!(m.timestamp, Some(ns("2027-01-01T00:00:03Z")));
}

#[test]
fn rfc3164_timezone_is_configurable() {
    let cet = Options {
        now_secs: NOW,
        utc_offset_secs: 3600,
    };
    let m = parse(b"<13>Dec  7 02:00:00 h a: x", &cet).expect("parses");
    assert_eq!(m.timestamp, Some(ns("2026-12-07T01:00:00Z")));
}

#[test]
fn rfc3164_missing_hostname_as_glibc_sends() {
    let m = ok(b"<30>Dec  7 01:37:14 systemd[1]: Started foo.service.");
    assert_eq!(m.hostname, None);
    assert_eq!(m.appname, Some(&b"systemd"[..]));
    assert_eq!(m.procid, Some(&b"1"[..]));
    assert_eq!(m.msg, b"Started foo.service.");
    let m = ok(b"<13>Dec  7 01:37:14 root: hello");
    assert_eq!((m.hostname, m.appname), (None, Some(&b"root"[..])));
}

#[test]
fn rfc3164_iso_timestamp_and_missing_pri() {
    let m = ok(b"<13>2026-12-07T01:37:14.123456+01:00 host app[9]: hi");
    assert_eq!(m.timestamp, Some(ns("2026-12-07T00:37:14.123456Z")));
    assert_eq!(m.hostname, Some(&b"host"[..]));
    let m = ok(b"Dec  7 01:37:14 host app: no pri");
    assert_eq!(m.priority, None);
    assert_eq!(m.msg, b"no pri");
}

#[test]
fn pri_without_anything_else_is_the_message() {
    let m = ok(b"<13>hello world");
    assert_eq!(m.format, Format::Rfc3164);
    assert_eq!((m.timestamp, m.hostname, m.appname), (None, None, None));
    assert_eq!(m.msg, b"hello world");
}

#[test]
fn neither_format_is_an_error() {
    for bad in [
        &b"just text"[..],
        b"",
        b"\n",
        b"<>x",
        b"<1000>x",
        b"<12",
        b"<1a>x",
    ] {
        assert!(parse(bad, &opts()).is_err(), "{bad:?}");
    }
}

#[test]
fn trailing_terminators_are_removed_and_nothing_more() {
    for suffix in [&b""[..], b"\n", b"\r\n", b"\0", b"\n\0"] {
        let mut line = b"<13>1 - h a p m - Hello!".to_vec();
        line.extend_from_slice(suffix);
        assert_eq!(ok(&line).msg, b"Hello!", "suffix {suffix:?}");
        let mut line = b"<13>Dec  7 01:37:14 h a: Hello!".to_vec();
        line.extend_from_slice(suffix);
        assert_eq!(ok(&line).msg, b"Hello!", "suffix {suffix:?}");
    }
}

#[test]
fn cisco_sequence_number_and_clock_mark() {
    let m = ok(b"<189>123: *Mar  1 18:46:11.123: %SYS-5-CONFIG_I: Configured from console");
    assert_eq!(m.timestamp, Some(ns("2026-03-01T18:46:11.123Z")));
    assert_eq!(m.appname, Some(&b"%SYS-5-CONFIG_I"[..]));
    assert_eq!(m.msg, b"Configured from console");
    let m = ok(b"<189>Mar  1 2025 18:46:11 UTC: %LINK-3-UPDOWN: Interface up");
    assert_eq!(m.timestamp, Some(ns("2025-03-01T18:46:11Z")));
}

#[test]
fn priority_names() {
    let p = Priority {
        facility: 23,
        severity: 4,
    };
    assert_eq!(
        (p.facility_name(), p.severity_name(), p.value()),
        ("local7", "warning", 188)
    );
}
