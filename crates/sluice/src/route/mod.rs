//! Routes: the router between sources and sinks (`[routes.NAME]`).
//!
//! A route is a node of the graph that sinks and other routes name in `inputs`,
//! either as a whole (`by_tenant`) or by output port (`by_category.apps`,
//! `bucketed.3`). Kinds: `tenant` (client-id split, live active list), `rules`
//! (tag globs → ports), `bucket` (hash → ports), `rate_limit` (token buckets per
//! key), `filter` (minimum level).
//!
//! Routes run inline, in the task of whoever sends to them: a route is an edge of
//! an [`Output`] and `Output::send` calls [`RouteNode::send`], which edits the
//! batch and sends the result on through its own outputs. No channel hop, no task.
//!
//! Acknowledgements: a batch passed on whole keeps its token. A batch split over
//! several ports gives each part a clone of the token and resolves the original
//! `Delivered` once the parts are handed on. Events dropped by policy (unknown
//! tenant, over the rate limit) are counted in the route's `dropped` counter and
//! mark the batch `Dropped`; events discarded on purpose (a `drop` rule, a level
//! filter, a port nobody consumes) are counted too but resolve `Delivered`.
//!
//! Blocking: a route's port is not a fan-out — each event goes to one place — so a
//! full `block` sink behind a port slows the sender (backpressure), unless the
//! sender's own output is a fan-out (`may_block = false`), which then holds for
//! everything downstream of the route too.

pub mod accounting;
pub mod bucket;
pub mod filter;
pub mod graph;
pub mod rate_limit;
pub mod rules;
pub mod tenant;
pub mod tenant_admin;
mod wiring;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_util::sync::DropGuard;
use toml_edit::{Item, Table};

pub use wiring::Wiring;

use crate::ack::{AckStatus, AckToken};
use crate::config::load::{Diagnostics, deserialize, struct_fields};
use crate::config::{Check, Validate};
use crate::event::{Event, EventBatch};
use crate::metrics::Counters;
use crate::topology::Output;

/// `type` values of routes.
pub const ROUTE_TYPES: &[&str] = &["tenant", "rules", "bucket", "rate_limit", "filter"];

/// One route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// The user's name for it.
    pub name: String,
    /// Components feeding it (sources, routes, route ports).
    pub inputs: Vec<String>,
    /// Kind-specific settings.
    pub kind: RouteKind,
}

/// Route kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteKind {
    /// Client-id split with a live active list.
    Tenant(tenant::TenantRouteConfig),
    /// Tag globs to ports.
    Rules(rules::RulesRouteConfig),
    /// Key hash to ports.
    Bucket(bucket::BucketRouteConfig),
    /// Token buckets per key.
    RateLimit(rate_limit::RateLimitRouteConfig),
    /// Minimum level.
    Filter(filter::FilterRouteConfig),
}

impl RouteKind {
    /// Keys of a kind, besides `type` and `inputs`.
    pub fn fields(ty: &str) -> &'static [&'static str] {
        match ty {
            "tenant" => struct_fields::<tenant::TenantRouteConfig>(),
            "rules" => struct_fields::<rules::RulesRouteConfig>(),
            "bucket" => struct_fields::<bucket::BucketRouteConfig>(),
            "rate_limit" => struct_fields::<rate_limit::RateLimitRouteConfig>(),
            "filter" => struct_fields::<filter::FilterRouteConfig>(),
            _ => &[],
        }
    }

    /// Deserialize the kind's settings; errors go to `d`.
    pub fn parse(
        ty: &str,
        item: &Item,
        path: &str,
        t: &Table,
        d: &mut Diagnostics<'_>,
    ) -> Option<Self> {
        if ty == "tenant"
            && let Some(Item::Table(admin)) = t.get("admin")
        {
            let known = struct_fields::<tenant_admin::TenantAdminConfig>();
            crate::config::load::check_keys(admin, known, &format!("{path}.admin"), d);
        }
        Some(match ty {
            "tenant" => RouteKind::Tenant(deserialize(item, path, Some(t), d)?),
            "rules" => RouteKind::Rules(deserialize(item, path, Some(t), d)?),
            "bucket" => RouteKind::Bucket(deserialize(item, path, Some(t), d)?),
            "rate_limit" => RouteKind::RateLimit(deserialize(item, path, Some(t), d)?),
            "filter" => RouteKind::Filter(deserialize(item, path, Some(t), d)?),
            _ => return None,
        })
    }

    /// Pure validation.
    pub fn validate(&self, v: &mut Check<'_, '_>) {
        match self {
            RouteKind::Tenant(c) => c.validate(v),
            RouteKind::Rules(c) => c.validate(v),
            RouteKind::Bucket(c) => c.validate(v),
            RouteKind::RateLimit(c) => c.validate(v),
            RouteKind::Filter(c) => c.validate(v),
        }
    }

    /// The kind's `type` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            RouteKind::Tenant(_) => "tenant",
            RouteKind::Rules(_) => "rules",
            RouteKind::Bucket(_) => "bucket",
            RouteKind::RateLimit(_) => "rate_limit",
            RouteKind::Filter(_) => "filter",
        }
    }
}

/// A built route, shared by every output that sends to it.
pub struct RouteNode {
    name: Arc<str>,
    counters: Arc<Counters>,
    /// Per-tenant accounting, when the topology has a tenant route.
    book: Option<Arc<accounting::TenantBook>>,
    imp: Imp,
    /// Stops the route's helper task (list watcher) when the last sender is gone.
    _stop: Option<DropGuard>,
}

enum Imp {
    Tenant {
        split: tenant::TenantSplit,
        active: Arc<ArcSwap<tenant::ActiveSet>>,
        out: Output,
    },
    Rules {
        rules: rules::Rules,
        ports: Vec<Output>,
    },
    Bucket {
        bucketer: bucket::Bucketer,
        all: Output,
        ports: Vec<Output>,
    },
    RateLimit {
        limiter: std::sync::Mutex<rate_limit::Limiter>,
        last_report: AtomicU64,
        out: Output,
    },
    Filter {
        filter: filter::FilterRouteConfig,
        out: Output,
    },
}

/// Boxed because routes send to outputs that may hold routes.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

/// How often per-key rate limit drops are logged at most.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

impl RouteNode {
    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Route a batch and send the result on. Returns whether every part that was
    /// passed on got queued (policy drops do not count as failures).
    pub fn send(&self, batch: EventBatch, may_block: bool) -> SendFuture<'_> {
        Box::pin(async move {
            let n = batch.len();
            Counters::add(&self.counters.events_in, n);
            match &self.imp {
                Imp::Tenant { split, active, out } => {
                    let mut batch = batch;
                    if self.book.as_ref().is_some_and(|b| b.is_durable()) && !batch.ack.is_tracked()
                    {
                        // The batch's counts travel with its token to the buffer.
                        batch.ack = AckToken::with_callback(|_| {});
                    }
                    let mut removed = Vec::new();
                    let dropped = {
                        let set = active.load();
                        let noting = self.book.as_ref().map(|_| &mut removed);
                        split.apply_noting(Arc::make_mut(&mut batch.events), &set, noting)
                    };
                    if let Some(book) = &self.book {
                        book.received(&batch.events, &removed, &batch.ack);
                    }
                    self.forward(batch, dropped, AckStatus::Dropped, out, may_block)
                        .await
                }
                Imp::Filter { filter, out } => {
                    let mut batch = batch;
                    let dropped = if batch.events.iter().all(|e| filter.keep(e)) {
                        0
                    } else {
                        let tally = self.book.as_ref().map(|b| b.tally(&batch.events));
                        let events = Arc::make_mut(&mut batch.events);
                        let before = events.len();
                        events.retain(|e| filter.keep(e));
                        if let (Some(book), Some(t)) = (&self.book, tally) {
                            book.dropped_since(
                                t,
                                events,
                                accounting::Reason::Discarded,
                                &batch.ack,
                            );
                        }
                        before - events.len()
                    };
                    self.forward(batch, dropped, AckStatus::Delivered, out, may_block)
                        .await
                }
                Imp::RateLimit {
                    limiter,
                    last_report,
                    out,
                } => {
                    let mut batch = batch;
                    // Decide under the lock, wait and send without it.
                    let (dropped, wait) = {
                        let mut l = limiter.lock().unwrap_or_else(|e| e.into_inner());
                        let now = Instant::now();
                        // Reached through a fan-out, `block` must not stall the
                        // siblings: it drops instead (counted), like a full sink.
                        match (l.mode(), may_block) {
                            (rate_limit::WhenOver::Block, true) => {
                                (0, l.charge(&batch.events, now))
                            }
                            _ => {
                                let tally = self.book.as_ref().map(|b| b.tally(&batch.events));
                                let dropped = l.admit(Arc::make_mut(&mut batch.events), now);
                                if let (Some(book), Some(t)) = (&self.book, tally) {
                                    book.dropped_since(
                                        t,
                                        &batch.events,
                                        accounting::Reason::RateLimit,
                                        &batch.ack,
                                    );
                                }
                                if dropped > 0 {
                                    self.report_drops(&mut l, last_report);
                                }
                                (dropped, Duration::ZERO)
                            }
                        }
                    };
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    self.forward(batch, dropped, AckStatus::Dropped, out, may_block)
                        .await
                }
                Imp::Rules { rules, ports } => {
                    let targets = rules
                        .targets(&batch.events)
                        .map(|t| match t {
                            rules::Target::Port(i) => Some(i),
                            rules::Target::Drop => None,
                        })
                        .collect();
                    self.split(batch, targets, ports, may_block, true).await
                }
                Imp::Bucket {
                    bucketer,
                    all,
                    ports,
                } => {
                    let mut batch = batch;
                    let mut scratch = String::new();
                    for e in Arc::make_mut(&mut batch.events).iter_mut() {
                        e.bucket = Some(bucketer.bucket_of(e, &mut scratch));
                    }
                    let any_port = ports.iter().any(Output::is_connected);
                    if !all.is_connected() || !any_port {
                        if all.is_connected() {
                            return self
                                .forward(batch, 0, AckStatus::Delivered, all, may_block)
                                .await;
                        }
                        let targets = batch
                            .events
                            .iter()
                            .map(|e| e.bucket.map(|b| b as usize))
                            .collect();
                        return self.split(batch, targets, ports, may_block, true).await;
                    }
                    // The whole route and its ports are both consumed: a fan-out.
                    Counters::add(&self.counters.events_out, n);
                    let ok = all.send_with(batch.share(), false).await;
                    let targets = batch
                        .events
                        .iter()
                        .map(|e| e.bucket.map(|b| b as usize))
                        .collect();
                    ok & self.split(batch, targets, ports, false, false).await
                }
            }
        })
    }

    /// Pass a batch on whole after `dropped` of its events were removed.
    async fn forward(
        &self,
        batch: EventBatch,
        dropped: usize,
        status: AckStatus,
        out: &Output,
        may_block: bool,
    ) -> bool {
        Counters::add(&self.counters.dropped, dropped);
        // A durable book's counts of an emptied batch still go to the buffer.
        let carry = batch.is_empty() && self.carries(&batch) && out.is_connected();
        if batch.is_empty() && !carry {
            let status = if dropped > 0 {
                status
            } else {
                AckStatus::Delivered
            };
            self.strand(&batch);
            batch.ack.resolve(status);
            return true;
        }
        if dropped > 0 && status != AckStatus::Delivered {
            batch.ack.clone().resolve(status);
        }
        if !out.is_connected() {
            Counters::add(&self.counters.dropped, batch.len());
            if let Some(book) = &self.book {
                book.dropped(
                    batch.events.iter(),
                    accounting::Reason::Discarded,
                    &batch.ack,
                );
            }
            self.strand(&batch);
            batch.ack.resolve(AckStatus::Delivered);
            return true;
        }
        Counters::add(&self.counters.events_out, batch.len());
        out.send_with(batch, may_block).await
    }

    /// Send each event to its port (`None` = discard on purpose). `count` is false
    /// when the events were already counted out by a fan-out sibling.
    async fn split(
        &self,
        batch: EventBatch,
        targets: Vec<Option<usize>>,
        ports: &[Output],
        may_block: bool,
        count: bool,
    ) -> bool {
        let usable = |t: &Option<usize>| {
            t.and_then(|i| ports.get(i).filter(|o| o.is_connected()).map(|_| i))
        };
        let first = targets.first().map(usable).unwrap_or(None);
        // Fast path: the whole batch goes to one port (one tag per batch is usual).
        if targets.iter().all(|t| usable(t) == first) {
            return match first {
                Some(i) => {
                    if count {
                        Counters::add(&self.counters.events_out, batch.len());
                    }
                    ports[i].send_with(batch, may_block).await
                }
                None => {
                    if count {
                        Counters::add(&self.counters.dropped, batch.len());
                        if let Some(book) = &self.book {
                            book.dropped(
                                batch.events.iter(),
                                accounting::Reason::Discarded,
                                &batch.ack,
                            );
                        }
                    }
                    if self.carries(&batch)
                        && let Some(port) = ports.iter().find(|o| o.is_connected())
                    {
                        // The counts go on to the buffer in an empty batch.
                        let empty = EventBatch::new(Vec::new(), batch.ack.clone());
                        batch.ack.resolve(AckStatus::Delivered);
                        return port.send_with(empty, may_block).await;
                    }
                    self.strand(&batch);
                    batch.ack.resolve(AckStatus::Delivered);
                    true
                }
            };
        }
        let mut parts: Vec<Vec<Event>> = vec![Vec::new(); ports.len()];
        let mut discarded = 0;
        for (e, t) in batch.events.iter().zip(&targets) {
            match usable(t) {
                Some(i) => parts[i].push(e.clone()),
                None => {
                    discarded += 1;
                    if count && let Some(book) = &self.book {
                        book.dropped([e], accounting::Reason::Discarded, &batch.ack);
                    }
                }
            }
        }
        if count {
            Counters::add(&self.counters.dropped, discarded);
            Counters::add(&self.counters.events_out, batch.len() - discarded);
        }
        let mut ok = true;
        for (i, events) in parts.into_iter().enumerate() {
            if !events.is_empty() {
                ok &= ports[i]
                    .send_with(EventBatch::new(events, batch.ack.clone()), may_block)
                    .await;
            }
        }
        batch.ack.resolve(AckStatus::Delivered);
        ok
    }

    /// Whether the batch carries counts for a durable book.
    fn carries(&self, batch: &EventBatch) -> bool {
        self.book.as_ref().is_some_and(|b| b.is_durable()) && batch.ack.has_ledger()
    }

    /// Counts of a batch that reaches no buffer: counted at once, not kept
    /// across a restart (a route port nobody consumes).
    fn strand(&self, batch: &EventBatch) {
        if let Some(book) = &self.book
            && book.is_durable()
            && let Some(l) = batch.ack.take_ledger()
        {
            l.apply(book);
        }
    }

    fn report_drops(&self, l: &mut rate_limit::Limiter, last_report: &AtomicU64) {
        let now = crate::event::now_ns() as u64;
        let last = last_report.load(Relaxed);
        if now.saturating_sub(last) < DROP_REPORT_EVERY.as_nanos() as u64
            || last_report
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        log_drops(&self.name, l.take_dropped());
    }
}

fn log_drops(route: &str, drops: Vec<(String, u64)>) {
    if drops.is_empty() {
        return;
    }
    let keys = drops.len();
    let top: Vec<String> = drops
        .iter()
        .take(10)
        .map(|(k, n)| format!("{k:?}={n}"))
        .collect();
    tracing::warn!(
        component_id = %format!("routes.{route}"),
        keys,
        dropped = %top.join(" "),
        "Rate limit exceeded; events dropped."
    );
}

impl Drop for RouteNode {
    fn drop(&mut self) {
        if let Imp::RateLimit { limiter, .. } = &self.imp {
            let mut l = limiter.lock().unwrap_or_else(|e| e.into_inner());
            log_drops(&self.name, l.take_dropped());
        }
    }
}

#[cfg(test)]
mod tests;
