//! A source's (or route's) output: the fan-out to every buffer that consumes it.
//!
//! One edge: the batch moves. Several edges: each gets an O(1) copy sharing the
//! events and a clone of the ack token. A fan-out never waits on one full sink
//! (see [`crate::buffer`]): only a single-consumer output applies `block`.

use std::sync::Arc;

use crate::ack::AckStatus;
use crate::buffer::{BufferSender, SendOutcome};
use crate::event::EventBatch;

/// Where a component's batches go.
#[derive(Clone)]
pub struct Output {
    edges: Arc<[BufferSender]>,
    may_block: bool,
}

impl Output {
    /// An output feeding `edges`.
    pub fn new(edges: Vec<BufferSender>) -> Self {
        let may_block = edges.len() <= 1;
        Output { edges: edges.into(), may_block }
    }

    /// Whether anything consumes this output.
    pub fn is_connected(&self) -> bool {
        !self.edges.is_empty()
    }

    /// Send a batch to every consumer. Returns whether every copy was queued.
    pub async fn send(&self, batch: EventBatch) -> bool {
        match &*self.edges {
            [] => {
                batch.ack.resolve(AckStatus::Delivered);
                true
            }
            [only] => only.send(batch, self.may_block).await == SendOutcome::Queued,
            [rest @ .., last] => {
                let mut all = true;
                for edge in rest {
                    all &= edge.send(batch.share(), self.may_block).await == SendOutcome::Queued;
                }
                all &= last.send(batch, self.may_block).await == SendOutcome::Queued;
                all
            }
        }
    }
}
