//! Per-component counters: plain atomics, cheap to bump on the hot path, read for the
//! shutdown report and, at scrape time, by the metrics endpoint ([`crate::api`]).
//! Queue depth is two counters (in, out), never a gauge on the hot path; buffer
//! levels are probed when scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

pub use crate::latency::{ACK_LATENCY_BUCKETS, HistogramSnapshot, LatencyHistogram};
use crate::route::accounting::TenantBook;

/// Counters of one component.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events received (sources: produced; sinks: taken from their buffer).
    pub events_in: AtomicU64,
    /// Body bytes received.
    pub bytes_in: AtomicU64,
    /// Events delivered (sinks) or emitted (sources).
    pub events_out: AtomicU64,
    /// Events dropped by policy (`when_full`, quota, oversize, unknown tenant).
    pub dropped: AtomicU64,
    /// Events whose delivery failed.
    pub errors: AtomicU64,
    /// Lines truncated to `max_line_bytes` (line sources).
    pub truncated: AtomicU64,
    /// Forward source: resent chunks acknowledged without being stored again.
    pub duplicates_suppressed: AtomicU64,
    /// Forward source: chunk ids remembered now (`dedupe_window`), a level
    /// updated per chunk, not per event.
    pub dedupe_chunks: AtomicU64,
    /// Sources: time from a batch entering the pipeline to its acknowledgement's
    /// outcome (batches whose source waits for one).
    pub ack_latency: Arc<LatencyHistogram>,
    /// Kafka clients: librdkafka's latest statistics (see [`KafkaStats`]).
    pub kafka: KafkaStats,
    /// Sources and routes: listeners of `sluice tap` (see [`crate::api::tap`]).
    pub tap: crate::api::tap::Tap,
}

impl Counters {
    /// Add to a counter.
    #[inline]
    pub fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Relaxed);
    }

    fn summary(&self) -> String {
        let mut s = String::new();
        let parts = [
            ("in", &self.events_in),
            ("out", &self.events_out),
            ("dropped", &self.dropped),
            ("errors", &self.errors),
            ("truncated", &self.truncated),
            ("duplicates_suppressed", &self.duplicates_suppressed),
        ];
        for (name, c) in parts {
            let v = c.load(Relaxed);
            if v > 0 || name == "in" || name == "out" {
                let _ = write!(s, "{name}={v} ");
            }
        }
        s.trim_end().to_owned()
    }
}

/// What librdkafka's statistics callback (`statistics.interval.ms`) last said of
/// a component's Kafka clients (a sink may have several producers), kept for
/// the metrics endpoint. Written once per interval by each client's polling
/// thread, read at scrape time: a mutex is cheap here.
#[derive(Debug, Default)]
pub struct KafkaStats(Mutex<BTreeMap<String, KafkaSnapshot>>);

/// One statistics report, reduced to what is exported. Label values are
/// bounded: brokers of the cluster, partitions of the subscribed topics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KafkaSnapshot {
    /// Messages in the producer's queues, waiting or in flight (`msg_cnt`).
    pub queue_messages: u64,
    /// Their bytes (`msg_size`).
    pub queue_bytes: u64,
    /// Per broker (`host:port/id`): round-trip time average and p99, in
    /// microseconds, over the last interval (brokers with no request in it absent).
    pub brokers: Vec<(String, i64, i64)>,
    /// Consumers: per (topic, partition), messages between the high watermark and
    /// the committed offset (partitions assigned to this consumer, lag known).
    pub consumer_lag: Vec<(String, i32, i64)>,
}

impl KafkaStats {
    /// Replace client `client`'s snapshot with a new report.
    pub fn set(&self, client: &str, snapshot: KafkaSnapshot) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(client.to_owned(), snapshot);
    }

    /// Client `client`'s last report.
    pub fn client(&self, client: &str) -> Option<KafkaSnapshot> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.get(client).cloned()
    }

    /// The component's clients together, if any reported: queues summed, per
    /// broker the slowest client's figures, every partition's lag.
    pub fn get(&self) -> Option<KafkaSnapshot> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut it = all.values();
        let mut sum = it.next()?.clone();
        for s in it {
            sum.queue_messages += s.queue_messages;
            sum.queue_bytes += s.queue_bytes;
            for b in &s.brokers {
                match sum.brokers.iter_mut().find(|x| x.0 == b.0) {
                    Some(x) => {
                        x.1 = x.1.max(b.1);
                        x.2 = x.2.max(b.2);
                    }
                    None => sum.brokers.push(b.clone()),
                }
            }
            sum.consumer_lag.extend(s.consumer_lag.iter().cloned());
        }
        sum.brokers.sort();
        sum.consumer_lag.sort();
        Some(sum)
    }
}

/// One component's counters with what the metrics endpoint labels them by.
#[derive(Debug, Clone)]
pub struct Component {
    /// `sources.NAME`, `routes.NAME` or `sinks.NAME`.
    pub id: String,
    /// The kind's `type` (`pipe`, `file`, `tenant`...), once described.
    pub type_name: &'static str,
    /// Its counters.
    pub counters: Arc<Counters>,
}

impl Component {
    /// `source`, `route` or `sink`, from the id's family.
    pub fn kind(&self) -> &'static str {
        match self.id.split_once('.').map(|(f, _)| f) {
            Some("sources") => "source",
            Some("routes") => "route",
            Some("sinks") => "sink",
            _ => "other",
        }
    }

    /// The user's name for it (the id without its family).
    pub fn name(&self) -> &str {
        self.id.split_once('.').map_or(&self.id, |(_, n)| n)
    }
}

/// What a sink's buffer holds now, read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferLevel {
    /// Events queued in memory (a disk buffer: read ahead).
    pub events: u64,
    /// Bytes held (a disk buffer: its segment files).
    pub bytes: u64,
}

/// A sink buffer's gauges: a probe read at scrape time and its limits.
pub struct BufferGauge {
    /// `sinks.NAME`.
    pub id: String,
    /// `memory` or `disk`.
    pub buffer_type: &'static str,
    /// Reads the level now.
    pub probe: Box<dyn Fn() -> BufferLevel + Send + Sync>,
    /// Capacity in events (memory buffers).
    pub max_events: Option<u64>,
    /// Capacity in bytes (disk buffers).
    pub max_bytes: Option<u64>,
}

impl std::fmt::Debug for BufferGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferGauge").field("id", &self.id).finish()
    }
}

/// All components' counters, by kind and name, and the sinks' buffer gauges.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    inner: Arc<Mutex<Vec<Component>>>,
    buffers: Arc<Mutex<Vec<Arc<BufferGauge>>>>,
    tenants: Arc<Mutex<Option<Arc<TenantBook>>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Component>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counters for a component (`"sink.out"`), created on first use.
    pub fn component(&self, id: &str) -> Arc<Counters> {
        let mut all = self.lock();
        if let Some(c) = all.iter().find(|c| c.id == id) {
            return c.counters.clone();
        }
        let counters = Arc::new(Counters::default());
        all.push(Component {
            id: id.to_owned(),
            type_name: "",
            counters: counters.clone(),
        });
        counters
    }

    /// Record a component's `type` (for the metrics' `component_type` label).
    pub fn describe(&self, id: &str, type_name: &'static str) {
        self.component(id);
        if let Some(c) = self.lock().iter_mut().find(|c| c.id == id) {
            c.type_name = type_name;
        }
    }

    /// Every component, in creation order (cheap: the counters are shared).
    pub fn components(&self) -> Vec<Component> {
        self.lock().clone()
    }

    /// Forget the components for which `keep` (given the id) is false, and their
    /// buffers: a reload removed them, and their series leave the exposition
    /// (a removed sink still draining counts on, unexported).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|c| keep(&c.id));
        self.buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|g| keep(&g.id));
    }

    /// Register a sink buffer's gauges, replacing those of a sink of the same id
    /// (a sink replaced by a reload).
    pub fn add_buffer(&self, gauge: BufferGauge) {
        let mut all = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|g| g.id != gauge.id);
        all.push(Arc::new(gauge));
    }

    /// Every registered buffer gauge.
    pub fn buffers(&self) -> Vec<Arc<BufferGauge>> {
        self.buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Set the topology's per-tenant accounting.
    pub fn set_tenants(&self, book: Arc<TenantBook>) {
        *self.tenants.lock().unwrap_or_else(|e| e.into_inner()) = Some(book);
    }

    /// The per-tenant accounting, when a tenant route exists.
    pub fn tenants(&self) -> Option<Arc<TenantBook>> {
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One line per component, for the shutdown report.
    pub fn report(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|c| format!("{}: {}", c.id, c.counters.summary()))
            .collect()
    }

    /// Total of one counter over all components whose id starts with `prefix`.
    pub fn total(&self, prefix: &str, pick: fn(&Counters) -> &AtomicU64) -> u64 {
        self.lock()
            .iter()
            .filter(|c| c.id.starts_with(prefix))
            .map(|c| pick(&c.counters).load(Relaxed))
            .sum()
    }
}
