//! Lines into events and batches: per `format`, then `multiline`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::super::checkpoint::FileKey;
use super::super::tail::Chunk;
use super::super::{Format, multiline};
use super::Reader;
use crate::ack::{AckStatus, AckToken};
use crate::event::{Event, EventBatch, Origin, now_ns};
use crate::metrics::Counters;

impl Reader {
    pub(super) fn send(&mut self, k: FileKey, chunk: Chunk, origin: &Arc<Origin>, path: &Path) {
        let Chunk {
            start,
            lines,
            ack,
            truncated,
            starts,
            end,
        } = chunk;
        Counters::add(&self.link.counters.truncated, truncated as usize);
        let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
        Counters::add(&self.link.counters.bytes_in, bytes);
        let time_ns = now_ns();
        let mut events = Vec::with_capacity(lines.len());
        let mut hold = None;
        match (self.s.format, &self.s.multiline) {
            (Format::None, None) => {
                // The hot path: every event of the batch shares handles made
                // for it (see `Batched`), not the source's own.
                let b = Batched::new(&self.link.tag, &self.link.name, origin);
                for body in lines {
                    events.push(b.event(body, time_ns));
                }
            }
            (Format::None, Some(rule)) => {
                let starts = multiline::line_starts(&lines, &starts, start, end);
                let j = self.joiner.chunk(rule, k, lines, &starts, end);
                Counters::add(&self.link.counters.truncated, j.truncated as usize);
                for d in j.done {
                    events.push(self.event(d.body, time_ns, origin));
                }
                hold = j.hold_back;
            }
            (format, rule) => {
                let names = self.names();
                let starts = multiline::line_starts(&lines, &starts, start, end);
                let o = self
                    .cri
                    .chunk(format, k, path, &starts, end, lines, origin, &names);
                Counters::add(&self.link.counters.truncated, o.truncated as usize);
                self.parse_errors += o.parse_errors;
                hold = o.hold_back;
                match rule {
                    None => events = o.events,
                    Some(rule) => {
                        // The rule applies to the container lines, parts joined.
                        let items =
                            o.events
                                .into_iter()
                                .zip(o.spans)
                                .map(|(ev, s)| multiline::Line {
                                    body: ev.body.clone(),
                                    start: s.0,
                                    end: s.1,
                                    lane: s.2,
                                    meta: Some(ev),
                                });
                        let j = self.joiner.lines(rule, k, items);
                        Counters::add(&self.link.counters.truncated, j.truncated as usize);
                        hold = min_some(hold, j.hold_back);
                        for d in j.done {
                            events.push(self.done_event(d, time_ns, origin));
                        }
                    }
                }
            }
        }
        if let (Some(at), Some(f)) = (hold, self.files.get_mut(&k)) {
            f.hold_back(at);
        }
        self.send_events(events, ack);
    }

    /// A joined event: the first line's event (container formats) with the
    /// joined body, or a new one.
    fn done_event(&self, d: multiline::Done, time_ns: i64, origin: &Arc<Origin>) -> Event {
        match d.meta {
            Some(mut ev) => {
                ev.body = d.body;
                ev
            }
            None => self.event(d.body, time_ns, origin),
        }
    }

    fn event(&self, body: Bytes, time_ns: i64, origin: &Arc<Origin>) -> Event {
        let mut ev = Event::new(body, time_ns, self.link.tag.clone(), self.link.name.clone());
        ev.origin = Some(origin.clone());
        ev
    }

    fn send_events(&mut self, events: Vec<Event>, ack: AckToken) {
        if events.is_empty() {
            // Every line went into an event still open (multiline, partial
            // lines): nothing to deliver, and the checkpoint was held back.
            ack.resolve(AckStatus::Delivered);
            return;
        }
        Counters::add(&self.link.counters.events_out, events.len());
        let Some(out) = &self.out else {
            return;
        };
        let batch = EventBatch::new(events, ack);
        self.link.rt.block_on(out.send(batch));
    }

    /// Send `k`'s open multiline events (those quiet for `quiet`, if given).
    /// `tracked`: their batch moves the checkpoint to the end of their last
    /// line, never past an event still open or a partial line still pending (not
    /// after a truncation, whose old bytes no longer count).
    pub(super) fn flush_open_event(&mut self, k: FileKey, tracked: bool, quiet: Option<Duration>) {
        let groups = self.joiner.take(k, quiet);
        if groups.is_empty() {
            return;
        }
        let end = groups.iter().map(|g| g.end).max().unwrap_or(0);
        let hold = min_some(self.joiner.hold_back(k), self.cri.hold_back(k));
        let Some(f) = self.files.get_mut(&k) else {
            return;
        };
        let ack = if tracked {
            let end = end.min(f.emitted());
            f.track(hold.map_or(end, |h| end.min(h)))
        } else {
            AckToken::none()
        };
        let origin = f.origin.clone();
        let now = now_ns();
        let events = groups
            .into_iter()
            .map(|g| {
                let d = multiline::done(g);
                Counters::add(&self.link.counters.truncated, usize::from(d.truncated));
                self.done_event(d, now, &origin)
            })
            .collect();
        self.send_events(events, ack);
    }

    /// Send the open multiline events that had no new line for `timeout_ms`,
    /// if their file is read to its end (more lines may be waiting otherwise).
    pub(super) fn flush_quiet_events(&mut self) {
        let Some(rule) = &self.s.multiline else {
            return;
        };
        let timeout = rule.timeout;
        for k in self.joiner.quiet(timeout) {
            if self.files.get(&k).is_none_or(|f| f.at_end()) {
                self.flush_open_event(k, true, Some(timeout));
            }
        }
    }

    /// At stop: every open event is sent.
    pub(super) fn flush_all_events(&mut self) {
        for k in self.joiner.files() {
            self.flush_open_event(k, true, None);
        }
    }

    pub(super) fn names(&self) -> super::super::cri::Names {
        super::super::cri::Names {
            tag: self.link.tag.clone(),
            source: self.link.name.clone(),
            max_line_bytes: self.s.max_line_bytes,
        }
    }
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Tag, source name and origin copied once per batch. Each event holds a
/// reference to all three; were they the source's own, the source thread
/// incrementing their counts and the sink thread decrementing them (dropping
/// delivered events) would bounce those cache lines between cores for every
/// event: ~10% of all CPU in a file → null profile, almost all on the three
/// `lock incq`. A batch's own copies are touched by one thread at a time.
struct Batched {
    tag: Arc<str>,
    source: Arc<str>,
    origin: Arc<Origin>,
}

impl Batched {
    fn new(tag: &str, source: &str, origin: &Origin) -> Self {
        Batched {
            tag: tag.into(),
            source: source.into(),
            origin: Arc::new(origin.clone()),
        }
    }

    fn event(&self, body: Bytes, time_ns: i64) -> Event {
        let mut ev = Event::new(body, time_ns, self.tag.clone(), self.source.clone());
        ev.origin = Some(self.origin.clone());
        ev
    }
}
