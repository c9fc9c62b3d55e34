//! A batch's per-tenant counts on their way to the disk buffer that keeps them
//! ([`Ledger`]), the [`Row`] they are made of, and which sink keeps them
//! ([`keeping_sink`]).

use std::sync::Arc;

use super::{Reason, TenantBook, group};
use crate::event::Event;

/// One tenant's counts in a batch, a journal entry or a snapshot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Events received.
    pub received_events: u64,
    /// Body bytes received.
    pub received_bytes: u64,
    /// Events delivered.
    pub delivered_events: u64,
    /// Body bytes delivered.
    pub delivered_bytes: u64,
    /// Events dropped, by [`Reason`].
    pub dropped: [u64; Reason::ALL.len()],
    /// Events delivered again after a restart that had been handed to the
    /// sink before it without being settled (possible duplicates; counted in
    /// `delivered_events` too, once). Outside the balance.
    pub resent_events: u64,
}

impl Row {
    /// Received less delivered and dropped (never below zero).
    pub fn pending(&self) -> u64 {
        let out = self.delivered_events + self.dropped.iter().sum::<u64>();
        self.received_events.saturating_sub(out)
    }

    /// Add `other`'s counts.
    pub fn add(&mut self, other: &Row) {
        self.received_events += other.received_events;
        self.received_bytes += other.received_bytes;
        self.delivered_events += other.delivered_events;
        self.delivered_bytes += other.delivered_bytes;
        for (a, b) in self.dropped.iter_mut().zip(other.dropped) {
            *a += b;
        }
        self.resent_events += other.resent_events;
    }
}

/// Per-tenant counts of one batch on its way to the buffer that keeps them,
/// by series name (already folded into `other` by the book).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ledger {
    /// Rows by series name.
    pub rows: Vec<(Arc<str>, Row)>,
}

impl Ledger {
    /// `name`'s row, added if absent.
    pub fn row(&mut self, name: &Arc<str>) -> &mut Row {
        let i = match self
            .rows
            .iter()
            .rposition(|(n, _)| Arc::ptr_eq(n, name) || **n == **name)
        {
            Some(i) => i,
            None => {
                self.rows.push((name.clone(), Row::default()));
                self.rows.len() - 1
            }
        };
        &mut self.rows[i].1
    }

    /// Whether nothing was noted.
    pub fn is_empty(&self) -> bool {
        self.rows.iter().all(|(_, r)| *r == Row::default())
    }

    /// Add every row of `other`.
    pub fn merge(&mut self, other: &Ledger) {
        for (n, r) in &other.rows {
            self.row(n).add(r);
        }
    }

    /// Count `events` as received, then dropped for `reason` (a batch the
    /// buffer could not store).
    pub fn drop_events(&mut self, book: &TenantBook, events: &[Event], reason: Reason) {
        for g in group(events) {
            let r = self.row(&book.series(&g.tenant));
            r.dropped[reason as usize] += g.events;
        }
    }

    /// `events` per series, as `outcome` (delivered, or dropped for a reason).
    pub fn settled(book: &TenantBook, events: &[Event], outcome: Option<Reason>) -> Ledger {
        let mut l = Ledger::default();
        for g in group(events) {
            let r = l.row(&book.series(&g.tenant));
            match outcome {
                None => {
                    r.delivered_events += g.events;
                    r.delivered_bytes += g.bytes;
                }
                Some(reason) => r.dropped[reason as usize] += g.events,
            }
        }
        l
    }

    /// Count every delivered event as re-sent too (a record delivered again
    /// after a restart, see `buffer/disk/accounts.rs`).
    pub fn resent(mut self) -> Ledger {
        for (_, r) in &mut self.rows {
            r.resent_events = r.delivered_events;
        }
        self
    }

    /// Add every row to `book`.
    pub fn apply(&self, book: &TenantBook) {
        for (n, r) in &self.rows {
            book.apply(n, r);
        }
    }
}

/// The sink whose disk buffer keeps the per-tenant accounts: the tenant
/// routes' events (through any routes after them) reach this one sink and no
/// other, and it has a disk buffer. `None` otherwise (the counts then start
/// from zero at each start).
pub fn keeping_sink(
    routes: &[crate::route::RouteConfig],
    sinks: &[crate::config::SinkConfig],
) -> Option<usize> {
    let feeds = |input: &str, producer: &str| {
        input == producer
            || input
                .strip_prefix(producer)
                .is_some_and(|rest| rest.starts_with('.'))
    };
    let mut todo: Vec<&str> = routes
        .iter()
        .filter(|r| matches!(r.kind, crate::route::RouteKind::Tenant(_)))
        .map(|r| r.name.as_str())
        .collect();
    if todo.is_empty() {
        return None;
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut reached: Vec<usize> = Vec::new();
    while let Some(p) = todo.pop() {
        if seen.contains(&p) {
            continue;
        }
        seen.push(p);
        for (i, s) in sinks.iter().enumerate() {
            if s.inputs.iter().any(|x| feeds(x, p)) && !reached.contains(&i) {
                reached.push(i);
            }
        }
        for r in routes {
            if r.inputs.iter().any(|x| feeds(x, p)) {
                todo.push(&r.name);
            }
        }
    }
    match reached[..] {
        [i] if sinks[i].buffer.kind == crate::config::BufferKind::Disk => Some(i),
        _ => None,
    }
}
