//! Per-partition acknowledgement tracker: which offset may be committed.
//!
//! Batches of one partition are registered in the order they are sent, each as
//! the range `first..=last` of offsets it carries (ranges ascend; gaps between
//! them, from compaction or transaction markers, are fine). Acknowledgements may
//! resolve in any order. The commit point is `last + 1` of the longest prefix of
//! registered batches that all resolved `Delivered` or `Dropped` (a drop by policy
//! is counted by the sink and is not re-read). An `Errored` batch stops the
//! commit point before it for good: [`Tracker::failed`] tells the owner where to
//! seek back to, and [`Tracker::rewind`] forgets everything from there on (their
//! acknowledgements, still arriving, are ignored by generation).
//!
//! Invariant: the commit point never passes an offset whose batch has not
//! resolved successfully, and never moves backwards.

use std::collections::BTreeMap;

use crate::ack::AckStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Done,
    Failed,
}

/// The tracker of one partition.
#[derive(Debug, Default)]
pub struct Tracker {
    /// first offset → (last offset, state), in send order.
    batches: BTreeMap<i64, (i64, State)>,
    /// Next offset to commit (`None` before the first resolved batch).
    commit: Option<i64>,
    /// Bumped by every rewind: acknowledgements of an older generation are ignored.
    generation: u64,
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Tracker::default()
    }

    /// The generation acknowledgements must carry to count.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A batch carrying `first..=last` was sent.
    pub fn register(&mut self, first: i64, last: i64) {
        self.batches.insert(first, (last, State::Pending));
    }

    /// The batch starting at `first` (of `generation`) resolved with `status`.
    pub fn resolve(&mut self, generation: u64, first: i64, status: AckStatus) {
        if generation != self.generation {
            return;
        }
        let Some(entry) = self.batches.get_mut(&first) else {
            return;
        };
        entry.1 = match status {
            AckStatus::Delivered | AckStatus::Dropped => State::Done,
            AckStatus::Errored => State::Failed,
        };
        while let Some(e) = self.batches.first_entry() {
            if e.get().1 != State::Done {
                break;
            }
            let (last, _) = e.remove();
            self.commit = Some(last + 1);
        }
    }

    /// Next offset to commit, once something resolved.
    pub fn commit_point(&self) -> Option<i64> {
        self.commit
    }

    /// The first offset of the oldest batch that failed, if the oldest unresolved
    /// batch failed (the owner seeks back there).
    pub fn failed(&self) -> Option<i64> {
        self.batches
            .iter()
            .find(|(_, (_, s))| *s != State::Done)
            .and_then(|(first, (_, s))| (*s == State::Failed).then_some(*first))
    }

    /// Batches still waiting for their acknowledgement (failed ones are not
    /// waiting: they are read again).
    pub fn in_flight(&self) -> usize {
        self.batches
            .values()
            .filter(|(_, s)| *s == State::Pending)
            .count()
    }

    /// Forget every batch from `offset` on (the owner re-reads from there).
    pub fn rewind(&mut self, offset: i64) {
        self.batches.retain(|first, _| *first < offset);
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use AckStatus::{Delivered, Dropped, Errored};

    #[test]
    fn commit_waits_for_every_earlier_batch() {
        let mut t = Tracker::new();
        t.register(0, 9);
        t.register(10, 19);
        t.register(20, 29);
        t.resolve(0, 10, Delivered);
        t.resolve(0, 20, Delivered);
        assert_eq!(t.commit_point(), None);
        t.resolve(0, 0, Delivered);
        assert_eq!(t.commit_point(), Some(30));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn gaps_between_batches_are_fine_and_drops_count_as_resolved() {
        let mut t = Tracker::new();
        t.register(5, 7);
        t.register(12, 12);
        t.resolve(0, 5, Dropped);
        assert_eq!(t.commit_point(), Some(8));
        t.resolve(0, 12, Delivered);
        assert_eq!(t.commit_point(), Some(13));
    }

    #[test]
    fn an_errored_batch_stops_the_commit_point_and_names_the_rewind_offset() {
        let mut t = Tracker::new();
        t.register(0, 9);
        t.register(10, 19);
        t.register(20, 29);
        t.resolve(0, 0, Delivered);
        t.resolve(0, 10, Errored);
        t.resolve(0, 20, Delivered);
        assert_eq!(t.commit_point(), Some(10));
        assert_eq!(t.failed(), Some(10));
        t.rewind(10);
        assert_eq!(t.failed(), None);
        assert_eq!(t.in_flight(), 0);
        // A late acknowledgement of the old generation changes nothing.
        t.resolve(0, 10, Delivered);
        t.register(10, 29);
        t.resolve(1, 10, Delivered);
        assert_eq!(t.commit_point(), Some(30));
    }

    #[test]
    fn failure_behind_a_pending_batch_is_not_reported_yet() {
        let mut t = Tracker::new();
        t.register(0, 9);
        t.register(10, 19);
        t.resolve(0, 10, Errored);
        assert_eq!(t.failed(), None);
        t.resolve(0, 0, Delivered);
        assert_eq!(t.failed(), Some(10));
    }
}
