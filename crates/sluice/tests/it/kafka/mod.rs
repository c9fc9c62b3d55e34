//! Kafka sink against a real broker (Apache Kafka): delivery, templates, codecs,
//! outages, size policy, SCRAM, TLS and mutual TLS (the broker behind a rustls
//! terminator, `tls_proxy.rs`), and acknowledgements resolved from delivery
//! reports. Tests share one broker (unique topics per test) unless they stop,
//! freeze or reconfigure it, which run their own on free loopback ports; records are
//! read back by an independent client (Python confluent-kafka) and counted by
//! reading, never by watermarks.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::ack::{AckStatus, AckToken};
use sluice::buffer::{self, BufferSender, WhenFull};
use sluice::event::{Event, EventBatch, now_ns};
use sluice::metrics::Counters;
use sluice::topology::SinkContext;
use tokio_util::sync::CancellationToken;

use crate::common::{Daemon, make_certs};
use crate::kafka_support::{
    Broker, Kafka, Options, Rec, consume, consume_with, counter, counters, free_port, need_kafka,
    records_in, shared_broker, wait_for, write_lines,
};
use crate::tls_proxy::TlsProxy;

mod acks;
mod delivery;
mod outage;
mod security;

/// A line of `len` bytes or more, unique by (`src`, `i`), with bytes a text
/// pipeline might mangle: multi-byte UTF-8, invalid UTF-8, tabs, quotes.
fn line(src: &str, i: usize, len: usize) -> Vec<u8> {
    let mut l = format!("{src} {i:07} \t\"é✓\" ").into_bytes();
    l.extend_from_slice(&[0xff, 0xfe, b' ']);
    while l.len() < len {
        l.push(b'a' + (l.len() % 26) as u8);
    }
    l
}

fn by_topic(recs: &[Rec]) -> HashMap<&str, Vec<&Rec>> {
    let mut m: HashMap<&str, Vec<&Rec>> = HashMap::new();
    for r in recs {
        m.entry(r.topic.as_str()).or_default().push(r);
    }
    for v in m.values_mut() {
        v.sort_by_key(|r| (r.partition, r.offset));
    }
    m
}
