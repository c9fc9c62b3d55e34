//! A source's (or route's) output: the fan-out to every buffer or route that
//! consumes it.
//!
//! One edge: the batch moves. Several edges: each gets an O(1) copy sharing the
//! events and a clone of the ack token. A fan-out never waits on one full sink
//! (see [`crate::buffer`]): only a single-consumer output applies `block`.
//!
//! Re-pointing (a reload): every clone of an output shares one switch, and
//! [`Output::repoint`] swaps the edges under all of them at once. A send takes
//! the edges once, at its start, and holds them to its end, so each batch goes to
//! exactly one generation of consumers — the old ones or the new ones, never both,
//! never neither. A replaced sink's buffer closes when the last send that still
//! holds it ends, and the sink then drains what it holds.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::ack::AckStatus;
use crate::buffer::{BufferSender, SendOutcome};
use crate::event::EventBatch;
use crate::metrics::{Counters, LatencyHistogram};
use crate::route::RouteNode;
use crate::route::accounting::TenantBook;

/// One consumer of an output: a sink's buffer, or a route run inline.
#[derive(Clone)]
pub enum Edge {
    /// A sink's buffer.
    Buffer(BufferSender),
    /// A route; it edits the batch and sends it on through its own outputs.
    Route(Arc<RouteNode>),
}

impl Edge {
    async fn send(&self, batch: EventBatch, may_block: bool, book: Option<&TenantBook>) -> bool {
        match self {
            Edge::Buffer(tx) => {
                // A durable book is settled by the disk buffer that keeps it.
                let batch = match book {
                    Some(book) if !book.is_durable() => book.settle_on_ack(batch),
                    _ => batch,
                };
                tx.send(batch, may_block).await == SendOutcome::Queued
            }
            Edge::Route(route) => route.send(batch, may_block).await,
        }
    }
}

/// Where a component's batches go.
#[derive(Clone)]
pub struct Output {
    current: Arc<ArcSwap<Edges>>,
}

/// One generation of an output's consumers.
struct Edges {
    edges: Box<[Edge]>,
    may_block: bool,
    /// Per-tenant accounting of what enters the sinks' buffers (route outputs of
    /// a topology with a tenant route).
    book: Option<Arc<TenantBook>>,
    /// A source's output: where the time to each batch's outcome is counted.
    latency: Option<Arc<LatencyHistogram>>,
    /// The producing component's counters, whose tap sees every batch sent.
    tap: Option<Arc<Counters>>,
}

impl Output {
    /// An output feeding `edges`.
    pub fn new(edges: Vec<BufferSender>) -> Self {
        Self::from_edges(edges.into_iter().map(Edge::Buffer).collect())
    }

    /// An output feeding buffers and routes.
    pub fn from_edges(edges: Vec<Edge>) -> Self {
        let may_block = edges.len() <= 1;
        Self::of(Edges {
            edges: edges.into(),
            may_block,
            book: None,
            latency: None,
            tap: None,
        })
    }

    fn of(edges: Edges) -> Self {
        Output {
            current: Arc::new(ArcSwap::from_pointee(edges)),
        }
    }

    /// This output, settling tenants' events at the buffers it feeds.
    pub fn with_book(self, book: Arc<TenantBook>) -> Self {
        let now = self.current.load();
        Self::of(Edges {
            edges: now.edges.clone(),
            may_block: now.may_block,
            book: Some(book),
            latency: now.latency.clone(),
            tap: now.tap.clone(),
        })
    }

    /// This output, offering each batch to the tap of the component it belongs
    /// to (`counters`) and, for a source (`time_acks`), timing each batch from its
    /// send to its acknowledgement's outcome.
    pub fn of_component(self, counters: Arc<Counters>, time_acks: bool) -> Self {
        let now = self.current.load();
        Self::of(Edges {
            edges: now.edges.clone(),
            may_block: now.may_block,
            book: now.book.clone(),
            latency: time_acks.then(|| counters.ack_latency.clone()),
            tap: Some(counters),
        })
    }

    /// Whether anything consumes this output.
    pub fn is_connected(&self) -> bool {
        !self.current.load().edges.is_empty()
    }

    /// Send every later batch of this output and all its clones to `next`'s
    /// consumers. Sends already started finish on the old ones.
    pub fn repoint(&self, next: &Output) {
        self.current.store(next.current.load_full());
    }

    /// Send a batch to every consumer. Returns whether every copy was queued.
    pub async fn send(&self, batch: EventBatch) -> bool {
        self.send_with(batch, true).await
    }

    /// [`Output::send`] for a route's output: `may_block` is false when the route
    /// itself was reached through a fan-out, which then holds downstream too.
    pub async fn send_with(&self, batch: EventBatch, may_block: bool) -> bool {
        // Held to the end of the send: see the module doc.
        let now = self.current.load_full();
        let may_block = may_block && now.may_block;
        let book = now.book.as_deref();
        if let Some(h) = &now.latency {
            batch.ack.start_timer(h);
        }
        if let Some(c) = &now.tap {
            c.tap.offer(&batch.events);
        }
        match &*now.edges {
            [] => {
                batch.ack.resolve(AckStatus::Delivered);
                true
            }
            [only] => only.send(batch, may_block, book).await,
            [rest @ .., last] => {
                let mut all = true;
                for edge in rest {
                    all &= edge.send(batch.share(), may_block, book).await;
                }
                all &= last.send(batch, may_block, book).await;
                all
            }
        }
    }
}
