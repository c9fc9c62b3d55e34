//! `sluice archive restore URL --to-config FILE`: read an archive back and send
//! its records through the sinks of a config (for example into a Kafka topic).
//!
//! The archive is listed and read as `archive verify` reads it (every file,
//! decompressed by its magic bytes, each JSON line's `kafka.topic`,
//! `kafka.partition`, `kafka.offset`). Partitions are restored one after the
//! other, each in offset order: files sorted by their first offset, and an
//! offset already sent (an overlap left by an interrupted archiver) is skipped,
//! so every archived record is sent once. A line becomes an event again: `time`
//! → event time, `tag`, `message` (or `message_base64`) → body, `tenant`, and
//! every other key → a structured field (`kafka.key`, `kafka.partition`... and
//! the origin keys the archive's JSON holds), so a Kafka sink with `key =
//! "{field.kafka.key}"` and `partition = "{field.kafka.partition}"` reproduces
//! the original partitions. `--topic`, `--from` and `--to` (event time, `from`
//! inclusive, `to` exclusive) choose what is sent.
//!
//! Delivery is acknowledged end to end like `sluice buffer replay`: at most
//! [`WINDOW`] batches are in flight; the command succeeds only when every sink
//! delivered every batch. Files are read twice (listing, then sending), one at
//! a time: memory follows the largest file, not the archive.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc;

use bytes::Bytes;

use super::store::Store;
use super::verify::{FileRange, decode, read_archive};
use crate::ack::{AckStatus, AckToken};
use crate::config::{Config, SinkConfig};
use crate::event::{Event, EventBatch, Record, Value};
use crate::sinks::set::SinkSet;

/// Batches in flight to the sinks at most.
pub const WINDOW: usize = 64;
/// Events per batch.
const BATCH: usize = 1000;

/// What to restore.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this topic.
    pub topic: Option<String>,
    /// Event time at or after this (ns since the epoch).
    pub from_ns: Option<i64>,
    /// Event time before this.
    pub to_ns: Option<i64>,
}

/// What a restore has done so far.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Files of the chosen partitions.
    pub files: usize,
    /// Files read and sent.
    pub files_done: usize,
    /// Events every sink delivered.
    pub delivered: u64,
    /// Events a sink did not deliver.
    pub failed: u64,
    /// Records skipped: offsets already sent (overlaps).
    pub overlaps: u64,
    /// Records outside `--from`/`--to`.
    pub filtered: u64,
    /// Decompressed bytes read.
    pub bytes: u64,
}

/// What a restore tells its caller as it goes.
pub enum Report<'a> {
    /// About to send: partitions and files chosen, sinks built.
    Started {
        partitions: usize,
        files: usize,
        sinks: &'a [String],
    },
    /// A batch was settled.
    Progress(&'a Tally),
    /// Something went wrong; the restore goes on.
    Problem(String),
}

/// One archived line as an event, with its partition's offset.
pub fn event_of(line: &[u8], source: &Arc<str>) -> Result<(Event, i64), String> {
    let serde_json::Value::Object(map) =
        serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?
    else {
        return Err("not a JSON object".into());
    };
    let offset = map
        .get("kafka.offset")
        .and_then(serde_json::Value::as_i64)
        .ok_or("no kafka.offset")?;
    let time_ns = match map.get("time").and_then(serde_json::Value::as_str) {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .ok_or_else(|| format!("time `{t}` is not RFC 3339"))?,
        None => return Err("no time".into()),
    };
    let body = match (map.get("message"), map.get("message_base64")) {
        (Some(serde_json::Value::String(s)), _) => Bytes::from(s.clone().into_bytes()),
        (_, Some(serde_json::Value::String(b))) => {
            use base64::Engine;
            Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| format!("message_base64: {e}"))?,
            )
        }
        _ => return Err("no message".into()),
    };
    let tag: Arc<str> = map
        .get("tag")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
        .into();
    let mut e = Event::new(body, time_ns, tag, source.clone());
    e.tenant = map
        .get("tenant")
        .and_then(serde_json::Value::as_str)
        .map(Arc::from);
    let fields: Vec<(Value, Value)> = map
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "time" | "tag" | "message" | "message_base64" | "tenant"
            )
        })
        .map(|(k, v)| (Value::from(k), value_of(v)))
        .collect();
    if !fields.is_empty() {
        e.fields = Some(Record::Decoded(Arc::new(fields)));
    }
    Ok((e, offset))
}

/// JSON → msgpack model.
fn value_of(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            _ => Value::F64(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Value::from(s),
        serde_json::Value::Array(a) => Value::Array(a.into_iter().map(value_of).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.into_iter()
                .map(|(k, v)| (Value::from(k), value_of(v)))
                .collect(),
        ),
    }
}

/// Restore the archive in `store` into `sinks` (of `cfg`). Blocking: call it
/// outside the runtime `rt`, which runs the sinks and the store's I/O.
pub fn run(
    store: &Store,
    rt: &tokio::runtime::Runtime,
    cfg: Config,
    sinks: Vec<SinkConfig>,
    filter: &Filter,
    mut report: impl FnMut(Report<'_>),
) -> anyhow::Result<Tally> {
    let mut parts: BTreeMap<(String, i64), Vec<FileRange>> =
        read_archive(store).map_err(|e| anyhow::anyhow!(e))?;
    parts.retain(|(t, _), _| filter.topic.as_ref().is_none_or(|want| want == t));
    let mut tally = Tally {
        files: parts.values().map(Vec::len).sum(),
        ..Tally::default()
    };
    let set = rt.block_on(SinkSet::build(cfg, &sinks))?;
    report(Report::Started {
        partitions: parts.len(),
        files: tally.files,
        sinks: set.names(),
    });
    let source: Arc<str> = Arc::from("archive-restore");
    let (ack_tx, ack_rx) = mpsc::channel::<(usize, AckStatus)>();
    let mut inflight = 0usize;
    let settle = |inflight: &mut usize, tally: &mut Tally, report: &mut dyn FnMut(Report<'_>)| {
        if let Ok((n, status)) = ack_rx.recv() {
            *inflight -= 1;
            if status == AckStatus::Delivered {
                tally.delivered += n as u64;
            } else {
                tally.failed += n as u64;
            }
            report(Report::Progress(tally));
        }
    };
    for ((topic, partition), mut files) in parts {
        files.sort_by_key(|f| f.offsets.iter().min().copied().unwrap_or(i64::MAX));
        let mut next = i64::MIN;
        for f in files {
            let text = match store.read(&f.key).and_then(|raw| decode(&raw)) {
                Ok(t) => t,
                Err(e) => {
                    report(Report::Problem(format!("{}: {e}", f.key)));
                    tally.failed += f.offsets.len() as u64;
                    continue;
                }
            };
            tally.bytes += text.len() as u64;
            let mut lines: Vec<(Event, i64)> = Vec::new();
            for (n, line) in text.split(|b| *b == b'\n').enumerate() {
                if line.is_empty() {
                    continue;
                }
                match event_of(line, &source) {
                    Ok(e) => lines.push(e),
                    Err(e) => {
                        report(Report::Problem(format!("{} line {}: {e}", f.key, n + 1)));
                        tally.failed += 1;
                    }
                }
            }
            lines.sort_by_key(|(_, o)| *o);
            let mut batch = Vec::with_capacity(BATCH);
            for (e, offset) in lines {
                if offset < next {
                    tally.overlaps += 1;
                    continue;
                }
                next = offset + 1;
                let wanted = filter.from_ns.is_none_or(|f| e.time_ns >= f)
                    && filter.to_ns.is_none_or(|t| e.time_ns < t);
                if !wanted {
                    tally.filtered += 1;
                    continue;
                }
                batch.push(e);
                if batch.len() == BATCH {
                    while inflight >= WINDOW {
                        settle(&mut inflight, &mut tally, &mut report);
                    }
                    send(rt, &set, std::mem::take(&mut batch), &ack_tx);
                    inflight += 1;
                }
            }
            if !batch.is_empty() {
                while inflight >= WINDOW {
                    settle(&mut inflight, &mut tally, &mut report);
                }
                send(rt, &set, batch, &ack_tx);
                inflight += 1;
            }
            tally.files_done += 1;
        }
        let _ = (topic, partition);
    }
    while inflight > 0 {
        settle(&mut inflight, &mut tally, &mut report);
    }
    for p in rt.block_on(set.finish()) {
        report(Report::Problem(p));
    }
    Ok(tally)
}

fn send(
    rt: &tokio::runtime::Runtime,
    set: &SinkSet,
    events: Vec<Event>,
    acks: &mpsc::Sender<(usize, AckStatus)>,
) {
    let n = events.len();
    let tx = acks.clone();
    let token = AckToken::with_callback(move |st| {
        let _ = tx.send((n, st));
    });
    rt.block_on(set.send(EventBatch::new(events, token)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archived_line_becomes_the_event_it_was() {
        let line = br#"{"time":"2026-12-07T01:02:03.000000004Z","tag":"t","message":"hello","kafka.topic":"logs","kafka.partition":2,"kafka.offset":17,"kafka.key":"k1","kafka.headers":{"h":"v"}}"#;
        let src: Arc<str> = Arc::from("r");
        let (e, offset) = event_of(line, &src).unwrap();
        assert_eq!(offset, 17);
        assert_eq!(&e.body[..], b"hello");
        assert_eq!(&*e.tag, "t");
        assert_eq!(e.time_ns, 1_796_605_323_000_000_004);
        let Some(Record::Decoded(f)) = &e.fields else {
            panic!("fields")
        };
        let get = |k: &str| f.iter().find(|(n, _)| n.as_str() == Some(k)).map(|p| &p.1);
        assert_eq!(get("kafka.partition"), Some(&Value::from(2)));
        assert_eq!(get("kafka.key"), Some(&Value::from("k1")));
        assert!(get("message").is_none() && get("time").is_none());
    }

    #[test]
    fn binary_bodies_and_bad_lines() {
        let src: Arc<str> = Arc::from("r");
        let line = br#"{"time":"2026-12-07T00:00:00Z","tag":"t","message_base64":"/wA=","kafka.offset":1}"#;
        assert_eq!(&event_of(line, &src).unwrap().0.body[..], &[0xff, 0]);
        for bad in [
            &b"not json"[..],
            br#"[1]"#,
            br#"{"time":"2026-12-07T00:00:00Z","message":"x"}"#,
            br#"{"time":"yesterday","message":"x","kafka.offset":1}"#,
            br#"{"time":"2026-12-07T00:00:00Z","kafka.offset":1}"#,
        ] {
            assert!(
                event_of(bad, &src).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
