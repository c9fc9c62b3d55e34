//! A forward connection's ack writer: writes replies in request order, each ack
//! only once its chunk's outcome is `Delivered`.
//!
//! On any other outcome, a write error or a write that does not finish within
//! `limits.ack_write_timeout_secs`, it closes the connection (the client then resends what it
//! has not seen acknowledged). A resend answered without being stored
//! ([`super::dedupe`]) is counted in `duplicates_suppressed` when its ack is
//! decided.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Common;
use super::dedupe::Outcome;
use crate::ack::{AckReceiver, AckStatus};
use crate::metrics::Counters;

/// What the writer sends, in request order.
pub(super) enum Reply {
    /// Bytes to write as they are (HELO, PONG, ack of a request without events).
    Now(Bytes),
    /// An ack to write once the batch is delivered, holding one of the
    /// connection's [`MAX_INFLIGHT_CHUNKS`](super::conn::MAX_INFLIGHT_CHUNKS) slots until its outcome is known.
    Ack(Bytes, Wait, OwnedSemaphorePermit),
    /// Close after everything before it was written (failed handshake).
    Close,
}

/// How the writer learns a chunk's outcome.
pub(super) enum Wait {
    /// This request's batch.
    Batch(AckReceiver),
    /// A chunk tracked by id: this request's batch, or a resend of a chunk in
    /// flight (`duplicate`), acked when the first copy is delivered.
    Chunk { outcome: Outcome, duplicate: bool },
    /// A resend of a chunk delivered before.
    Done,
}

pub(super) struct Writer {
    pub(super) common: Arc<Common>,
    pub(super) peer: SocketAddr,
    /// Replies queued and not yet written (or abandoned).
    pub(super) pending: Arc<AtomicUsize>,
    /// Cancelled when the writer stops.
    pub(super) done: CancellationToken,
}

impl Writer {
    /// A chunk's outcome; a resend answered without being stored is counted.
    async fn outcome(&self, wait: Wait) -> AckStatus {
        let (status, duplicate) = match wait {
            Wait::Batch(rx) => (rx.await, false),
            Wait::Chunk { outcome, duplicate } => (outcome.await, duplicate),
            Wait::Done => (AckStatus::Delivered, true),
        };
        if duplicate && status == AckStatus::Delivered {
            Counters::add(&self.common.counters.duplicates_suppressed, 1);
        }
        status
    }

    pub(super) async fn run<W: AsyncWrite + Unpin>(self, mut wr: W, mut rx: mpsc::Receiver<Reply>) {
        let stats = &self.common.stats;
        while let Some(reply) = rx.recv().await {
            let bytes = match reply {
                Reply::Now(b) => b,
                Reply::Ack(ack, wait, _slot) => match self.outcome(wait).await {
                    AckStatus::Delivered => {
                        stats.acks_sent.fetch_add(1, Relaxed);
                        ack
                    }
                    status => {
                        stats.acks_withheld.fetch_add(1, Relaxed);
                        debug!(%status, "Chunk not delivered: no ack; closing so the client resends.");
                        break;
                    }
                },
                Reply::Close => break,
            };
            match tokio::time::timeout(self.common.write_timeout, wr.write_all(&bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    debug!(error = %e, "Write failed; connection closed.");
                    break;
                }
                Err(_) => {
                    Counters::add(&self.common.counters.errors, 1);
                    if let Some(suppressed) = self.common.log_limit.allow() {
                        warn!(peer = %self.peer, timeout_secs = self.common.write_timeout.as_secs(), suppressed,
                            "Client does not read its acks; connection closed.");
                    }
                    break;
                }
            }
            self.pending.fetch_sub(1, Relaxed);
        }
        self.done.cancel();
        // Unwritten replies are abandoned: their chunks will be resent.
        rx.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
    }
}
