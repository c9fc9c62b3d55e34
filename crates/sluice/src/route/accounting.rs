//! Per-tenant accounting: for every tenant, events and bytes received, delivered
//! and dropped by reason, so "did you lose my logs?" has an answer.
//!
//! Where each event is counted (one book per topology, shared by its routes and
//! outputs; events without a tenant are not accounted):
//! - received: by the tenant route, for every event it reads — an event of an
//!   id that is not active is received and at once dropped (`inactive`);
//! - dropped by a route downstream (`rate_limit`; `discarded` for a level
//!   filter, a rules `drop` or a port nobody consumes): by that route, by the
//!   event's tenant;
//! - delivered or dropped at the sink: when the batch enters a sink's buffer
//!   its acknowledgement is wrapped; its outcome settles the batch's events per
//!   tenant: `Delivered` → delivered, `Dropped` → `when_full`, `Errored` →
//!   `failed` (the source's peer resends: a resent event is received again).
//!
//! So, once nothing is in flight, for every tenant: received = delivered +
//! dropped (all reasons). A batch fanned out to several sinks settles once per
//! sink: the equation then holds per sink.
//!
//! Kept across restarts (a *durable* book, owned by the disk buffer of the one
//! sink the tenant routes lead to, see [`keeping_sink`] and
//! `buffer/disk/accounts.rs`): routes do not count at once
//! but note their counts in the batch's [`Ledger`] (carried by its ack token);
//! the buffer's WAL thread counts them when it stores the batch, and settles
//! delivered and dropped records as the sink resolves them, journalling each
//! step beside the buffer before it takes effect there. Then, for every tenant:
//! received = delivered + dropped + in the buffer, across `kill -9`.
//! That buffer also counts, per tenant, events delivered again after a
//! restart that its sink had been handed before it (`resent`: possible
//! duplicates, outside the balance; see `buffer/disk/accounts.rs`).
//!
//! Cardinality: the first `max_tenant_series` ids seen get their own series;
//! later ones, and ids that are not valid tenant ids, are summed under `other`
//! (the folds are counted). Ids never leave the book, so a tenant's series never
//! goes back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::ack::{AckStatus, AckToken};
use crate::event::{Event, EventBatch};

mod ledger;

pub use ledger::{Ledger, Row, keeping_sink};

/// Why a tenant's events were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The id is not in the active list.
    Inactive = 0,
    /// Over a rate limit.
    RateLimit = 1,
    /// Removed on purpose by a route: a level filter, a rules `drop`, a port
    /// nobody consumes.
    Discarded = 2,
    /// A sink's buffer was full (`drop_newest`, `drop_oldest`, a fan-out's `block`).
    WhenFull = 3,
    /// The sink failed it (the source's peer resends).
    Failed = 4,
    /// A disk buffer's sink refused the record for a reason of its own (Kafka's
    /// invalid topic, too large...), or moved it to the dead-letter buffer.
    Refused = 5,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 6] = [
        Reason::Inactive,
        Reason::RateLimit,
        Reason::Discarded,
        Reason::WhenFull,
        Reason::Failed,
        Reason::Refused,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Inactive => "inactive",
            Reason::RateLimit => "rate_limit",
            Reason::Discarded => "discarded",
            Reason::WhenFull => "when_full",
            Reason::Failed => "failed",
            Reason::Refused => "refused",
        }
    }
}

/// One tenant's counters.
#[derive(Debug, Default)]
pub struct TenantCounters {
    /// Events received.
    pub received_events: AtomicU64,
    /// Body bytes received.
    pub received_bytes: AtomicU64,
    /// Events delivered.
    pub delivered_events: AtomicU64,
    /// Body bytes delivered.
    pub delivered_bytes: AtomicU64,
    /// Events dropped, by [`Reason`].
    pub dropped_events: [AtomicU64; Reason::ALL.len()],
    /// Events delivered again after a restart (see [`Row::resent_events`]).
    pub resent_events: AtomicU64,
}

impl TenantCounters {
    fn drop_n(&self, reason: Reason, n: u64) {
        self.dropped_events[reason as usize].fetch_add(n, Relaxed);
    }

    /// Add `row`'s counts.
    pub fn add(&self, row: &Row) {
        let add = |a: &AtomicU64, n: u64| {
            if n > 0 {
                a.fetch_add(n, Relaxed);
            }
        };
        add(&self.received_events, row.received_events);
        add(&self.received_bytes, row.received_bytes);
        add(&self.delivered_events, row.delivered_events);
        add(&self.delivered_bytes, row.delivered_bytes);
        for (a, n) in self.dropped_events.iter().zip(row.dropped) {
            add(a, n);
        }
        add(&self.resent_events, row.resent_events);
    }

    /// The counts now.
    pub fn row(&self) -> Row {
        Row {
            received_events: self.received_events.load(Relaxed),
            received_bytes: self.received_bytes.load(Relaxed),
            delivered_events: self.delivered_events.load(Relaxed),
            delivered_bytes: self.delivered_bytes.load(Relaxed),
            dropped: std::array::from_fn(|i| self.dropped_events[i].load(Relaxed)),
            resent_events: self.resent_events.load(Relaxed),
        }
    }

    /// Events received and neither delivered nor dropped: in flight, or (for a
    /// durable book, once nothing is in flight) in the disk buffer.
    pub fn pending(&self) -> u64 {
        self.row().pending()
    }
}

/// Maps on the per-batch path: foldhash, not SipHash (ids come from the active
/// list or are bounded by the cap; flooding one map costs only its own batch).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Label of the series that sums tenants beyond the cap.
pub const OTHER: &str = "other";

/// Every tenant's counters, bounded to `max_series` series plus `other`.
#[derive(Debug)]
pub struct TenantBook {
    max_series: usize,
    /// Kept beside a disk buffer: routes note into batches' ledgers, the
    /// buffer counts (see the module doc).
    durable: bool,
    other_name: Arc<str>,
    tenants: Mutex<Map<Arc<str>, Arc<TenantCounters>>>,
    other: Arc<TenantCounters>,
    /// Look-ups of an id summed under `other` (once per batch and id).
    folded: AtomicU64,
}

impl TenantBook {
    /// An empty book with at most `max_series` tenant series.
    pub fn new(max_series: usize) -> Self {
        TenantBook {
            max_series,
            durable: false,
            other_name: Arc::from(OTHER),
            tenants: Mutex::new(Map::default()),
            other: Arc::new(TenantCounters::default()),
            folded: AtomicU64::new(0),
        }
    }

    /// A book kept beside a disk buffer (see the module doc).
    pub fn durable(max_series: usize) -> Self {
        TenantBook {
            durable: true,
            ..Self::new(max_series)
        }
    }

    /// Whether this book is kept beside a disk buffer.
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// The series `id` is counted under: its own name, or `other`.
    pub fn series(&self, id: &str) -> Arc<str> {
        let mut all = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, _)) = all.get_key_value(id) {
            return k.clone();
        }
        if Arc::ptr_eq(&self.lookup(&mut all, id), &self.other) {
            return self.other_name.clone();
        }
        all.get_key_value(id)
            .map(|(k, _)| k.clone())
            .expect("inserted")
    }

    /// Add `row` to `id`'s series.
    pub fn apply(&self, id: &str, row: &Row) {
        self.tenant(id).add(row);
    }

    /// A tenant's counters (`other` beyond the cap or for an invalid id).
    pub fn tenant(&self, id: &str) -> Arc<TenantCounters> {
        let mut all = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        self.lookup(&mut all, id)
    }

    fn lookup(
        &self,
        all: &mut Map<Arc<str>, Arc<TenantCounters>>,
        id: &str,
    ) -> Arc<TenantCounters> {
        if let Some(c) = all.get(id) {
            return c.clone();
        }
        if all.len() >= self.max_series || !super::tenant::valid_id(id) || id == OTHER {
            self.folded.fetch_add(1, Relaxed);
            return self.other.clone();
        }
        let c = Arc::new(TenantCounters::default());
        all.insert(Arc::from(id), c.clone());
        c
    }

    /// Every tenant series, `other` last (for the exposition).
    pub fn snapshot(&self) -> Vec<(Arc<str>, Arc<TenantCounters>)> {
        let all = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = all.iter().map(|(k, c)| (k.clone(), c.clone())).collect();
        drop(all);
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.push((Arc::from(OTHER), self.other.clone()));
        v
    }

    /// Look-ups summed under `other` so far (once per batch and id).
    pub fn folded(&self) -> u64 {
        self.folded.load(Relaxed)
    }

    /// Count `events` received by a tenant route (after tenants were assigned)
    /// and `inactive` ids dropped there. A durable book notes them in `ack`'s
    /// ledger.
    pub fn received(&self, events: &[Event], inactive: &[(Vec<u8>, u64)], ack: &AckToken) {
        let groups = group(events);
        if self.durable {
            let named: Vec<_> = groups.iter().map(|g| (self.series(&g.tenant), g)).collect();
            let gone: Vec<_> = inactive
                .iter()
                .map(|(id, b)| (self.series(std::str::from_utf8(id).unwrap_or("")), *b))
                .collect();
            let noted = ack.note(|l| {
                for (name, g) in &named {
                    let r = l.row(name);
                    r.received_events += g.events;
                    r.received_bytes += g.bytes;
                }
                for (name, bytes) in &gone {
                    let r = l.row(name);
                    r.received_events += 1;
                    r.received_bytes += bytes;
                    r.dropped[Reason::Inactive as usize] += 1;
                }
            });
            if noted {
                return;
            }
        }
        let mut all = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        for g in &groups {
            let c = self.lookup(&mut all, &g.tenant);
            c.received_events.fetch_add(g.events, Relaxed);
            c.received_bytes.fetch_add(g.bytes, Relaxed);
        }
        for (id, bytes) in inactive {
            let c = self.lookup(&mut all, std::str::from_utf8(id).unwrap_or(""));
            c.received_events.fetch_add(1, Relaxed);
            c.received_bytes.fetch_add(*bytes, Relaxed);
            c.drop_n(Reason::Inactive, 1);
        }
    }

    /// Count events of `events` that a route drops for `reason` (a durable
    /// book: in `ack`'s ledger).
    pub fn dropped<'a>(
        &self,
        events: impl IntoIterator<Item = &'a Event>,
        reason: Reason,
        ack: &AckToken,
    ) {
        if self.durable {
            let mut named: Vec<(Arc<str>, u64)> = Vec::new();
            for e in events {
                let Some(t) = &e.tenant else { continue };
                match named.last_mut() {
                    Some((n, k)) if **n == **t => *k += 1,
                    _ => named.push((t.clone(), 1)),
                }
            }
            let named: Vec<_> = named
                .into_iter()
                .map(|(t, n)| (self.series(&t), n))
                .collect();
            let noted = ack.note(|l| {
                for (name, n) in &named {
                    l.row(name).dropped[reason as usize] += n;
                }
            });
            if noted || named.is_empty() {
                return;
            }
            for (name, n) in named {
                self.tenant(&name).drop_n(reason, n);
            }
            return;
        }
        let mut last: Option<(&Arc<str>, Arc<TenantCounters>)> = None;
        for e in events {
            let Some(t) = &e.tenant else { continue };
            match &last {
                Some((lt, c)) if Arc::ptr_eq(lt, t) => c.drop_n(reason, 1),
                _ => {
                    let c = self.tenant(t);
                    c.drop_n(reason, 1);
                    last = Some((t, c));
                }
            }
        }
    }

    /// Events per tenant in `events`, to compare after a route removed some
    /// (see [`dropped_since`](Self::dropped_since)).
    pub fn tally(&self, events: &[Event]) -> Vec<(Arc<str>, u64)> {
        group(events)
            .into_iter()
            .map(|g| (g.tenant, g.events))
            .collect()
    }

    /// Count as dropped for `reason` what `before` had and `after` lacks (a
    /// durable book: in `ack`'s ledger).
    pub fn dropped_since(
        &self,
        before: Vec<(Arc<str>, u64)>,
        after: &[Event],
        reason: Reason,
        ack: &AckToken,
    ) {
        let now = group(after);
        let mut gone = Vec::new();
        for (tenant, n) in before {
            let left = now
                .iter()
                .find(|g| Arc::ptr_eq(&g.tenant, &tenant))
                .map_or(0, |g| g.events);
            if n > left {
                gone.push((tenant, n - left));
            }
        }
        if self.durable && !gone.is_empty() {
            let named: Vec<_> = gone.iter().map(|(t, n)| (self.series(t), *n)).collect();
            if ack.note(|l| {
                for (name, n) in &named {
                    l.row(name).dropped[reason as usize] += n;
                }
            }) {
                return;
            }
        }
        for (tenant, n) in gone {
            self.tenant(&tenant).drop_n(reason, n);
        }
    }

    /// Wrap `batch`'s acknowledgement so that its outcome settles its tenants'
    /// events; batches without tenants pass untouched.
    pub fn settle_on_ack(&self, batch: EventBatch) -> EventBatch {
        let groups = group(&batch.events);
        if groups.is_empty() {
            return batch;
        }
        let settle: Vec<(Arc<TenantCounters>, u64, u64)> = {
            let mut all = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
            groups
                .iter()
                .map(|g| (self.lookup(&mut all, &g.tenant), g.events, g.bytes))
                .collect()
        };
        let EventBatch { events, ack } = batch;
        let ack = AckToken::with_callback(move |status| {
            for (c, n, bytes) in &settle {
                match status {
                    AckStatus::Delivered => {
                        c.delivered_events.fetch_add(*n, Relaxed);
                        c.delivered_bytes.fetch_add(*bytes, Relaxed);
                    }
                    AckStatus::Dropped => c.drop_n(Reason::WhenFull, *n),
                    AckStatus::Errored => c.drop_n(Reason::Failed, *n),
                }
            }
            ack.resolve(status);
        });
        EventBatch { events, ack }
    }
}

struct Group {
    tenant: Arc<str>,
    events: u64,
    bytes: u64,
}

/// Events per tenant. Events of one tenant share the active set's `Arc<str>`, and
/// a batch usually holds runs of one tenant: compare pointers, the last group first.
fn group(events: &[Event]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: Map<*const u8, usize> = Map::default();
    let mut last: Option<usize> = None;
    for e in events {
        let Some(t) = &e.tenant else { continue };
        let bytes = e.body.len() as u64;
        if let Some(i) = last
            && Arc::ptr_eq(&groups[i].tenant, t)
        {
            groups[i].events += 1;
            groups[i].bytes += bytes;
            continue;
        }
        let key = t.as_ptr();
        let i = *index.entry(key).or_insert_with(|| {
            groups.push(Group {
                tenant: t.clone(),
                events: 0,
                bytes: 0,
            });
            groups.len() - 1
        });
        groups[i].events += 1;
        groups[i].bytes += bytes;
        last = Some(i);
    }
    groups
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn ev(tenant: &Arc<str>, body: &'static str) -> Event {
        let mut e = Event::new(
            Bytes::from_static(body.as_bytes()),
            0,
            "t".into(),
            "s".into(),
        );
        e.tenant = Some(tenant.clone());
        e
    }

    fn load(a: &AtomicU64) -> u64 {
        a.load(Relaxed)
    }

    #[test]
    fn settles_each_tenant_by_the_batch_outcome() {
        let book = TenantBook::new(10);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let events = vec![ev(&a, "xx"), ev(&b, "y"), ev(&a, "zzz")];
        book.received(&events, &[(b"gone".to_vec(), 4)], &AckToken::none());
        let (token, _rx) = AckToken::channel();
        let batch = book.settle_on_ack(EventBatch::new(events.clone(), token));
        batch.ack.resolve(AckStatus::Delivered);
        let (token, _rx) = AckToken::channel();
        let batch = book.settle_on_ack(EventBatch::new(vec![ev(&b, "q")], token));
        drop(batch); // unresolved: errored
        let ca = book.tenant("a");
        assert_eq!(load(&ca.received_events), 2);
        assert_eq!(load(&ca.received_bytes), 5);
        assert_eq!(load(&ca.delivered_events), 2);
        assert_eq!(load(&ca.delivered_bytes), 5);
        let cb = book.tenant("b");
        assert_eq!(load(&cb.delivered_events), 1);
        assert_eq!(load(&cb.dropped_events[Reason::Failed as usize]), 1);
        let gone = book.tenant("gone");
        assert_eq!(load(&gone.received_events), 1);
        assert_eq!(load(&gone.dropped_events[Reason::Inactive as usize]), 1);
    }

    #[test]
    fn ids_beyond_the_cap_or_invalid_fold_into_other() {
        let book = TenantBook::new(2);
        for id in ["a", "b", "c", "bad id!", "other"] {
            book.tenant(id).received_events.fetch_add(1, Relaxed);
        }
        let snap = book.snapshot();
        let names: Vec<&str> = snap.iter().map(|(n, _)| &**n).collect();
        assert_eq!(names, ["a", "b", "other"]);
        assert_eq!(load(&snap[2].1.received_events), 3);
        assert_eq!(book.folded(), 3);
    }
}
