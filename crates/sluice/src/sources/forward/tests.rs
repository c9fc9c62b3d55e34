use std::sync::Arc;

use bytes::BytesMut;
use proto::forward::{Decoder, EventFrame, Limits, Request};

use super::conn::{METADATA_FIELD, to_events};
use crate::event::{Event, Origin, Value};

fn frame(bytes: &[u8]) -> EventFrame {
    let mut buf = BytesMut::from(bytes);
    match Decoder::new(Limits::default()).decode(&mut buf) {
        Ok(Some(Request::Events(f))) => f,
        other => panic!("not an event frame: {other:?}"),
    }
}

fn events(bytes: &[u8], message_key: &str) -> Vec<Event> {
    let origin = Arc::new(Origin {
        host: Some("10.0.0.1".into()),
        ..Origin::default()
    });
    to_events(
        &mut frame(bytes),
        message_key.as_bytes(),
        &Arc::from("fw"),
        &origin,
    )
}

fn testdata(name: &str) -> Vec<u8> {
    // Read at run time: a test binary reused from a target dir built in
    // another clone must find this clone's files.
    let p = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || env!("CARGO_MANIFEST_DIR").into(),
            std::path::PathBuf::from,
        )
        .join("../../testdata/forward")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn message_key_value_becomes_the_body_and_the_record_stays_whole() {
    let ev = events(&testdata("modes/forward.bin"), "message");
    assert_eq!(ev.len(), 3);
    assert_eq!(&ev[0].body[..], b"hello");
    assert_eq!(&*ev[0].tag, "test.forward");
    assert_eq!(ev[0].time_ns, 1_700_000_000_123_456_789);
    assert_eq!(
        ev[0].field("level").unwrap().to_value(),
        Value::from("info")
    );
    assert_eq!(
        ev[0].field("message").unwrap().as_bytes(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        ev[0].origin.as_ref().unwrap().host.as_deref(),
        Some("10.0.0.1")
    );
    assert_eq!(&ev[1].body[..], "héllo wörld".as_bytes());
    assert_eq!(ev[2].time_ns, 1_700_000_002_000_000_000);
}

#[test]
fn without_message_key_the_body_is_the_record_as_json() {
    let ev = events(&testdata("modes/forward.bin"), "");
    assert_eq!(
        &ev[0].body[..],
        br#"{"message":"hello","level":"info","n":1}"#
    );
    let second: serde_json::Value = serde_json::from_slice(&ev[1].body).unwrap();
    assert_eq!(second["nested"]["a"], serde_json::json!([1, 2, 3]));
    assert_eq!(second["bytes"], "AAH+/w==");
    let ev = events(&testdata("modes/forward.bin"), "absent");
    assert_eq!(
        &ev[0].body[..],
        br#"{"message":"hello","level":"info","n":1}"#
    );
}

#[test]
fn v15_metadata_lands_in_its_own_field_only_when_not_empty() {
    let ev = events(&testdata("modes/forward_fluentbit_metadata.bin"), "message");
    assert_eq!(ev.len(), 2);
    assert!(ev[0].field(METADATA_FIELD).is_none());
    let meta = ev[1].field(METADATA_FIELD).expect("metadata field");
    assert!(meta.to_string().contains("severity_number"), "{meta}");
}

#[test]
fn a_compressed_request_counts_its_inflated_payload_against_the_buffer() {
    use proto::forward::{Compression, EventTime, PackedForwardBuilder};
    // 1,000 records of ~1 KiB each inflate to ~1 MiB from a few KiB on the wire.
    let mut b = PackedForwardBuilder::new("app");
    let record = Value::Map(vec![("message".into(), "x".repeat(1000).into())]);
    for _ in 0..1000 {
        b.push(EventTime { secs: 1, nanos: 0 }, &record);
    }
    let wire = b.finish(None, Compression::Gzip);
    assert!(wire.len() < 64 << 10, "{}", wire.len());
    let mut f = frame(&wire);
    assert!(f.inflated_len >= 1_000_000, "{}", f.inflated_len);
    let pinned = f.pinned_bytes();
    let origin = Arc::new(Origin::default());
    let events = to_events(&mut f, b"message", &Arc::from("fw"), &origin);
    let batch = crate::event::EventBatch::new(events, crate::ack::AckToken::none());
    let footprint = batch.footprint();
    // The records span the inflated payload; the bodies are slices of them.
    let structs = 1000 * std::mem::size_of::<Event>();
    assert!(
        footprint >= pinned - wire.len() - 20_000,
        "{footprint} vs {pinned}"
    );
    assert!(footprint <= pinned + structs, "{footprint} vs {pinned}");
}

fn wants_journal(sinks: &str) -> bool {
    let text = format!(
        "[sources.fw]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sources.other]\ntype = \"stdin\"\n\
         [routes.r]\ntype = \"filter\"\ninputs = [\"fw\"]\nmin_level = \"info\"\n\
         [sinks.z]\ntype = \"null\"\ninputs = [\"other\"]\n{sinks}"
    );
    let config = crate::config::load_str(std::path::Path::new("t.toml"), &text)
        .unwrap_or_else(|e| panic!("{e:?}"));
    super::journal_wanted(&config, "fw")
}

#[test]
fn ids_are_journaled_only_behind_a_disk_buffer_whose_every_sink_acks_what_it_stored() {
    let disk = "buffer = { type = \"disk\" }";
    // Through a route, to a disk buffer.
    assert!(wants_journal(&format!(
        "[sinks.a]\ntype = \"null\"\ninputs = [\"r\"]\n{disk}\n"
    )));
    // Memory buffers only: ids in memory.
    assert!(!wants_journal(
        "[sinks.a]\ntype = \"null\"\ninputs = [\"r\"]\n"
    ));
    // A disk buffer fed by another source does not count.
    assert!(!wants_journal(&format!(
        "[sinks.a]\ntype = \"null\"\ninputs = [\"r\"]\n\
         [sinks.b]\ntype = \"null\"\ninputs = [\"other\"]\n{disk}\n"
    )));
    // A fan-out where one sink acks on receipt: a remembered id would not
    // mean its events survive a crash.
    assert!(!wants_journal(&format!(
        "[sinks.a]\ntype = \"null\"\ninputs = [\"fw\"]\n{disk}\n\
         [sinks.b]\ntype = \"null\"\ninputs = [\"r\"]\nacknowledgements = \"none\"\n"
    )));
}
