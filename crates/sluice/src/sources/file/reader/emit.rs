//! Lines into events and batches: per `format`, then `multiline`.

use std::path::Path;
use std::sync::Arc;

use super::super::Format;
use super::super::checkpoint::FileKey;
use super::super::tail::Chunk;
use super::Reader;
use crate::event::{Event, EventBatch, Origin, now_ns};
use crate::metrics::Counters;

impl Reader {
    pub(super) fn send(&mut self, k: FileKey, chunk: Chunk, origin: &Arc<Origin>, path: &Path) {
        let Chunk {
            start,
            lines,
            ack,
            truncated,
        } = chunk;
        Counters::add(&self.link.counters.truncated, truncated as usize);
        let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
        Counters::add(&self.link.counters.bytes_in, bytes);
        let time_ns = now_ns();
        let mut events = Vec::with_capacity(lines.len());
        match self.s.format {
            Format::None => {
                for body in lines {
                    let mut ev =
                        Event::new(body, time_ns, self.link.tag.clone(), self.link.name.clone());
                    ev.origin = Some(origin.clone());
                    events.push(ev);
                }
            }
            Format::Cri => {
                let names = self.names();
                let o = self.cri.chunk(k, path, start, lines, origin, &names);
                Counters::add(&self.link.counters.truncated, o.truncated as usize);
                events = o.events;
                if let (Some(at), Some(f)) = (o.hold_back, self.files.get_mut(&k)) {
                    f.hold_back(at);
                }
            }
        }
        Counters::add(&self.link.counters.events_out, events.len());
        let Some(out) = &self.out else {
            return;
        };
        let batch = EventBatch::new(events, ack);
        self.link.rt.block_on(out.send(batch));
    }

    pub(super) fn names(&self) -> super::super::cri::Names {
        super::super::cri::Names {
            tag: self.link.tag.clone(),
            source: self.link.name.clone(),
            max_line_bytes: self.s.max_line_bytes,
        }
    }
}
