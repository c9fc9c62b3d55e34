use std::sync::Arc;

use bytes::Bytes;

use super::message::Mapper;
use super::*;
use crate::event::{Event, Origin};
use crate::route::filter::{FilterRouteConfig, Missing};

fn load(body: &str) -> Result<crate::config::Config, String> {
    let text = format!("{body}\n[sinks.out]\ntype = \"null\"\ninputs = [\"sys\"]\n");
    crate::config::load_str(std::path::Path::new("t.toml"), &text).map_err(|e| e.to_string())
}

fn events(tag: Option<&str>, lines: &[&[u8]]) -> Vec<Event> {
    let m = Mapper::new(Arc::from("sys"), tag.map(Arc::from), Zone::Fixed(0));
    let mut batch = m.batch(lines.len());
    let origin = Arc::new(Origin {
        host: Some("10.0.0.9".into()),
        ..Origin::default()
    });
    for l in lines {
        m.push(&mut batch, Bytes::copy_from_slice(l), Some(&origin));
    }
    batch.take()
}

fn text(e: &Event, name: &str) -> Option<String> {
    e.field(name)
        .and_then(|v| v.as_bytes())
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

#[test]
fn config_modes_and_their_keys() {
    let ok = load("[sources.sys]\ntype = \"syslog\"\nmode = \"udp\"\naddress = \"127.0.0.1:5514\"")
        .expect("valid");
    let crate::config::SourceKind::Syslog(c) = &ok.sources[0].kind else {
        panic!("kind")
    };
    assert_eq!((c.max_message_bytes, c.max_connections), (65536, 10_000));
    assert_eq!(c.framing, SyslogFraming::Auto);
    assert_eq!(c.timezone, "local");
    load("[sources.sys]\ntype = \"syslog\"\nmode = \"unix_dgram\"\npath = \"/tmp/x.sock\"")
        .expect("unix");
    for (bad, key) in [
        ("mode = \"tcp\"", "address"),
        ("mode = \"unix_stream\"\naddress = \"127.0.0.1:1\"", "path"),
        ("mode = \"udp\"\naddress = \"nope\"", "address"),
        (
            "mode = \"udp\"\naddress = \"127.0.0.1:1\"\nframing = \"newline\"",
            "framing",
        ),
        (
            "mode = \"tcp\"\naddress = \"127.0.0.1:1\"\ntimezone = \"Mars/Base\"",
            "timezone",
        ),
        (
            "mode = \"tcp\"\naddress = \"127.0.0.1:1\"\nmax_message_bytes = 1",
            "max_message_bytes",
        ),
        (
            "mode = \"udp\"\naddress = \"127.0.0.1:1\"\ntls = { cert_file = \"c\", key_file = \"k\" }",
            "tls",
        ),
        (
            "mode = \"carrier_pigeon\"\naddress = \"127.0.0.1:1\"",
            "mode",
        ),
        (
            "mode = \"tcp\"\naddress = \"127.0.0.1:1\"\nbogus = 1",
            "bogus",
        ),
    ] {
        let e = load(&format!("[sources.sys]\ntype = \"syslog\"\n{bad}")).expect_err(bad);
        assert!(e.contains(key), "{bad}: {e}");
    }
}

#[test]
fn udp_and_tcp_may_share_a_port_but_not_a_protocol() {
    let both = "[sources.sys]\ntype = \"syslog\"\nmode = \"udp\"\naddress = \"127.0.0.1:5514\"\n\
        [sources.sys2]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:5514\"\n\
        [sinks.n]\ntype = \"null\"\ninputs = [\"sys\", \"sys2\"]";
    load(both).expect("udp and tcp on one port");
    let twice = "[sources.sys]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:5514\"\n\
        [sources.sys2]\ntype = \"forward\"\naddress = \"127.0.0.1:5514\"";
    let e = load(twice).expect_err("tcp port used twice");
    assert!(e.contains("already"), "{e}");
}

#[test]
fn zones() {
    assert_eq!(Zone::parse("UTC"), Some(Zone::Fixed(0)));
    assert_eq!(Zone::parse("+01:30"), Some(Zone::Fixed(5400)));
    assert_eq!(Zone::parse("-05:00"), Some(Zone::Fixed(-18000)));
    assert_eq!(Zone::parse("local"), Some(Zone::Local));
    assert_eq!(Zone::parse("+25:00"), None);
    let paris = Zone::parse("Europe/Paris").expect("a tz database name");
    // 2024-01-15 and 2024-07-15, 12:00 UTC: winter and summer time.
    assert_eq!(paris.offset_at(1_705_320_000), 3600);
    assert_eq!(paris.offset_at(1_721_044_800), 7200);
    assert_eq!(Zone::parse("Mars/Olympus_Mons"), None);
}

#[test]
fn rfc5424_message_maps_to_body_fields_level_tag_and_time() {
    let ev = events(
        None,
        &[b"<165>1 2003-10-11T22:14:15.003Z host app 42 ID47 [ex@1 a=\"x\\]y\"] hello\n"],
    );
    let e = &ev[0];
    assert_eq!(&e.body[..], b"hello");
    assert_eq!(&*e.tag, "syslog.local4.notice");
    assert_eq!(e.time_ns, 1_065_910_455_003_000_000);
    assert_eq!(
        e.field("syslog.facility").and_then(|v| v.as_u64()),
        Some(20)
    );
    assert_eq!(e.field("syslog.severity").and_then(|v| v.as_u64()), Some(5));
    assert_eq!(text(e, "level").as_deref(), Some("notice"));
    assert_eq!(text(e, "syslog.hostname").as_deref(), Some("host"));
    assert_eq!(text(e, "syslog.appname").as_deref(), Some("app"));
    assert_eq!(text(e, "syslog.procid").as_deref(), Some("42"));
    assert_eq!(text(e, "syslog.msgid").as_deref(), Some("ID47"));
    assert_eq!(text(e, "syslog.sd.ex@1.a").as_deref(), Some("x]y"));
    assert_eq!(
        e.origin.as_ref().and_then(|o| o.host.as_deref()),
        Some("10.0.0.9")
    );
}

#[test]
fn unparseable_line_keeps_raw_bytes_and_says_why() {
    let before = crate::event::now_ns();
    let ev = events(None, &[b"not syslog at all\r\n"]);
    let e = &ev[0];
    assert_eq!(&e.body[..], b"not syslog at all");
    assert!(text(e, "syslog.parse_error").is_some_and(|r| r.contains("no PRI")));
    assert_eq!(&*e.tag, "syslog.user.notice");
    assert!(e.time_ns >= before, "receive time");
}

#[test]
fn configured_tag_wins() {
    let ev = events(Some("mytag"), &[b"<11>Dec  7 01:37:14 h a: x"]);
    assert_eq!(&*ev[0].tag, "mytag");
    assert_eq!(text(&ev[0], "level").as_deref(), Some("error"));
}

#[test]
fn filter_min_level_reads_the_severity_level() {
    let f = FilterRouteConfig {
        min_level: crate::route::filter::Level::Warn,
        field: "level".into(),
        parse_body: false,
        missing: Missing::Drop,
    };
    let lines: Vec<Vec<u8>> = (0..8)
        .map(|s| format!("<{}>1 - h a - - - m", 8 + s).into_bytes())
        .collect();
    let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    let kept: Vec<u64> = events(None, &refs)
        .iter()
        .filter(|e| f.keep(e))
        .filter_map(|e| e.field("syslog.severity").and_then(|v| v.as_u64()))
        .collect();
    assert_eq!(kept, vec![0, 1, 2, 3, 4]);
}
