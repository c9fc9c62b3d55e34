//! `dedupe_window`: a chunk a client resends is not stored twice.
//!
//! A forward client that asks for acks (`chunk` option: Fluentd's out_forward with
//! `require_ack_response`, fluent-logger, sluice's forward sink) resends every
//! chunk it saw no `{"ack": chunk}` for after a break. When sluice had already
//! made that chunk durable (every sink's disk buffer stored it) or delivered it,
//! storing the resend again duplicates it downstream. This module remembers the
//! ids of chunks whose batch resolved `Delivered` — the ack token resolves
//! Delivered only once *every* copy (each sink of a fan-out, each output of a
//! route) stored or delivered its events, so a chunk half-stored is never
//! remembered — and answers a resend of one of them with its ack at once,
//! without emitting it (counted in `duplicates_suppressed`).
//!
//! # States of an id
//! - unknown: the chunk is emitted; its id becomes *in flight*;
//! - in flight (emitted, not resolved): a resend (on any connection) is not
//!   emitted; it waits for the first copy's outcome and gets its ack when that
//!   resolves `Delivered`. Any other outcome closes the resend's connection too
//!   (no ack), so the client resends once more and that copy is stored;
//! - remembered (resolved `Delivered`): a resend is acked at once.
//!
//! # Bounds
//! Remembered ids are kept at most `max_chunks` and at most `max_age_secs` after
//! they resolved, oldest forgotten first ([`Window`]). Ids longer than
//! [`MAX_CHUNK_ID_BYTES`] are never tracked (such chunks are stored as before).
//! Ids in flight are bounded by the connections (`max_connections` ×
//! `conn::MAX_INFLIGHT_CHUNKS`). The set is global to the source, not per
//! client: Fluentd, fluent-logger and sluice make ids from 128 random bits, so
//! two clients never share one; a client that reuses an id for other data gets
//! that data acked and dropped while the first is remembered.
//!
//! # Across restarts
//! When the source feeds a sink with a disk buffer (and no sink with
//! `acknowledgements = "none"`: see `journal_wanted`), every remembered id is also
//! appended to a journal in `<data_dir>/forward_source/<source>/` ([`journal`])
//! *before* any waiting connection writes the ack, with one `write(2)`: an id
//! whose ack a client could have seen is in the file once the process dies,
//! even by `kill -9`. At start the journal refills the window, so a resend after
//! a crash is recognised. The journal is not fsynced per id (only when it
//! rotates): after a power loss the latest ids may be forgotten, and their
//! resends stored again — a duplicate, never a loss.
//!
//! The journal alone leaves a window: a chunk's records are durable in the disk
//! buffer before its id is journaled (the id is remembered only once every copy
//! is stored), so a process killed between the two would store the client's
//! resend again. So each batch's token carries its chunk label (source, id,
//! events of the chunk: [`crate::ack::ChunkLabel`]), every disk buffer record
//! of the batch stores it, and at start the ids of chunks found whole in every
//! disk buffer the source feeds (`durable_chunks` in the parent module) join
//! the window with the journal's. That covers the records not yet delivered;
//! delivered ones were journaled first: a buffer's WAL thread resolves a
//! record's token (writing the journal, in the callback, on that thread)
//! before it reads the record ahead to its sink, and only a record the sink
//! has read can be acknowledged (and trimmed).

pub(crate) mod journal;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::oneshot;
use tracing::error;

use crate::ack::{AckStatus, AckToken, ChunkLabel};
use crate::metrics::Counters;

/// Longest chunk id remembered. Fluentd's are 25 bytes (base64 of 16 random
/// bytes and a newline), fluent-logger's and sluice's shorter.
pub(crate) const MAX_CHUNK_ID_BYTES: usize = 64;
/// Largest `max_chunks` accepted (about 1.2 GiB of ids at worst).
pub(crate) const MAX_CHUNKS_CEILING: usize = 10_000_000;

/// `dedupe_window = { max_chunks = 100000, max_age_secs = 3600 }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeWindowConfig {
    /// Most chunk ids remembered; 0 disables de-duplication.
    #[serde(default = "default_max_chunks")]
    pub max_chunks: usize,
    /// How long an id is remembered after its chunk was stored; 0 disables.
    #[serde(default = "default_max_age_secs")]
    pub max_age_secs: u64,
}

impl Default for DedupeWindowConfig {
    fn default() -> Self {
        DedupeWindowConfig {
            max_chunks: default_max_chunks(),
            max_age_secs: default_max_age_secs(),
        }
    }
}

impl DedupeWindowConfig {
    /// Whether de-duplication is on.
    pub fn enabled(&self) -> bool {
        self.max_chunks > 0 && self.max_age_secs > 0
    }
}

fn default_max_chunks() -> usize {
    100_000
}
fn default_max_age_secs() -> u64 {
    3600
}

/// Seconds since the Unix epoch (the journal keeps wall-clock times).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Remembered ids, bounded by count and age; pure (times are passed in).
///
/// `order` holds every insertion, oldest first; `ids` maps an id to the
/// sequence number of its latest insertion, so an entry of `order` whose id was
/// inserted again later is stale and only dropped when it reaches the front.
/// `order.len() <= max_chunks` holds after every call, hence `ids` too.
#[derive(Debug)]
pub(crate) struct Window {
    max_chunks: usize,
    max_age_secs: u64,
    next_seq: u64,
    ids: HashMap<Bytes, u64>,
    order: VecDeque<(u64, u64, Bytes)>,
}

impl Window {
    pub(crate) fn new(max_chunks: usize, max_age_secs: u64) -> Window {
        Window {
            max_chunks,
            max_age_secs,
            next_seq: 0,
            ids: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Ids remembered now.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    fn expired(&self, secs: u64, now: u64) -> bool {
        secs.saturating_add(self.max_age_secs) <= now
    }

    fn pop_front(&mut self) {
        if let Some((seq, _, id)) = self.order.pop_front()
            && self.ids.get(&id) == Some(&seq)
        {
            self.ids.remove(&id);
        }
    }

    /// Forget what is older than `max_age_secs` at `now`.
    pub(crate) fn expire(&mut self, now: u64) {
        while let Some(&(_, secs, _)) = self.order.front() {
            if !self.expired(secs, now) {
                break;
            }
            self.pop_front();
        }
    }

    /// Whether `id` is remembered at `now`.
    pub(crate) fn contains(&mut self, id: &[u8], now: u64) -> bool {
        self.expire(now);
        self.ids.contains_key(id)
    }

    /// Remember `id`, stored at `secs`, seen at `now` (equal, but when read back
    /// from the journal). Past `max_chunks`, the oldest is forgotten.
    pub(crate) fn insert(&mut self, id: Bytes, secs: u64, now: u64) {
        self.expire(now);
        if self.max_chunks == 0 || self.expired(secs, now) {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ids.insert(id.clone(), seq);
        self.order.push_back((seq, secs, id));
        while self.order.len() > self.max_chunks {
            self.pop_front();
        }
    }

    /// The remembered ids with their times, oldest first.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&Bytes, u64)> {
        self.order
            .iter()
            .filter(|(seq, _, id)| self.ids.get(id) == Some(seq))
            .map(|(_, secs, id)| (id, *secs))
    }
}

/// What to do with a chunk that carries an id.
pub(crate) enum Admit {
    /// Stored or delivered before: ack it now, emit nothing.
    Done,
    /// The same id is in flight: emit nothing, ack when that one is delivered.
    InFlight(Outcome),
    /// First time: emit the batch with this token; its outcome arrives on the
    /// [`Outcome`] after the id is remembered.
    New(AckToken, Outcome),
}

/// The outcome of the first copy of a chunk.
pub(crate) struct Outcome(oneshot::Receiver<AckStatus>);

impl Future for Outcome {
    type Output = AckStatus;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<AckStatus> {
        // The sender is only dropped unsent if the source's state is: errored
        // (no ack, the client resends) is the safe answer.
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(AckStatus::Errored))
    }
}

/// A forward source's de-duplication state, shared by its connections.
pub(crate) struct Dedupe {
    inner: Mutex<Inner>,
    counters: Arc<Counters>,
    /// The source's name (in the chunk labels).
    source: Arc<str>,
}

struct Inner {
    window: Window,
    /// Ids emitted and not resolved yet, with whoever waits for their outcome
    /// (the first copy's connection, then each resend's).
    inflight: HashMap<Bytes, Vec<oneshot::Sender<AckStatus>>>,
    journal: Option<journal::Journal>,
}

impl Dedupe {
    /// The state of source `source`, refilled from the journal in
    /// `journal_dir` when given, then from `durable` (chunks found whole in
    /// the disk buffers: id → time stored). Blocking file I/O: call it off the
    /// runtime's workers.
    pub(crate) fn open(
        config: &DedupeWindowConfig,
        journal_dir: Option<&Path>,
        durable: HashMap<Bytes, u64>,
        source: Arc<str>,
        counters: Arc<Counters>,
    ) -> Result<Arc<Dedupe>, journal::JournalError> {
        let mut window = Window::new(config.max_chunks, config.max_age_secs);
        let mut durable: Vec<(Bytes, u64)> = durable.into_iter().collect();
        durable.sort_by_key(|(_, secs)| *secs);
        let journal = match journal_dir {
            Some(dir) => Some(journal::Journal::open(
                dir,
                &mut window,
                durable,
                now_secs(),
            )?),
            None => {
                let now = now_secs();
                for (id, secs) in durable {
                    window.insert(id, secs, now);
                }
                None
            }
        };
        counters.dedupe_chunks.store(window.len() as u64, Relaxed);
        Ok(Arc::new(Dedupe {
            inner: Mutex::new(Inner {
                window,
                inflight: HashMap::new(),
                journal,
            }),
            counters,
            source,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ids remembered now.
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> usize {
        self.lock().window.len()
    }

    /// Decide what a chunk with `id` and `events` events becomes (`id` at most
    /// [`MAX_CHUNK_ID_BYTES`]: the caller checks).
    pub(crate) fn admit(self: &Arc<Self>, id: &Bytes, events: u32) -> Admit {
        let (tx, rx) = oneshot::channel();
        let mut g = self.lock();
        let known = g.window.contains(id, now_secs());
        self.counters
            .dedupe_chunks
            .store(g.window.len() as u64, Relaxed);
        if known {
            return Admit::Done;
        }
        if let Some(waiters) = g.inflight.get_mut(id) {
            waiters.push(tx);
            return Admit::InFlight(Outcome(rx));
        }
        g.inflight.insert(id.clone(), vec![tx]);
        drop(g);
        // Built outside the lock: a token dropped at once calls `resolve`.
        let me = self.clone();
        let key = id.clone();
        let label = ChunkLabel {
            source: self.source.clone(),
            id: id.clone(),
            events,
        };
        let token = AckToken::with_chunk_callback(label, move |status| me.resolve(key, status));
        Admit::New(token, Outcome(rx))
    }

    /// The first copy of `id` resolved: remember it when delivered (journal
    /// first), then tell every waiter.
    fn resolve(&self, id: Bytes, status: AckStatus) {
        let waiters = {
            let mut g = self.lock();
            let waiters = g.inflight.remove(&id).unwrap_or_default();
            if status == AckStatus::Delivered {
                let now = now_secs();
                if g.journal.is_some() {
                    crate::fault::point("before_chunk_journal");
                }
                if let Some(j) = &mut g.journal
                    && let Err(e) = j.append(&id, now)
                {
                    error!(error = %e, "Writing the chunk id journal failed; resends after a restart may be stored twice.");
                    g.journal = None;
                }
                g.window.insert(id, now, now);
                self.counters
                    .dedupe_chunks
                    .store(g.window.len() as u64, Relaxed);
            }
            waiters
        };
        for w in waiters {
            let _ = w.send(status);
        }
    }
}

#[cfg(test)]
mod tests;
