//! Lines into events and batches: per `format`, then `multiline`.

use std::path::Path;
use std::sync::Arc;

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
        match (self.s.format, &self.s.multiline) {
            (Format::None, None) => {
                for body in lines {
                    events.push(self.event(body, time_ns, origin));
                }
            }
            (Format::None, Some(rule)) => {
                let starts = multiline::line_starts(&lines, &starts, start, end);
                let j = self.joiner.chunk(rule, k, lines, &starts, end);
                Counters::add(&self.link.counters.truncated, j.truncated as usize);
                for body in j.bodies {
                    events.push(self.event(body, time_ns, origin));
                }
                if let (Some(at), Some(f)) = (j.hold_back, self.files.get_mut(&k)) {
                    f.hold_back(at);
                }
            }
            (format, _) => {
                let names = self.names();
                let o = self
                    .cri
                    .chunk(format, k, path, start, lines, origin, &names);
                Counters::add(&self.link.counters.truncated, o.truncated as usize);
                self.parse_errors += o.parse_errors;
                events = o.events;
                if let (Some(at), Some(f)) = (o.hold_back, self.files.get_mut(&k)) {
                    f.hold_back(at);
                }
            }
        }
        self.send_events(events, ack);
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

    /// Send `k`'s open multiline event, if any. `tracked`: its batch moves the
    /// checkpoint to the end of its last line (not after a truncation, whose
    /// old bytes no longer count).
    pub(super) fn flush_open_event(&mut self, k: FileKey, tracked: bool) {
        let Some(g) = self.joiner.take(k) else {
            return;
        };
        let Some(f) = self.files.get_mut(&k) else {
            return;
        };
        let ack = if tracked {
            f.track(g.end.min(f.emitted()))
        } else {
            AckToken::none()
        };
        let origin = f.origin.clone();
        let (body, cut) = g.into_body();
        Counters::add(&self.link.counters.truncated, usize::from(cut));
        let ev = self.event(body, now_ns(), &origin);
        self.send_events(vec![ev], ack);
    }

    /// Send the open multiline events that had no new line for `timeout_ms`,
    /// if their file is read to its end (more lines may be waiting otherwise).
    pub(super) fn flush_quiet_events(&mut self) {
        let Some(rule) = &self.s.multiline else {
            return;
        };
        for k in self.joiner.quiet(rule.timeout) {
            if self.files.get(&k).is_none_or(|f| f.at_end()) {
                self.flush_open_event(k, true);
            }
        }
    }

    /// At stop: every open event is sent.
    pub(super) fn flush_all_events(&mut self) {
        for k in self.joiner.files() {
            self.flush_open_event(k, true);
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
