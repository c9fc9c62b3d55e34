//! `/metrics`: the components' counters in the OpenMetrics text format, through
//! `prometheus-client`, read at scrape time.
//!
//! Nothing here runs on the data path: components bump the plain atomics of
//! [`Counters`]; a scrape takes the registry's lock once, loads every atomic and
//! writes each metric family once, all its series together (a family split over
//! the output is invalid exposition and Prometheus' parser rejects it).
//!
//! Names follow Vector's (`component_received_events_total`...) with the
//! `sluice_` prefix, and the labels `component_id` (the user's name),
//! `component_kind` (`source`, `route`, `sink`) and `component_type` (`pipe`,
//! `file`...). Label values come from the config only; the one exception, the
//! `tenant` label, is bounded (see [`crate::route::accounting`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::metrics::{BufferGauge, BufferLevel, Component, Counters, KafkaSnapshot, Registry};
use crate::route::accounting::{Reason, Row, TenantBook};

/// Renders the registry; cheap to keep, the work happens per scrape.
#[derive(Debug)]
pub struct Exposition {
    registry: prometheus_client::registry::Registry,
}

impl Exposition {
    /// An exposition of `registry`'s components and buffers.
    pub fn new(registry: Registry) -> Self {
        let mut r = prometheus_client::registry::Registry::default();
        r.register_collector(Box::new(SluiceCollector {
            registry,
            started: Instant::now(),
        }));
        Exposition { registry: r }
    }

    /// The text a scrape gets.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[derive(Debug)]
struct SluiceCollector {
    registry: Registry,
    started: Instant,
}

type Labels<'a> = [(&'static str, &'a str); 3];

fn labels(c: &Component) -> Labels<'_> {
    [
        ("component_id", c.name()),
        ("component_kind", c.kind()),
        ("component_type", c.type_name),
    ]
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}

/// Events a component took in. Line sources count only what they emit (one
/// event per line read), so a source's received events are the larger of both.
fn received(c: &Component) -> u64 {
    let k = &c.counters;
    match c.kind() {
        "source" => load(&k.events_in).max(load(&k.events_out)),
        _ => load(&k.events_in),
    }
}

/// Why a component's `dropped` events were dropped, by kind.
fn discard_reason(c: &Component) -> &'static str {
    match c.kind() {
        "sink" => "buffer_full",
        "route" => "route_policy",
        _ => "source_policy",
    }
}

/// A label added to a family: its key and how a component's value is found.
type ExtraLabel = (&'static str, fn(&Component) -> &'static str);

/// Which counter of a tenant a family reads.
type TenantPick = fn(&Row) -> u64;

/// Write one counter family: one descriptor, then each series.
fn counters<'c>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (&'c Component, u64)>,
    extra: Option<ExtraLabel>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (c, v) in series {
        match extra {
            None => m
                .encode_family(&labels(c))?
                .encode_counter::<NoLabelSet, _, u64>(&v, None)?,
            Some((key, value)) => {
                let set = (labels(c), [(key, value(c))]);
                m.encode_family(&set)?
                    .encode_counter::<NoLabelSet, _, u64>(&v, None)?
            }
        }
    }
    Ok(())
}

impl Collector for SluiceCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let all = self.registry.components();
        let pick =
            |f: fn(&Counters) -> &AtomicU64| all.iter().map(move |c| (c, load(f(&c.counters))));
        counters(
            &mut enc,
            "sluice_component_received_events",
            "Events a component took in (sources: made from their input).",
            all.iter().map(|c| (c, received(c))),
            None,
        )?;
        counters(
            &mut enc,
            "sluice_component_received_bytes",
            "Bytes a source read from its input.",
            all.iter()
                .filter(|c| c.kind() == "source")
                .map(|c| (c, load(&c.counters.bytes_in))),
            None,
        )?;
        counters(
            &mut enc,
            "sluice_component_sent_events",
            "Events a component passed on (sinks: delivered).",
            pick(|k| &k.events_out),
            None,
        )?;
        counters(
            &mut enc,
            "sluice_component_discarded_events",
            "Events dropped by policy: a full buffer, a route's rule, a source's quota.",
            pick(|k| &k.dropped),
            Some(("reason", discard_reason)),
        )?;
        counters(
            &mut enc,
            "sluice_component_errors",
            "Events whose delivery failed.",
            pick(|k| &k.errors),
            Some(("error_type", |_| "delivery_failed")),
        )?;
        counters(
            &mut enc,
            "sluice_component_truncated_events",
            "Events cut to the size limit (line sources) or refused as too large (Kafka sink).",
            pick(|k| &k.truncated),
            None,
        )?;
        let forward = || {
            all.iter()
                .filter(|c| c.kind() == "source" && c.type_name == "forward")
        };
        counters(
            &mut enc,
            "sluice_component_duplicates_suppressed",
            "Resent chunks a forward source acknowledged without storing them again.",
            forward().map(|c| (c, load(&c.counters.duplicates_suppressed))),
            None,
        )?;
        let mut m = enc.encode_descriptor(
            "sluice_component_dedupe_window_chunks",
            "Chunk ids a forward source remembers now (bounded by dedupe_window.max_chunks).",
            None,
            MetricType::Gauge,
        )?;
        for c in forward() {
            m.encode_family(&labels(c))?
                .encode_gauge(&load(&c.counters.dedupe_chunks))?;
        }
        let mut m = enc.encode_descriptor(
            "sluice_source_ack_latency_seconds",
            "Time from a batch entering the pipeline to its acknowledgement's outcome (sources that wait for one).",
            None,
            MetricType::Histogram,
        )?;
        for c in all.iter().filter(|c| c.kind() == "source") {
            let h = c.counters.ack_latency.snapshot();
            m.encode_family(&labels(c))?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        }
        encode_kafka(&mut enc, &all)?;
        self.encode_buffers(&mut enc, &all)?;
        if let Some(book) = self.registry.tenants() {
            encode_tenants(&mut enc, &book)?;
        }

        enc.encode_descriptor(
            "sluice_tap_dropped_events",
            "Events `sluice tap` listeners missed: their queue was full.",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&load(&crate::api::tap::TAP_DROPPED), None)?;
        let uptime = self.started.elapsed().as_secs_f64();
        enc.encode_descriptor(
            "sluice_uptime_seconds",
            "Seconds since the pipeline was built.",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&uptime)?;
        enc.encode_descriptor("sluice_build", "The running build.", None, MetricType::Info)?
            .encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        Ok(())
    }
}

/// librdkafka's statistics of the Kafka sinks and sources that reported some.
fn encode_kafka(enc: &mut DescriptorEncoder<'_>, all: &[Component]) -> fmt::Result {
    let stats: Vec<_> = all
        .iter()
        .filter_map(|c| Some((c, c.counters.kafka.get()?)))
        .collect();
    type Pick = fn(&KafkaSnapshot) -> u64;
    let queue: [(&str, &str, Pick); 2] = [
        (
            "sluice_kafka_producer_queue_messages",
            "Messages in a Kafka producer's queues, waiting or in flight (librdkafka msg_cnt).",
            |s| s.queue_messages,
        ),
        (
            "sluice_kafka_producer_queue_bytes",
            "Bytes of the messages in a Kafka producer's queues (librdkafka msg_size).",
            |s| s.queue_bytes,
        ),
    ];
    for (name, help, pick) in queue {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (c, s) in stats.iter().filter(|(c, _)| c.kind() == "sink") {
            m.encode_family(&labels(c))?.encode_gauge(&pick(s))?;
        }
    }
    type Rtt = fn(&(String, i64, i64)) -> i64;
    let rtt: [(&str, &str, Rtt); 2] = [
        (
            "sluice_kafka_broker_rtt_avg_seconds",
            "Average round-trip time of requests to a broker over the last statistics interval.",
            |b| b.1,
        ),
        (
            "sluice_kafka_broker_rtt_p99_seconds",
            "99th percentile round-trip time of requests to a broker over the last statistics interval.",
            |b| b.2,
        ),
    ];
    for (name, help, pick) in rtt {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (c, s) in &stats {
            for b in &s.brokers {
                let set = (labels(c), [("broker", b.0.as_str())]);
                m.encode_family(&set)?
                    .encode_gauge(&(pick(b) as f64 / 1e6))?;
            }
        }
    }
    let mut m = enc.encode_descriptor(
        "sluice_kafka_consumer_lag_messages",
        "Messages between a partition's high watermark and the offset committed (Kafka sources).",
        None,
        MetricType::Gauge,
    )?;
    for (c, s) in &stats {
        for (topic, partition, lag) in &s.consumer_lag {
            let p = partition.to_string();
            let set = (labels(c), [("topic", topic.as_str()), ("partition", &*p)]);
            m.encode_family(&set)?.encode_gauge(lag)?;
        }
    }
    Ok(())
}

/// The per-tenant families: one series per tenant (bounded, `other` last).
fn encode_tenants(enc: &mut DescriptorEncoder<'_>, book: &TenantBook) -> fmt::Result {
    // Each tenant's counters read once: the families below agree with each
    // other (received = delivered + dropped + buffered holds in every scrape,
    // even while events are being delivered).
    let all: Vec<_> = book
        .snapshot()
        .into_iter()
        .map(|(tenant, c)| (tenant, c.row()))
        .collect();
    let families: [(&str, &str, TenantPick); 4] = [
        (
            "sluice_tenant_received_events",
            "Events a tenant route read, by tenant (inactive ids included).",
            |t| t.received_events,
        ),
        (
            "sluice_tenant_received_bytes",
            "Body bytes a tenant route read, by tenant.",
            |t| t.received_bytes,
        ),
        (
            "sluice_tenant_delivered_events",
            "A tenant's events the sinks delivered (per sink with a fan-out).",
            |t| t.delivered_events,
        ),
        (
            "sluice_tenant_delivered_bytes",
            "A tenant's body bytes the sinks delivered.",
            |t| t.delivered_bytes,
        ),
    ];
    for (name, help, pick) in families {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (tenant, c) in &all {
            m.encode_family(&[("tenant", &**tenant)])?
                .encode_counter::<NoLabelSet, _, u64>(&pick(c), None)?;
        }
    }
    let mut m = enc.encode_descriptor(
        "sluice_tenant_dropped_events",
        "A tenant's events dropped, by reason.",
        None,
        MetricType::Counter,
    )?;
    for (tenant, c) in &all {
        for r in Reason::ALL {
            m.encode_family(&[("tenant", &**tenant), ("reason", r.label())])?
                .encode_counter::<NoLabelSet, _, u64>(&c.dropped[r as usize], None)?;
        }
    }
    if book.is_durable() {
        let mut m = enc.encode_descriptor(
            "sluice_tenant_buffered_events",
            "A tenant's events received and neither delivered nor dropped: in the disk buffer keeping the accounts, or on their way to it.",
            None,
            MetricType::Gauge,
        )?;
        for (tenant, c) in &all {
            m.encode_family(&[("tenant", &**tenant)])?
                .encode_gauge(&(c.pending() as i64))?;
        }
        let mut m = enc.encode_descriptor(
            "sluice_tenant_resent_events",
            "A tenant's events delivered again after a restart that the sink had been handed before it without an acknowledgement (possible duplicates; also counted delivered, once).",
            None,
            MetricType::Counter,
        )?;
        for (tenant, c) in &all {
            m.encode_family(&[("tenant", &**tenant)])?
                .encode_counter::<NoLabelSet, _, u64>(&c.resent_events, None)?;
        }
    }
    enc.encode_descriptor(
        "sluice_tenant_other_lookups",
        "Look-ups of a tenant id summed under tenant=\"other\" (beyond max_tenant_series, or invalid).",
        None,
        MetricType::Counter,
    )?
    .encode_counter::<NoLabelSet, _, u64>(&book.folded(), None)?;
    Ok(())
}

impl SluiceCollector {
    fn encode_buffers(&self, enc: &mut DescriptorEncoder<'_>, all: &[Component]) -> fmt::Result {
        let buffers = self.registry.buffers();
        // One probe per buffer per scrape, then one family at a time.
        let rows: Vec<_> = buffers
            .iter()
            .map(|b| {
                let ty = all
                    .iter()
                    .find(|c| c.id == b.id)
                    .map_or("", |c| c.type_name);
                let name = b.id.split_once('.').map_or(b.id.as_str(), |(_, n)| n);
                (b, name, ty, (b.probe)())
            })
            .collect();
        type Pick = fn(&BufferGauge, BufferLevel) -> Option<u64>;
        let families: [(&str, &str, Pick); 4] = [
            (
                "sluice_buffer_events",
                "Events queued in a sink's memory buffer.",
                |b, l| b.max_events.map(|_| l.events),
            ),
            (
                "sluice_buffer_bytes",
                "Bytes a sink's buffer holds: a memory buffer's queued events, a disk buffer's files.",
                |b, l| b.max_bytes.map(|_| l.bytes),
            ),
            (
                "sluice_buffer_max_events",
                "Capacity of a memory buffer, in events.",
                |b, _| b.max_events,
            ),
            (
                "sluice_buffer_max_bytes",
                "Capacity of a sink's buffer, in bytes.",
                |b, _| b.max_bytes,
            ),
        ];
        for (family, help, pick) in families {
            let mut m = enc.encode_descriptor(family, help, None, MetricType::Gauge)?;
            for (b, name, ty, level) in &rows {
                let Some(v) = pick(b, *level) else { continue };
                let set = [
                    ("component_id", *name),
                    ("component_kind", "sink"),
                    ("component_type", *ty),
                    ("buffer_type", b.buffer_type),
                ];
                m.encode_family(&set)?.encode_gauge(&v)?;
            }
        }
        Ok(())
    }
}
