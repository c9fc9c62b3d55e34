//! Property tests: the parser and the framer never panic; generated RFC 5424 and
//! RFC 3164 lines parse back to their parts, with or without trailing LF/NUL; feeding
//! a stream in any piece size yields the same frames.

use proptest::prelude::*;

use super::framing::run;
use super::opts;
use crate::syslog::framing::Framing;
use crate::syslog::{Format, parse};

fn token() -> impl Strategy<Value = String> {
    "[!-~&&[^\\-]][!-~]{0,20}"
}

fn sd_value() -> impl Strategy<Value = String> {
    "[ -~]{0,12}"
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace(']', "\\]")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&data, &opts());
    }

    #[test]
    fn mutated_valid_lines_never_panic(
        pos in 0usize..120,
        byte in any::<u8>(),
        cut in 0usize..130,
    ) {
        let base = b"<165>1 2003-10-11T22:14:15.003-07:00 host app 1 ID [a@1 b=\"c\\\"]\"][x] \xEF\xBB\xBFmsg";
        let mut v = base.to_vec();
        let p = pos % v.len();
        v[p] = byte;
        v.truncate(cut);
        let _ = parse(&v, &opts());
        let bsd = b"<34>123: *Oct 11 2025 22:14:15.5 UTC: host su[1]: msg";
        let mut v = bsd.to_vec();
        let p = pos % v.len();
        v[p] = byte;
        v.truncate(cut);
        let _ = parse(&v, &opts());
    }

    #[test]
    fn rfc5424_round_trip(
        pri in 0u8..192,
        host in token(), app in token(), procid in token(), msgid in token(),
        params in prop::collection::vec(("[a-z]{1,8}", sd_value()), 0..4),
        msg in "[ -~]{0,40}",
        suffix in prop::sample::select(vec!["", "\n", "\r\n", "\0"]),
    ) {
        let mut sd = String::new();
        if params.is_empty() {
            sd.push('-');
        } else {
            sd.push_str("[id@1");
            for (k, v) in &params {
                sd.push_str(&format!(" {k}=\"{}\"", escape(v)));
            }
            sd.push(']');
        }
        let line = format!("<{pri}>1 2026-12-07T01:37:14.5Z {host} {app} {procid} {msgid} {sd} {msg}{suffix}");
        let m = parse(line.as_bytes(), &opts()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(m.format, Format::Rfc5424);
        prop_assert_eq!(m.priority.map(|p| p.value()), Some(pri));
        prop_assert_eq!(m.hostname, Some(host.as_bytes()));
        prop_assert_eq!(m.appname, Some(app.as_bytes()));
        prop_assert_eq!(m.procid, Some(procid.as_bytes()));
        prop_assert_eq!(m.msgid, Some(msgid.as_bytes()));
        // Only the terminators go: a message's own trailing spaces stay.
        prop_assert_eq!(m.msg, msg.as_bytes());
        let got: Vec<(Vec<u8>, Vec<u8>)> = m
            .structured_data
            .elements()
            .flat_map(|e| e.params())
            .map(|p| (p.name.to_vec(), p.value.unescaped().into_owned()))
            .collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = params
            .iter()
            .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn rfc3164_round_trip(
        pri in 0u8..192,
        day in 1u32..=28,
        host in "[a-z][a-z0-9.-]{0,15}",
        tag in "[a-zA-Z][a-zA-Z0-9_/.-]{0,15}",
        pid in prop::option::of(1u32..99999),
        msg in "[!-~][ -~]{0,40}",
        suffix in prop::sample::select(vec!["", "\n", "\r\n", "\0"]),
    ) {
        let pid_part = pid.map(|p| format!("[{p}]")).unwrap_or_default();
        let line = format!("<{pri}>Nov {day:>2} 10:11:12 {host} {tag}{pid_part}: {msg}{suffix}");
        let m = parse(line.as_bytes(), &opts()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(m.format, Format::Rfc3164);
        prop_assert_eq!(m.priority.map(|p| p.value()), Some(pri));
        prop_assert_eq!(m.hostname, Some(host.as_bytes()));
        prop_assert_eq!(m.appname, Some(tag.as_bytes()));
        let pid_s = pid.map(|p| p.to_string());
        prop_assert_eq!(m.procid, pid_s.as_deref().map(str::as_bytes));
        prop_assert_eq!(m.msg, msg.as_bytes());
        prop_assert!(m.timestamp.is_some());
    }

    #[test]
    fn framing_is_independent_of_read_sizes(
        data in prop::collection::vec(
            prop::sample::select(b"0123456789 <>\n\rab".to_vec()), 0..200),
        step in 1usize..17,
        max in 1usize..40,
        framing in prop::sample::select(vec![Framing::Auto, Framing::OctetCounting, Framing::Newline]),
    ) {
        let whole = run(framing, max, &data, data.len().max(1));
        let stepped = run(framing, max, &data, step);
        prop_assert_eq!(whole, stepped);
    }

    #[test]
    fn octet_counted_messages_round_trip(
        msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..60), 0..10),
        step in 1usize..64,
    ) {
        let mut data = Vec::new();
        for m in &msgs {
            data.extend_from_slice(format!("{} ", m.len()).as_bytes());
            data.extend_from_slice(m);
        }
        let (frames, err) = run(Framing::OctetCounting, 64, &data, step);
        prop_assert_eq!(err, None);
        let got: Vec<Vec<u8>> = frames.iter().map(|f| f.bytes.to_vec()).collect();
        prop_assert_eq!(got, msgs);
    }
}
