//! `GET /tap/COMPONENT[?limit=N]`: a live sample of the events leaving a source
//! or a route, one JSON object per line, for `sluice tap`.
//!
//! A tap never slows the pipeline: each component's [`Tap`] is a relaxed load of
//! its listener count per batch while nobody listens; with listeners, each event
//! is `try_send` into every listener's small bounded channel ([`TAP_QUEUE`]
//! events) and what does not fit is dropped and counted
//! (`sluice_tap_dropped_events_total`). Events are shared (`Arc` bodies), never
//! copied; the encoding to JSON happens on the API's side, off the data path.
//!
//! A listener ends when its client goes away (its channel closes and the next
//! batch forgets it), when `limit` events were sent, or when the API stops.

use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use bytes::Bytes;
use futures::Stream;
use hyper::body::Frame;
use tokio::sync::mpsc;

use crate::encoding::Encoding;
use crate::event::Event;
use crate::metrics::Registry;

/// Events one listener may have waiting; more are dropped.
pub const TAP_QUEUE: usize = 1024;

/// Events dropped by all taps because a listener's queue was full.
pub static TAP_DROPPED: AtomicU64 = AtomicU64::new(0);

/// A component's tap point: where its outgoing batches are offered to listeners.
#[derive(Debug, Default)]
pub struct Tap {
    listeners: AtomicUsize,
    subs: Mutex<Vec<mpsc::Sender<Event>>>,
}

impl Tap {
    /// Offer a batch's events to the listeners, if any (never waits).
    #[inline]
    pub fn offer(&self, events: &[Event]) {
        if self.listeners.load(Relaxed) == 0 {
            return;
        }
        self.offer_slow(events);
    }

    #[cold]
    fn offer_slow(&self, events: &[Event]) {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|tx| !tx.is_closed());
        for tx in subs.iter() {
            for (i, e) in events.iter().enumerate() {
                if tx.try_send(e.clone()).is_err() {
                    // Full (or closed since): the rest of the batch is dropped too.
                    TAP_DROPPED.fetch_add((events.len() - i) as u64, Relaxed);
                    break;
                }
            }
        }
        self.listeners.store(subs.len(), Relaxed);
    }

    /// A new listener's receiving end.
    pub fn listen(&self) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel(TAP_QUEUE);
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.push(tx);
        self.listeners.store(subs.len(), Relaxed);
        rx
    }

    /// Listeners now (closed ones are forgotten at the next batch).
    pub fn listeners(&self) -> usize {
        self.listeners.load(Relaxed)
    }
}

/// Find `name` (a source or route name, or `sources.NAME` / `routes.NAME`) and
/// listen to it; `Err` says why not.
pub fn listen(registry: &Registry, name: &str) -> Result<mpsc::Receiver<Event>, String> {
    let all = registry.components();
    let found = all
        .iter()
        .filter(|c| c.kind() == "source" || c.kind() == "route")
        .find(|c| c.id == name || c.name() == name);
    match found {
        Some(c) => Ok(c.counters.tap.listen()),
        None if all.iter().any(|c| c.id == name || c.name() == name) => Err(format!(
            "{name} is a sink: tap the source or route that feeds it\n"
        )),
        None => Err(format!("no source or route named {name}\n")),
    }
}

/// The response body: each event as a JSON line, `limit` events at most.
pub fn stream(
    rx: mpsc::Receiver<Event>,
    limit: Option<u64>,
) -> impl Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    futures::stream::unfold((rx, limit), |(mut rx, left)| async move {
        if left == Some(0) {
            return None;
        }
        let first = rx.recv().await?;
        // Take what is queued (up to what is left) into one chunk.
        let mut out = Vec::with_capacity(512);
        let mut n = 0u64;
        let mut next = Some(first);
        while let Some(e) = next.take() {
            Encoding::Json.encode(&e, &mut out, true);
            n += 1;
            if left.is_some_and(|l| n >= l) || n >= 256 {
                break;
            }
            next = rx.try_recv().ok();
        }
        let left = left.map(|l| l - n);
        Some((Ok(Frame::data(Bytes::from(out))), (rx, left)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(body: &'static str) -> Event {
        Event::new(
            Bytes::from_static(body.as_bytes()),
            0,
            "t".into(),
            "s".into(),
        )
    }

    #[test]
    fn nobody_listening_costs_a_load_and_a_full_queue_drops_and_counts() {
        let tap = Tap::default();
        tap.offer(&[ev("x")]);
        let mut rx = tap.listen();
        assert_eq!(tap.listeners(), 1);
        let before = TAP_DROPPED.load(Relaxed);
        let batch: Vec<Event> = (0..TAP_QUEUE + 5).map(|_| ev("y")).collect();
        tap.offer(&batch);
        assert!(TAP_DROPPED.load(Relaxed) >= before + 5);
        assert_eq!(&rx.try_recv().unwrap().body[..], b"y");
        drop(rx);
        tap.offer(&[ev("z")]);
        assert_eq!(tap.listeners(), 0, "a closed listener is forgotten");
    }
}
