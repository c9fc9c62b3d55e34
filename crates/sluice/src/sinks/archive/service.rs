//! The archive sink's loop, on a thread of its own: take batches, append each
//! record to its partition's file, cut files, publish them, and resolve a batch
//! once every record of it is archived.

use std::sync::Arc;
use std::time::Duration;

use super::ArchivePath;
use super::store::Store;
use super::writer::{Finished, Manifest, OpenFile, Partition};
use crate::ack::{AckStatus, AckToken};
use crate::encoding::Encoding;
use crate::event::{Event, EventBatch};
use crate::logging::RateLimit;
use crate::metrics::Counters;
use crate::sources::kafka::{FIELD_OFFSET, FIELD_PARTITION, FIELD_TOPIC};
use crate::topology::{ComponentError, SinkContext};

/// How often open files are checked against `max_file_secs` when idle.
const TICK: Duration = Duration::from_millis(500);

/// A batch waiting for its records to be archived.
struct Pending {
    /// (partition index, last offset of the batch in it).
    needs: Vec<(usize, i64)>,
    token: AckToken,
    status: AckStatus,
}

/// Settings of the loop.
pub struct Settings {
    pub path: ArchivePath,
    pub encoding: Encoding,
    pub compression: super::ArchiveCompression,
    pub max_file_bytes: u64,
    pub max_file_secs: u64,
}

/// The running sink.
pub struct ArchiveSink {
    store: Store,
    settings: Settings,
    parts: Vec<Partition>,
    pending: Vec<Pending>,
    errors: RateLimit,
    scratch: Vec<u8>,
    ident: String,
    /// The path renders alike for every record of a partition.
    ident_per_partition: bool,
}

enum Next {
    Batch(EventBatch),
    Tick,
    End,
    Abort,
}

fn meta(ev: &Event) -> Option<(&[u8], i64, i64)> {
    let topic = ev.field(FIELD_TOPIC)?.as_bytes()?;
    let partition = ev.field(FIELD_PARTITION)?.to_value().as_i64()?;
    let offset = ev.field(FIELD_OFFSET)?.to_value().as_i64()?;
    Some((topic, partition, offset))
}

impl ArchiveSink {
    /// A sink over `store`.
    pub fn new(store: Store, settings: Settings) -> Self {
        ArchiveSink {
            store,
            ident_per_partition: settings.path.per_partition(),
            settings,
            parts: Vec::new(),
            pending: Vec::new(),
            errors: RateLimit::new(crate::kafka::LOG_INTERVAL),
            scratch: Vec::with_capacity(64 * 1024),
            ident: String::new(),
        }
    }

    /// The loop; runs on a blocking thread.
    pub fn run(
        mut self,
        mut cx: SinkContext,
        rt: tokio::runtime::Handle,
    ) -> Result<(), ComponentError> {
        loop {
            let next = rt.block_on(async {
                tokio::select! {
                    biased;
                    _ = cx.abort.cancelled() => Next::Abort,
                    b = cx.input.recv() => b.map_or(Next::End, Next::Batch),
                    _ = tokio::time::sleep(TICK) => Next::Tick,
                }
            });
            match next {
                Next::Batch(b) => self.take(b, &cx)?,
                Next::Tick => {}
                Next::End => {
                    for i in 0..self.parts.len() {
                        self.close(i, &cx)?;
                    }
                    self.resolve_ready();
                    return Ok(());
                }
                Next::Abort => {
                    for p in &mut self.parts {
                        if let Some(f) = p.open.take() {
                            f.discard();
                        }
                    }
                    return Ok(());
                }
            }
            let max_age = Duration::from_secs(self.settings.max_file_secs);
            for i in 0..self.parts.len() {
                if self.parts[i]
                    .open
                    .as_ref()
                    .is_some_and(|f| f.opened.elapsed() >= max_age && f.forced_end.is_none())
                {
                    self.close(i, &cx)?;
                }
            }
            self.resolve_ready();
        }
    }

    fn part_index(&mut self, topic: &[u8], partition: i64, hint: usize) -> usize {
        if let Some(p) = self.parts.get(hint)
            && p.partition == partition
            && p.topic.as_bytes() == topic
        {
            return hint;
        }
        if let Some(i) = self
            .parts
            .iter()
            .position(|p| p.partition == partition && p.topic.as_bytes() == topic)
        {
            return i;
        }
        let topic: Arc<str> = String::from_utf8_lossy(topic).into();
        self.parts.push(Partition::new(topic, partition));
        self.parts.len() - 1
    }

    fn take(&mut self, batch: EventBatch, cx: &SinkContext) -> Result<(), ComponentError> {
        Counters::add(&cx.counters.events_in, batch.len());
        let mut needs: Vec<(usize, i64)> = Vec::new();
        let mut bad = 0;
        let mut hint = 0;
        for ev in batch.events.iter() {
            let Some((topic, partition, offset)) = meta(ev) else {
                bad += 1;
                continue;
            };
            let i = self.part_index(topic, partition, hint);
            hint = i;
            self.record(i, ev, offset, cx)?;
            match needs.iter_mut().find(|(p, _)| *p == i) {
                Some(n) => n.1 = n.1.max(offset),
                None => needs.push((i, offset)),
            }
        }
        let status = if bad > 0 {
            Counters::add(&cx.counters.dropped, bad);
            if let Some(suppressed) = self.errors.allow() {
                tracing::warn!(
                    events = bad,
                    suppressed,
                    "Events without kafka.topic/partition/offset fields cannot be archived; dropped."
                );
            }
            AckStatus::Dropped
        } else {
            AckStatus::Delivered
        };
        self.pending.push(Pending {
            needs,
            token: batch.ack,
            status,
        });
        Ok(())
    }

    fn record(
        &mut self,
        i: usize,
        ev: &Event,
        offset: i64,
        cx: &SinkContext,
    ) -> Result<(), ComponentError> {
        let part = &self.parts[i];
        let restart = match part.next {
            None => true,
            // Going back: the partition is being read again (rebalance, seek).
            // Jumping forward with no file open: a gap (compaction, transaction
            // markers) or the partition came back from another owner, who may
            // have moved its manifest: read it again (no file is discarded).
            Some(next) => offset < next || (offset > next && part.open.is_none()),
        };
        if restart {
            self.restart(i, offset)?;
        }
        let part = &mut self.parts[i];
        part.next = Some(offset + 1);
        if offset <= part.archived_through {
            return Ok(());
        }
        // A path made of the topic and partition only renders alike for every
        // record of the partition: an open file never has to be cut for it.
        if self.parts[i].open.is_none() || !self.ident_per_partition {
            self.ident.clear();
            self.settings.path.render_ident(ev, &mut self.ident);
            let cut = self.parts[i]
                .open
                .as_ref()
                .is_some_and(|f| f.forced_end.is_none() && f.ident != self.ident);
            if cut {
                self.close(i, cx)?;
            }
        }
        if self.parts[i].open.is_none() {
            let part = &mut self.parts[i];
            let (first, forced_end) = match part.forced {
                Some(m) if offset <= m.last => (m.first, Some(m.last)),
                _ => (offset, None),
            };
            let key = self.settings.path.render_key(ev, first);
            let f = OpenFile::open(
                &self.store,
                self.settings.compression,
                first,
                key,
                self.ident.clone(),
                forced_end,
            )
            .map_err(|e| ComponentError::Other(format!("opening a staging file: {e}")))?;
            part.open = Some(f);
        }
        self.scratch.clear();
        self.settings.encoding.encode(ev, &mut self.scratch, true);
        let f = self.parts[i].open.as_mut().expect("opened above");
        f.append(offset, &self.scratch)
            .map_err(|e| ComponentError::Other(format!("writing a staging file: {e}")))?;
        let full = match f.forced_end {
            Some(end) => offset >= end,
            None => f.raw_bytes >= self.settings.max_file_bytes,
        };
        if full {
            self.close(i, cx)?;
        }
        Ok(())
    }

    /// (Re)start partition `i` at `offset` from its manifest; batches waiting on
    /// a discarded file fail (the source reads them again).
    fn restart(&mut self, i: usize, offset: i64) -> Result<(), ComponentError> {
        let key = Manifest::key(&self.parts[i].topic, self.parts[i].partition);
        let manifest = self.retry("reading a manifest", |s| s.store.get_small(&key))?;
        let manifest = manifest.as_deref().and_then(Manifest::parse);
        self.parts[i].start(offset, manifest);
        self.fail_pending(i);
        Ok(())
    }

    /// Batches waiting on records of partition `i` past what is archived will not
    /// see them archived by this attempt: they fail (the source reads them again).
    fn fail_pending(&mut self, i: usize) {
        let through = self.parts[i].archived_through;
        for p in &mut self.pending {
            if p.needs.iter().any(|&(j, last)| j == i && last > through) {
                p.status = AckStatus::Errored;
            }
        }
    }

    /// Close partition `i`'s file: record its bounds in the manifest, publish it.
    fn close(&mut self, i: usize, cx: &SinkContext) -> Result<(), ComponentError> {
        let Some(f) = self.parts[i].open.take() else {
            return Ok(());
        };
        let done: Finished = f
            .finish()
            .map_err(|e| ComponentError::Other(format!("finishing a staging file: {e}")))?;
        let key = Manifest::key(&self.parts[i].topic, self.parts[i].partition);
        let m = Manifest {
            first: done.first,
            last: done.last,
        };
        // Another owner may have moved on (a rebalance we were slow to notice):
        // then this file is not ours to publish. A manifest reaching into this
        // file with other bounds — even the same first offset, cut elsewhere by
        // the other owner's clock — means the same; only identical bounds (our
        // own earlier attempt, rewritten) are ours to replace.
        let current = self.retry("reading a manifest", |s| s.store.get_small(&key))?;
        if let Some(cur) = current.as_deref().and_then(Manifest::parse)
            && cur != m
            && cur.last >= m.first
        {
            tracing::warn!(
                topic = &*self.parts[i].topic,
                partition = self.parts[i].partition,
                first = m.first,
                "Another archiver archived this partition past our file; discarding it."
            );
            let _ = std::fs::remove_file(&done.staged);
            self.parts[i].next = None;
            self.fail_pending(i);
            return Ok(());
        }
        let text = m.encode();
        self.retry("writing a manifest", |s| {
            s.store.put_small(&key, text.as_bytes())
        })?;
        self.retry("publishing a file", |s| {
            s.store.publish(&done.staged, &done.key)
        })?;
        Counters::add(&cx.counters.events_out, done.records as usize);
        let part = &mut self.parts[i];
        part.archived_through = part.archived_through.max(done.last);
        if part.forced.is_some_and(|f| f.first == done.first) {
            part.forced = None;
        }
        tracing::debug!(key = %done.key, first = done.first, last = done.last, "Archive file published.");
        Ok(())
    }

    /// Run `op` until it succeeds, up to 20 attempts (backoff 1 s doubling to
    /// 30 s, about 8 minutes in all); then the sink fails. Nothing is acknowledged
    /// meanwhile, so nothing is committed past what is published.
    fn retry<T>(
        &self,
        what: &str,
        mut op: impl FnMut(&Self) -> std::io::Result<T>,
    ) -> Result<T, ComponentError> {
        let mut backoff = Duration::from_secs(1);
        for _ in 0..20 {
            match op(self) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "Archive: {what} failed.");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        Err(ComponentError::Other(format!(
            "archive: {what} kept failing"
        )))
    }

    fn resolve_ready(&mut self) {
        let parts = &self.parts;
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            let ready = p.status == AckStatus::Errored
                || p.needs
                    .iter()
                    .all(|&(j, last)| parts[j].archived_through >= last);
            if ready {
                let p = self.pending.swap_remove(i);
                p.token.resolve(p.status);
            } else {
                i += 1;
            }
        }
    }
}
