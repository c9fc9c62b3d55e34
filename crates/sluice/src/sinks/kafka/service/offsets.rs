//! Kafka → Kafka exactly once: the consumed offsets of a kafka source that
//! feeds only this exactly-once sink, committed inside the sink's transactions.
//!
//! The source commits nothing itself (`sources::offsets_in_transaction`). Each
//! of its events carries `kafka.topic`, `kafka.partition` and `kafka.offset`;
//! every transaction sends, per consumer group, the next offset after the last
//! event of each partition it holds (`send_offsets_to_transaction`), so the
//! group's offsets move if and only if the records (and the checkpoint) commit.
//!
//! After a restart or a rebalance the source reads again from the group's
//! committed offsets, while records it had already put in the disk buffer are
//! still there, not yet in a committed transaction: both copies reach the
//! sink, the older first (the buffer hands records out in seq order, re-sends
//! before anything newer). So the sink keeps, per source partition, the next
//! offset already produced (committed, and in the open transaction) and drops
//! an event below it: the second copy. An aborted transaction rolls the open
//! offsets back to the committed ones (its batches come again); records the
//! checkpoint says are in Kafka move both.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, SourceKind};
use crate::event::Event;
use crate::sources::kafka::{FIELD_OFFSET, FIELD_PARTITION, FIELD_TOPIC};

/// A source partition: (source, topic, partition).
type Key = (Arc<str>, Arc<str>, i32);
/// (topic, partition, next offset) of the partitions a transaction moved.
pub(super) type PartitionOffsets = Vec<(String, i32, i64)>;

/// The offsets of the sources whose offsets this sink commits.
#[derive(Debug, Default)]
pub(super) struct SourceOffsets {
    /// Source name → its `group_id`.
    groups: HashMap<Arc<str>, String>,
    /// Next offset per partition in committed transactions.
    committed: HashMap<Key, i64>,
    /// The same, including the open transaction.
    open: HashMap<Key, i64>,
}

/// A source event's position.
fn position(e: &Event) -> Option<(Arc<str>, i32, i64)> {
    let topic = std::str::from_utf8(e.field(FIELD_TOPIC)?.as_bytes()?).ok()?;
    let partition = i32::try_from(e.field(FIELD_PARTITION)?.as_u64()?).ok()?;
    let offset = i64::try_from(e.field(FIELD_OFFSET)?.as_u64()?).ok()?;
    Some((topic.into(), partition, offset))
}

impl SourceOffsets {
    /// The kafka sources of `config` whose offsets sink `sink` commits.
    pub(super) fn new(config: &Config, sink: &str) -> SourceOffsets {
        let groups = config
            .sources
            .iter()
            .filter_map(|s| match &s.kind {
                SourceKind::Kafka(k)
                    if crate::sources::offsets_in_transaction(config, &s.name).as_deref()
                        == Some(sink) =>
                {
                    Some((Arc::from(s.name.as_str()), k.group_id.clone()))
                }
                _ => None,
            })
            .collect();
        SourceOffsets {
            groups,
            ..SourceOffsets::default()
        }
    }

    /// Whether any source's offsets are committed here.
    pub(super) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The key of `e` when it comes from one of those sources.
    fn key(&self, e: &Event) -> Option<(Key, i64)> {
        let (source, _) = self.groups.get_key_value(&*e.source)?;
        let (topic, partition, offset) = position(e)?;
        Some(((source.clone(), topic, partition), offset))
    }

    /// A batch about to join the open transaction: `None` when it is kept
    /// whole, else what is left once the events already produced are removed
    /// (possibly nothing). The rest moves the open offsets.
    pub(super) fn admit(&mut self, events: &[Event]) -> Option<Vec<Event>> {
        if self.is_empty() {
            return None;
        }
        let mut dropped = false;
        let mut kept = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let Some((key, offset)) = self.key(e) else {
                if dropped {
                    kept.push(e.clone());
                }
                continue;
            };
            let next = self.open.get(&key).copied().unwrap_or(i64::MIN);
            if offset < next {
                if !dropped {
                    dropped = true;
                    kept.extend(events[..i].iter().cloned());
                }
                continue;
            }
            self.open.insert(key, offset + 1);
            if dropped {
                kept.push(e.clone());
            }
        }
        dropped.then_some(kept)
    }

    /// Events the checkpoint says are in Kafka: committed, with their offsets.
    pub(super) fn settled(&mut self, events: &[Event]) {
        if self.is_empty() {
            return;
        }
        for e in events {
            if let Some((key, offset)) = self.key(e) {
                for map in [&mut self.committed, &mut self.open] {
                    let next = map.entry(key.clone()).or_insert(offset + 1);
                    *next = (*next).max(offset + 1);
                }
            }
        }
    }

    /// What the open transaction must commit: per group, (topic, partition,
    /// next offset) of the partitions it moved.
    pub(super) fn pending(&self) -> Vec<(String, PartitionOffsets)> {
        let mut by_group: HashMap<&str, PartitionOffsets> = HashMap::new();
        for (key, &next) in &self.open {
            if self.committed.get(key) == Some(&next) {
                continue;
            }
            let (source, topic, partition) = key;
            if let Some(group) = self.groups.get(source) {
                by_group
                    .entry(group)
                    .or_default()
                    .push((topic.to_string(), *partition, next));
            }
        }
        by_group
            .into_iter()
            .map(|(g, v)| (g.to_owned(), v))
            .collect()
    }

    /// The open transaction committed.
    pub(super) fn committed(&mut self) {
        self.committed.clone_from(&self.open);
    }

    /// The open transaction aborted (or its outcome is unknown: the checkpoint
    /// read again decides what is re-sent, and `settled` moves these again).
    pub(super) fn aborted(&mut self) {
        self.open.clone_from(&self.committed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Value;

    fn ev(source: &str, partition: i32, offset: i64) -> Event {
        let mut e = Event::new(
            bytes::Bytes::from(format!("{offset}")),
            0,
            "t".into(),
            source.into(),
        );
        e.fields = Some(
            Arc::new(vec![
                (FIELD_TOPIC.into(), Value::from("in")),
                (FIELD_PARTITION.into(), Value::from(partition)),
                (FIELD_OFFSET.into(), Value::from(offset)),
            ])
            .into(),
        );
        e
    }

    fn offsets() -> SourceOffsets {
        SourceOffsets {
            groups: HashMap::from([(Arc::from("ks"), "g".to_owned())]),
            ..SourceOffsets::default()
        }
    }

    #[test]
    fn a_second_copy_is_dropped_and_offsets_commit_with_the_transaction() {
        let mut o = offsets();
        let first: Vec<Event> = (10..15).map(|i| ev("ks", 0, i)).collect();
        assert!(o.admit(&first).is_none(), "kept whole");
        assert_eq!(o.pending(), vec![("g".into(), vec![("in".into(), 0, 15)])]);
        // Re-read from offset 12 after a restart: 12..15 dropped, 15.. kept.
        let again: Vec<Event> = (12..18).map(|i| ev("ks", 0, i)).collect();
        let kept = o.admit(&again).expect("filtered");
        assert_eq!(kept.len(), 3);
        assert_eq!(&kept[0].body[..], b"15");
        o.committed();
        assert!(o.pending().is_empty());
        // An aborted transaction rolls back: its events pass again.
        let more: Vec<Event> = (18..20).map(|i| ev("ks", 0, i)).collect();
        assert!(o.admit(&more).is_none());
        o.aborted();
        assert!(o.admit(&more).is_none(), "re-sent after the abort");
        // Other sources' events and other partitions pass untouched.
        let other = vec![ev("other", 0, 1), ev("ks", 1, 0)];
        assert!(o.admit(&other).is_none());
    }

    #[test]
    fn events_settled_by_the_checkpoint_move_both_offsets() {
        let mut o = offsets();
        o.settled(&[ev("ks", 0, 41)]);
        assert!(o.pending().is_empty());
        assert_eq!(o.admit(&[ev("ks", 0, 41)]).map(|v| v.len()), Some(0));
        assert!(o.admit(&[ev("ks", 0, 42)]).is_none());
    }
}
