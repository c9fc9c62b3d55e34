//! The Kafka source's loop: one thread polls the consumer, sends a batch per
//! partition per round, commits what acknowledgements allow, serves rebalances
//! and logs the lag. See the module doc of [`super`] for the rules.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::KafkaSourceConfig;
use super::tracker::Tracker;
use crate::ack::AckToken;
use crate::event::{Event, EventBatch, RawMap, now_ns};
use crate::kafka::ClientEvents;
use crate::kafka::consumer::{Consumer, Message, Partition, Rebalance, Round};
pub use crate::kafka::consumer::{
    FIELD_HEADERS, FIELD_KEY, FIELD_OFFSET, FIELD_PARTITION, FIELD_TIMESTAMP, FIELD_TOPIC,
};
use crate::logging::RateLimit;
use crate::metrics::Counters;
use crate::topology::{ComponentError, Output, SourceContext};

/// Most records in one poll round.
pub const MAX_ROUND_RECORDS: usize = 4096;
/// Most bytes (values and their fields) in one poll round.
pub const MAX_ROUND_BYTES: usize = 4 << 20;
/// The arena a round starts with (grows when the round needs more).
const ROUND_ARENA_BYTES: usize = 256 << 10;
/// How often resolved offsets are committed.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(200);
/// How long a revoke (or the stop) waits for the revoked partitions' batches.
pub const REVOKE_WAIT: Duration = Duration::from_secs(10);
/// How often the consumer lag is logged.
pub const LAG_INTERVAL: Duration = Duration::from_secs(30);

/// Partition trackers shared by the polling thread, the rebalance callbacks and
/// the acknowledgement callbacks.
struct Shared {
    parts: Mutex<HashMap<Partition, Tracker>>,
    /// Signalled whenever a batch resolves.
    resolved: Condvar,
    component: Arc<str>,
    rereads: AtomicU64,
    /// Kafka → Kafka exactly once: offsets are committed by this sink's
    /// transactions, never by the source.
    offsets_by: Option<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<Partition, Tracker>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Rebalance for Shared {
    fn assigned(&self, partitions: &[Partition]) {
        let mut parts = self.lock();
        for p in partitions {
            parts.entry(p.clone()).or_default();
        }
        tracing::info!(
            component_id = &*self.component,
            partitions = %names(partitions),
            "Kafka partitions assigned."
        );
    }

    fn revoked(&self, partitions: &[Partition]) -> Vec<(Partition, i64)> {
        let deadline = Instant::now() + REVOKE_WAIT;
        let mut parts = self.lock();
        loop {
            let waiting: usize = partitions
                .iter()
                .filter_map(|p| parts.get(p))
                .map(Tracker::in_flight)
                .sum();
            let now = Instant::now();
            if waiting == 0 || now >= deadline {
                if waiting > 0 {
                    self.rereads.fetch_add(waiting as u64, Relaxed);
                    tracing::warn!(
                        component_id = &*self.component,
                        batches = waiting,
                        "Revoked Kafka partitions still had batches unacknowledged; their new owner reads them again."
                    );
                }
                break;
            }
            parts = self
                .resolved
                .wait_timeout(parts, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let offsets = partitions
            .iter()
            .filter_map(|p| {
                let t = parts.remove(p)?;
                Some((p.clone(), t.commit_point()?))
            })
            .filter(|_| self.offsets_by.is_none())
            .collect();
        tracing::info!(
            component_id = &*self.component,
            partitions = %names(partitions),
            "Kafka partitions revoked."
        );
        offsets
    }
}

fn names(partitions: &[Partition]) -> String {
    let v: Vec<String> = partitions.iter().map(|(t, p)| format!("{t}/{p}")).collect();
    v.join(" ")
}

/// The built source.
pub struct KafkaSource {
    consumer: Consumer,
    shared: Arc<Shared>,
}

impl KafkaSource {
    /// Create the consumer and subscribe.
    pub fn new(config: &KafkaSourceConfig, cx: &SourceContext) -> Result<Self, String> {
        let shared = Arc::new(Shared {
            parts: Mutex::default(),
            resolved: Condvar::new(),
            component: cx.name.clone(),
            rereads: AtomicU64::new(0),
            offsets_by: crate::sources::offsets_in_transaction(&cx.reload.borrow(), &cx.name),
        });
        if let Some(sink) = &shared.offsets_by {
            tracing::info!(
                component_id = &*cx.name,
                sink = %sink,
                "Kafka → Kafka exactly once: offsets are committed inside the sink's transactions, not by the source."
            );
        }
        // librdkafka's statistics (consumer lag, round-trip times) when the API
        // exports them.
        let api = cx.reload.borrow().global.api.address.is_some();
        let events = ClientEvents::with_stats(cx.name.clone(), api.then(|| cx.counters.clone()));
        let mut props = config.properties(&cx.name);
        if api {
            props.ask_statistics();
        }
        let consumer = Consumer::create(&props, events, shared.clone(), &config.topics)?;
        Ok(KafkaSource { consumer, shared })
    }

    /// Run until shutdown: the loop runs on a blocking thread.
    pub async fn run(self, cx: SourceContext) -> Result<(), ComponentError> {
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || self.poll_loop(cx, handle))
            .await
            .map_err(|e| ComponentError::Other(format!("kafka consumer thread failed: {e}")))
    }

    fn poll_loop(self, cx: SourceContext, rt: tokio::runtime::Handle) {
        let SourceContext {
            name,
            tag,
            out,
            shutdown,
            counters,
            ..
        } = cx;
        let errors = RateLimit::new(crate::kafka::LOG_INTERVAL);
        let mut committed: HashMap<Partition, i64> = HashMap::new();
        let mut last_commit = Instant::now();
        let mut last_lag = Instant::now();
        while !shutdown.is_cancelled() {
            let round = self.poll_round(&errors, &counters);
            if !round.records.is_empty() {
                self.send_round(round, &rt, &out, &shutdown, &tag, &name, &counters);
            }
            if last_commit.elapsed() >= COMMIT_INTERVAL {
                last_commit = Instant::now();
                self.commit(&mut committed, false);
                self.rewind_failed();
            }
            if last_lag.elapsed() >= LAG_INTERVAL {
                last_lag = Instant::now();
                self.log_lag();
            }
        }
        // Close our outputs first, so sinks flush what they hold and resolve it.
        drop(out);
        self.commit(&mut committed, true);
        // Leaving the group revokes every partition: the hook waits for what is
        // in flight and commits it.
        self.consumer.close_blocking();
        let rereads = self.shared.rereads.load(Relaxed);
        tracing::debug!(component_id = &*name, rereads, "Kafka consumer closed.");
    }

    fn poll_round(&self, errors: &RateLimit, counters: &Counters) -> Round {
        let mut round = Round {
            arena: bytes::BytesMut::with_capacity(ROUND_ARENA_BYTES),
            records: Vec::new(),
        };
        let mut timeout = Duration::from_millis(100);
        while round.records.len() < MAX_ROUND_RECORDS && round.arena.len() < MAX_ROUND_BYTES {
            match self.consumer.poll_into(timeout, &mut round) {
                None => break,
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    Counters::add(&counters.errors, 1);
                    if let Some(suppressed) = errors.allow() {
                        tracing::warn!(
                            component_id = &*self.shared.component,
                            error = %e,
                            suppressed,
                            "Kafka consumer error."
                        );
                    }
                }
            }
            timeout = Duration::ZERO;
        }
        round
    }

    #[allow(clippy::too_many_arguments)]
    fn send_round(
        &self,
        round: Round,
        rt: &tokio::runtime::Handle,
        out: &Output,
        shutdown: &CancellationToken,
        tag: &Arc<str>,
        name: &Arc<str>,
        counters: &Counters,
    ) {
        // One batch per partition, records in offset order (as fetched). Every
        // event's value and fields are slices of the round's one arena.
        // Events pin the whole arena until the last of them is delivered: a
        // small round (a quiet topic) is copied out of its mostly empty arena,
        // so it pins what it holds, not ROUND_ARENA_BYTES.
        let arena = if round.arena.capacity() > 2 * round.arena.len() {
            Bytes::copy_from_slice(&round.arena)
        } else {
            round.arena.freeze()
        };
        let mut groups: Vec<(Partition, Vec<Message>)> = Vec::new();
        for m in round.records {
            match groups
                .iter_mut()
                .find(|((t, p), _)| *p == m.partition && *t == m.topic)
            {
                Some((_, v)) => v.push(m),
                None => groups.push(((m.topic.clone(), m.partition), vec![m])),
            }
        }
        let poll_ns = now_ns();
        for (part, msgs) in groups {
            let (first, last) = (msgs[0].offset, msgs[msgs.len() - 1].offset);
            let generation = {
                let mut parts = self.shared.lock();
                // Not ours any more (revoked during the round): not sent.
                let Some(t) = parts.get_mut(&part) else {
                    continue;
                };
                t.register(first, last);
                t.generation()
            };
            let shared = self.shared.clone();
            let p = part.clone();
            let token = AckToken::with_callback(move |status| {
                if let Some(t) = shared.lock().get_mut(&p) {
                    t.resolve(generation, first, status);
                }
                shared.resolved.notify_all();
            });
            let bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();
            let events: Vec<Event> = msgs
                .into_iter()
                .map(|m| to_event(&m, &arena, poll_ns, tag, name))
                .collect();
            Counters::add(&counters.bytes_in, bytes);
            Counters::add(&counters.events_out, events.len());
            let batch = EventBatch::new(events, token);
            rt.block_on(async {
                tokio::select! {
                    _ = out.send(batch) => {}
                    // The batch is dropped unresolved (errored): not committed.
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    }

    fn commit(&self, committed: &mut HashMap<Partition, i64>, sync: bool) {
        if self.shared.offsets_by.is_some() {
            return;
        }
        let due: Vec<(Partition, i64)> = {
            let parts = self.shared.lock();
            parts
                .iter()
                .filter_map(|(p, t)| {
                    let c = t.commit_point()?;
                    (committed.get(p) != Some(&c)).then(|| (p.clone(), c))
                })
                .collect()
        };
        if due.is_empty() {
            return;
        }
        match self.consumer.commit(&due, sync) {
            Ok(()) => committed.extend(due),
            Err(e) => tracing::warn!(
                component_id = &*self.shared.component,
                error = %e,
                "Committing Kafka offsets failed; retrying."
            ),
        }
    }

    /// Seek partitions whose oldest unresolved batch failed back to it.
    fn rewind_failed(&self) {
        let failed: Vec<(Partition, i64)> = {
            let parts = self.shared.lock();
            parts
                .iter()
                .filter_map(|(p, t)| Some((p.clone(), t.failed()?)))
                .collect()
        };
        for (p, offset) in failed {
            match self.consumer.seek(&p, offset) {
                Ok(()) => {
                    if let Some(t) = self.shared.lock().get_mut(&p) {
                        t.rewind(offset);
                    }
                    tracing::warn!(
                        component_id = &*self.shared.component,
                        partition = %names(std::slice::from_ref(&p)),
                        offset,
                        "A batch failed downstream; reading the partition again from it."
                    );
                }
                Err(e) => tracing::warn!(
                    component_id = &*self.shared.component,
                    error = %e,
                    "Seeking back to a failed batch failed; retrying."
                ),
            }
        }
    }

    fn log_lag(&self) {
        let lag = self.consumer.lag_blocking(Duration::from_secs(1));
        if lag.is_empty() {
            return;
        }
        let total: i64 = lag.iter().map(|(_, pos, high)| (high - pos).max(0)).sum();
        let detail: Vec<String> = lag
            .iter()
            .map(|((t, p), pos, high)| format!("{t}/{p}={}", (high - pos).max(0)))
            .collect();
        tracing::info!(
            component_id = &*self.shared.component,
            lag = total,
            partitions = %detail.join(" "),
            "Kafka consumer lag."
        );
    }
}

fn to_event(m: &Message, arena: &Bytes, poll_ns: i64, tag: &Arc<str>, name: &Arc<str>) -> Event {
    let time_ns = m
        .timestamp_ms
        .and_then(|ms| ms.checked_mul(1_000_000))
        .unwrap_or(poll_ns);
    let (pairs, count) = &m.fields;
    let body = arena.slice(m.payload.clone());
    let mut ev = Event::new(body, time_ns, tag.clone(), name.clone());
    ev.fields = Some(RawMap::from_written(arena.slice(pairs.clone()), *count).into());
    ev
}
