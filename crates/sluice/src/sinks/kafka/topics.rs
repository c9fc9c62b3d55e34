//! What the kafka sink knows about the topics it created (`create_topics`): ready,
//! or failed for good at some time. Topic templates may use client-controlled
//! parts (`{tag}`, `{field.X}`), so the table is bounded: at most
//! [`MAX_TOPICS`] names and [`MAX_NAME_BYTES`] bytes of names. When a new name
//! does not fit, the least recently used names are forgotten (counted in
//! `forgotten`). Forgetting is safe: a forgotten topic that is used again is
//! created again, which the broker answers "already exists" (ready), at the cost
//! of one admin round trip.
//!
//! Lookups, insertions and evictions are O(log n): each name carries the tick of
//! its last use, and an ordered index maps ticks back to names.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// Most topic names remembered.
pub(super) const MAX_TOPICS: usize = 10_000;
/// Most bytes of topic names remembered (names are at most 249 bytes).
pub(super) const MAX_NAME_BYTES: usize = 1 << 20;

/// What creating a topic came to.
pub(super) enum TopicStatus {
    Ready,
    /// Creation failed for good at that time, with this reason.
    Failed(Instant, String),
}

/// The bounded table of topics (see the module doc).
pub(super) struct Topics {
    map: HashMap<Arc<str>, (TopicStatus, u64)>,
    by_use: BTreeMap<u64, Arc<str>>,
    tick: u64,
    bytes: usize,
    max_topics: usize,
    max_bytes: usize,
    /// Names forgotten to make room.
    pub forgotten: u64,
}

impl Topics {
    pub(super) fn new() -> Self {
        Self::with_limits(MAX_TOPICS, MAX_NAME_BYTES)
    }

    pub(super) fn with_limits(max_topics: usize, max_bytes: usize) -> Self {
        Topics {
            map: HashMap::new(),
            by_use: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            max_topics: max_topics.max(1),
            max_bytes,
            forgotten: 0,
        }
    }

    pub(super) fn contains_key(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The status of `name`, which counts as a use.
    pub(super) fn get(&mut self, name: &str) -> Option<&TopicStatus> {
        self.tick += 1;
        let tick = self.tick;
        let (key, (_, used)) = self.map.get_key_value(name)?;
        let (key, old) = (key.clone(), *used);
        self.by_use.remove(&old);
        self.by_use.insert(tick, key);
        let entry = self.map.get_mut(name).expect("present: looked up above");
        entry.1 = tick;
        Some(&entry.0)
    }

    /// Remember `name`, forgetting the least recently used names if it does not fit.
    pub(super) fn insert(&mut self, name: String, status: TopicStatus) {
        self.remove(&name);
        while !self.map.is_empty()
            && (self.map.len() >= self.max_topics || self.bytes + name.len() > self.max_bytes)
        {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.bytes -= oldest.len();
            self.map.remove(&oldest);
            self.forgotten += 1;
        }
        self.tick += 1;
        let key: Arc<str> = name.into();
        self.bytes += key.len();
        self.by_use.insert(self.tick, key.clone());
        self.map.insert(key, (status, self.tick));
    }

    pub(super) fn remove(&mut self, name: &str) {
        if let Some((key, (_, used))) = self.map.remove_entry(name) {
            self.by_use.remove(&used);
            self.bytes -= key.len();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_forgets_the_least_recently_used_name() {
        let mut t = Topics::with_limits(3, 1 << 20);
        for name in ["a", "b", "c"] {
            t.insert(name.into(), TopicStatus::Ready);
        }
        // "a" is used again: "b" is now the oldest.
        assert!(t.get("a").is_some());
        t.insert("d".into(), TopicStatus::Ready);
        assert_eq!(t.len(), 3);
        assert!(!t.contains_key("b"));
        assert!(t.contains_key("a") && t.contains_key("c") && t.contains_key("d"));
        assert_eq!(t.forgotten, 1);
    }

    #[test]
    fn names_are_bounded_by_bytes_too() {
        let mut t = Topics::with_limits(1_000, 1_000);
        for i in 0..100 {
            t.insert(format!("{i:0>200}"), TopicStatus::Ready);
        }
        assert!(t.bytes <= 1_000, "{}", t.bytes);
        assert_eq!(t.len(), 5);
        assert_eq!(t.forgotten, 95);
        assert!(t.contains_key(&format!("{:0>200}", 99)));
    }

    #[test]
    fn client_controlled_names_stay_within_the_default_bounds() {
        let mut t = Topics::new();
        for i in 0..50_000 {
            t.insert(format!("tenant-{i}"), TopicStatus::Ready);
        }
        assert_eq!(t.len(), MAX_TOPICS);
        assert_eq!(t.by_use.len(), MAX_TOPICS);
        assert_eq!(t.forgotten, 40_000);
        let bytes: usize = t.map.keys().map(|k| k.len()).sum();
        assert_eq!(bytes, t.bytes);
    }

    #[test]
    fn removing_and_reinserting_keeps_the_counts_right() {
        let mut t = Topics::with_limits(10, 100);
        t.insert("x".into(), TopicStatus::Ready);
        t.insert("x".into(), TopicStatus::Failed(Instant::now(), "no".into()));
        assert_eq!((t.len(), t.bytes), (1, 1));
        assert!(matches!(t.get("x"), Some(TopicStatus::Failed(..))));
        t.remove("x");
        assert_eq!((t.len(), t.bytes, t.by_use.len()), (0, 0, 0));
    }
}
