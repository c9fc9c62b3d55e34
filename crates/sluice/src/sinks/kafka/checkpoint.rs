//! What the exactly-once Kafka sink has put into Kafka, as disk-buffer positions.
//!
//! Every transaction ends with one record in the checkpoint topic, keyed by the
//! sink's `transactional.id`, holding a [`Checkpoint`]: every disk-buffer seq
//! below `low` is settled (in Kafka, or refused and acknowledged), and so is
//! every seq in the `done` ranges above it. The record commits atomically with
//! the events, so the last committed checkpoint says exactly which buffer
//! records are in Kafka; at start the sink reads it (`read_committed`) and
//! acknowledges those records without producing them again.
//!
//! Value (text, readable with any consumer):
//! ```text
//! sluice-checkpoint 1 low=1200 done=1205-1207,1300-1300
//! ```
//! `done` ranges are inclusive and sorted; `done=` may be empty. Only seqs at
//! or above `low` are listed, so the record stays small: the buffer hands
//! records out in seq order, and out-of-order ones (re-sends, probes) are few.
//!
//! The `transactional.id` is `sluice-<sink>-<id>`, where `<id>` is random,
//! made once and kept in the buffer directory (`transactional-id`): stable
//! across restarts, so a restarted sluice fences its previous incarnation, and
//! new with a new buffer, so a fresh buffer (seqs from 0) never reads the
//! checkpoint of an older one.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

/// Settled disk-buffer seqs (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Checkpoint {
    /// Every seq below this is settled.
    pub(super) low: u64,
    /// Settled ranges above `low`: start → end (inclusive), disjoint, not adjacent.
    done: BTreeMap<u64, u64>,
}

const MAGIC: &str = "sluice-checkpoint 1";
/// Most ranges a checkpoint value may list (a bound on what decode accepts).
const MAX_RANGES: usize = 100_000;

impl Checkpoint {
    /// Whether `seq` is settled.
    pub(super) fn covers(&self, seq: u64) -> bool {
        seq < self.low
            || self
                .done
                .range(..=seq)
                .next_back()
                .is_some_and(|(_, &end)| seq <= end)
    }

    /// Mark `seq` settled.
    pub(super) fn insert(&mut self, seq: u64) {
        if !self.covers(seq) {
            self.insert_range(seq, seq);
        }
    }

    /// Mark `start..=end` settled, merging with overlapping or adjacent ranges.
    fn insert_range(&mut self, mut start: u64, mut end: u64) {
        let touching: Vec<(u64, u64)> = self
            .done
            .range(..=end.saturating_add(1))
            .rev()
            .take_while(|(_, e)| e.saturating_add(1) >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.done.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.done.insert(start, end);
        self.normalize();
    }

    /// Everything below `low` is settled now (never moves `low` back).
    pub(super) fn advance(&mut self, low: u64) {
        self.low = self.low.max(low);
        self.normalize();
    }

    /// Drop ranges under `low` and fold a range touching it into `low`.
    fn normalize(&mut self) {
        while let Some((&s, &e)) = self.done.first_key_value() {
            if s > self.low {
                break;
            }
            self.done.remove(&s);
            self.low = self.low.max(e + 1);
        }
    }

    /// Ranges listed above `low`.
    pub(super) fn ranges(&self) -> usize {
        self.done.len()
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let ranges: Vec<String> = self.done.iter().map(|(s, e)| format!("{s}-{e}")).collect();
        format!("{MAGIC} low={} done={}", self.low, ranges.join(",")).into_bytes()
    }

    pub(super) fn decode(value: &[u8]) -> Result<Checkpoint, String> {
        let text = std::str::from_utf8(value).map_err(|_| "not UTF-8".to_owned())?;
        let rest = text
            .strip_prefix(MAGIC)
            .ok_or_else(|| format!("does not start with `{MAGIC}`"))?;
        let mut words = rest.split_whitespace();
        let low = words
            .next()
            .and_then(|w| w.strip_prefix("low="))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or("no valid `low=`")?;
        let done = words
            .next()
            .and_then(|w| w.strip_prefix("done="))
            .ok_or("no `done=`")?;
        let mut c = Checkpoint {
            low,
            done: BTreeMap::new(),
        };
        for (i, r) in done.split(',').filter(|r| !r.is_empty()).enumerate() {
            if i >= MAX_RANGES {
                return Err(format!("more than {MAX_RANGES} ranges"));
            }
            let (s, e) = r
                .split_once('-')
                .and_then(|(s, e)| Some((s.parse::<u64>().ok()?, e.parse::<u64>().ok()?)))
                .filter(|(s, e)| s <= e)
                .ok_or_else(|| format!("bad range `{r}`"))?;
            c.insert_range(s, e);
        }
        Ok(c)
    }
}

/// Name of the file holding the random part of the `transactional.id`.
pub(super) const ID_FILE: &str = "transactional-id";

/// The sink's `transactional.id`: `sluice-<sink>-<id>`, the id made once and
/// kept in the buffer directory `dir`.
pub(super) fn transactional_id(dir: &Path, sink: &str) -> std::io::Result<String> {
    let path = dir.join(ID_FILE);
    let id = match std::fs::read_to_string(&path) {
        Ok(s) if is_id(s.trim()) => s.trim().to_owned(),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} does not hold a transactional id", path.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 8];
            std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
            let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = dir.join(format!("{ID_FILE}.tmp"));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(format!("{id}\n").as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
            id
        }
        Err(e) => return Err(e),
    };
    Ok(format!("sluice-{sink}-{id}"))
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_fold_into_low() {
        let mut c = Checkpoint::default();
        c.advance(10);
        for s in [12, 13, 15, 14] {
            c.insert(s);
        }
        assert!(c.covers(9) && !c.covers(10) && !c.covers(11));
        assert!(c.covers(12) && c.covers(15) && !c.covers(16));
        assert_eq!(c.ranges(), 1);
        c.insert(11);
        c.insert(10);
        assert_eq!((c.low, c.ranges()), (16, 0));
        c.advance(3);
        assert_eq!(c.low, 16, "low never moves back");
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut c = Checkpoint::default();
        c.advance(1200);
        for s in [1205, 1206, 1207, 1300, 5000, 5001] {
            c.insert(s);
        }
        let text = String::from_utf8(c.encode()).unwrap();
        assert_eq!(
            text,
            "sluice-checkpoint 1 low=1200 done=1205-1207,1300-1300,5000-5001"
        );
        assert_eq!(Checkpoint::decode(text.as_bytes()).unwrap(), c);
        let empty = Checkpoint::default();
        assert_eq!(Checkpoint::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            &b"nope"[..],
            b"sluice-checkpoint 1 low=x done=",
            b"sluice-checkpoint 1 low=1",
            b"sluice-checkpoint 1 low=1 done=5-3",
            b"sluice-checkpoint 1 low=1 done=5",
            b"\xff\xfe",
        ] {
            assert!(Checkpoint::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn transactional_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = transactional_id(dir.path(), "k").unwrap();
        let b = transactional_id(dir.path(), "k").unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("sluice-k-") && a.len() == "sluice-k-".len() + 16);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(transactional_id(other.path(), "k").unwrap(), a);
    }
}
